"""The ledger's exceptions; every one says what was wrong and what to do.

LedgerError
├── InvalidRecordError      bad event type, payload or idempotency key
├── RecordNotFoundError     a seq the log does not have
├── TreeSizeError           a tree size or proof range beyond the log
├── KeyFileError            the signing key is missing, unreadable or not ours
├── NotALedgerError         the file is not a PENIN ledger (foreign or corrupt)
├── LedgerUnavailableError  the data directory or disk refuses the write
├── CheckpointRefusedError  signing would contradict an earlier checkpoint
├── VerificationFailedError a signature or proof that does not verify
└── BackupError             a backup or restore that cannot go ahead
    └── BackupRejectedError  the backup itself fails its checks

``exit_code`` is what the CLI exits with: 2 for bad usage or input, 1 when
something was checked and found wrong.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the ledger raises."""

    exit_code = 2


class InvalidRecordError(LedgerError, ValueError):
    pass


class RecordNotFoundError(LedgerError, LookupError):
    pass


class TreeSizeError(LedgerError, ValueError):
    pass


class KeyFileError(LedgerError):
    pass


class NotALedgerError(LedgerError):
    pass


class LedgerUnavailableError(LedgerError):
    pass


class CheckpointRefusedError(LedgerError):
    pass


class BackupError(LedgerError):
    pass


class BackupRejectedError(BackupError):
    exit_code = 1


class VerificationFailedError(LedgerError):
    exit_code = 1
