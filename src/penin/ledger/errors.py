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
├── BackupError             a backup or restore that cannot go ahead
│   └── BackupRejectedError  the backup itself fails its checks
├── NotPrimaryError         an append on a replica's ledger; names the primary
└── ReplicationError        a replica refuses records or a checkpoint it was sent
    ├── DivergedError        they do not verify against this ledger
    └── FencedError          they, or a writer, carry a term older than the ledger's

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


class NotPrimaryError(LedgerError):
    """The ledger is a replica's, or its node no longer leads: only the
    primary appends to it.

    ``primary`` and ``primary_url`` name where writes go instead; both are
    None while the cluster elects one.
    """

    def __init__(
        self, path: object, primary: str | None, primary_url: str | None
    ) -> None:
        # A member of an elected cluster marks its file with empty names
        # while it knows no primary.
        self.primary = primary or None
        self.primary_url = primary_url or None
        if not primary or not primary_url:
            super().__init__(
                f"{path} is not the primary's ledger, and no primary is elected "
                "right now; retry in a second"
            )
            return
        super().__init__(
            f"{path} is the ledger of a replica of {primary}; append on the "
            f"primary, {primary} at {primary_url}"
        )


class SyncReplicationError(LedgerError):
    """Records stored on the primary that too few synchronous replicas
    confirmed in time: they are not acknowledged (``penin.ha.sync``)."""

    def __init__(
        self, seq: int, count: int, waited_for: list[str], timeout_s: float
    ) -> None:
        self.seq = seq
        who = ", ".join(waited_for) or "none is connected"
        super().__init__(
            f"record seq {seq} is stored on the primary, but not on {count} "
            f"synchronous replica(s) within {timeout_s:g} s (waited for: {who}); "
            "it is not acknowledged: retry with the same Idempotency-Key"
        )


class ReplicationError(LedgerError):
    """Records or a checkpoint from the primary that this ledger refuses.

    ``seq`` is the first record at fault, or ``tree_size`` the checkpoint at
    fault; ``field`` is what was checked, ``expected`` what this ledger holds
    or computes and ``received`` what was sent. Nothing refused is stored.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        seq: int | None = None,
        tree_size: int | None = None,
        field: str = "",
        expected: object = None,
        received: object = None,
    ) -> None:
        super().__init__(message)
        self.seq = seq
        self.tree_size = tree_size
        self.field = field
        self.expected = expected
        self.received = received


class DivergedError(ReplicationError):
    pass


class FencedError(ReplicationError):
    pass
