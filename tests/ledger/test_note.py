"""C2SP signed notes: the published example, our checkpoints, and tampering."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ORIGIN, append_n, penin
from penin.ledger.ledger import WORMLedger
from penin.ledger.note import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    open_checkpoint,
    open_note,
)

# The example of the C2SP signed-note specification.
EXAMPLE_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
EXAMPLE_NOTE = (
    "This is an example message.\n"
    "\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYN"
    "ZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def _single_bit_flips(note: str) -> list[tuple[int, int, str]]:
    """Every note that differs from ``note`` in one bit of its UTF-8 bytes."""
    data = note.encode()
    flips = []
    for at in range(len(data)):
        for bit in range(8):
            altered = bytearray(data)
            altered[at] ^= 1 << bit
            flips.append((at, bit, altered.decode("utf-8", errors="replace")))

    return flips


def _flips_not_refused(note: str, verifier: Verifier) -> list[tuple[int, int, str]]:
    """Flips that open anyway, or fail with something other than NoteError."""
    slipped = []
    for at, bit, altered in _single_bit_flips(note):
        try:
            open_note(altered, verifier)
        except NoteError:
            continue
        except Exception as exc:
            slipped.append((at, bit, type(exc).__name__))
        else:
            slipped.append((at, bit, "opened"))

    return slipped


# -- the published example ----------------------------------------------------


def test_the_specification_example_key_parses() -> None:
    verifier = Verifier.from_vkey(EXAMPLE_VKEY)

    assert verifier.name == "example.com/foo"
    assert verifier.key_id.hex() == "530d903a"
    assert verifier.vkey == EXAMPLE_VKEY


def test_the_specification_example_note_verifies() -> None:
    verifier = Verifier.from_vkey(EXAMPLE_VKEY)

    assert open_note(EXAMPLE_NOTE, verifier) == "This is an example message.\n"


def test_the_specification_example_altered_in_any_bit_is_refused() -> None:
    verifier = Verifier.from_vkey(EXAMPLE_VKEY)

    assert _flips_not_refused(EXAMPLE_NOTE, verifier) == []


# -- our checkpoints ----------------------------------------------------------


@pytest.fixture
def note(ledger: WORMLedger) -> str:
    append_n(ledger, 5)
    return ledger.checkpoint()


def test_checkpoint_note_names_origin_size_and_root(
    ledger: WORMLedger, note: str
) -> None:
    checkpoint = open_checkpoint(note, ledger.verifier)
    body, signature = note.split("\n\n")

    assert checkpoint == Checkpoint(ORIGIN, 5, ledger.root(5))
    assert body == f"{ORIGIN}\n5\n{base64.b64encode(ledger.root(5)).decode()}"
    assert signature.startswith(f"— {ORIGIN} ")
    assert note.endswith("\n")


def test_checkpoint_note_altered_in_any_bit_is_refused(
    ledger: WORMLedger, note: str
) -> None:
    assert _flips_not_refused(note, ledger.verifier) == []


@pytest.mark.parametrize(
    "ending",
    ["", "\v", "\f", "\x1c", "\u2028", "\nforged trailer\n"],
    ids=["no-final-newline", "vt", "ff", "fs", "line-separator", "trailing-line"],
)
def test_a_note_must_end_in_exactly_one_newline_after_its_signatures(
    ledger: WORMLedger, note: str, ending: str
) -> None:
    altered = note[:-1] + ending

    with pytest.raises(NoteError):
        open_note(altered, ledger.verifier)


def test_a_non_ascii_character_in_a_signature_is_refused_as_a_bad_note(
    ledger: WORMLedger, note: str
) -> None:
    altered = note.replace(f"— {ORIGIN} ", f"— {ORIGIN} é")

    with pytest.raises(NoteError):
        open_note(altered, ledger.verifier)


def test_a_non_ascii_verifier_key_is_refused_as_a_bad_key() -> None:
    with pytest.raises(NoteError):
        Verifier.from_vkey(EXAMPLE_VKEY[:-1] + "é")


def test_a_checkpoint_signed_by_another_key_is_refused(ledger: WORMLedger) -> None:
    append_n(ledger, 2)
    impostor = Signer.generate(ORIGIN)
    forged = impostor.sign_note(Checkpoint(ORIGIN, 2, ledger.root(2)).body())

    with pytest.raises(NoteError, match="not signed by"):
        open_checkpoint(forged, ledger.verifier)


def test_another_signature_under_our_key_id_is_refused(
    ledger: WORMLedger, note: str
) -> None:
    body = note.split("\n\n", maxsplit=1)[0] + "\n"
    impostor = Signer.generate(ORIGIN)
    their = base64.b64decode(impostor.sign_note(body).split(" ")[-1])
    ours = base64.b64decode(note.rsplit(" ", maxsplit=1)[-1])
    spliced = base64.b64encode(ours[:4] + their[4:]).decode()
    forged = f"{body}\n— {ORIGIN} {spliced}\n"

    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, ledger.verifier)


# -- keys ---------------------------------------------------------------------


def test_key_file_is_created_readable_by_its_owner_only(ledger: WORMLedger) -> None:
    mode = stat.S_IMODE(ledger.key_path.stat().st_mode)

    assert mode == 0o600


def test_cli_init_creates_the_key_file_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_umask = os.umask(0)
    try:
        result = penin("init", "--data-dir", data, "--origin", ORIGIN)
    finally:
        os.umask(old_umask)

    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((data / "ledger.key").stat().st_mode) == 0o600


def test_key_file_holds_the_key_the_ledger_names(ledger: WORMLedger) -> None:
    signer = Signer.from_skey(ledger.key_path.read_text())

    assert signer.verifier == ledger.verifier
    assert ledger.meta["vkey"] == signer.verifier.vkey


names = st.from_regex(r"[a-z0-9./_-]{1,40}", fullmatch=True)


@settings(max_examples=50, deadline=None)
@given(names)
def test_keys_survive_their_text_forms(name: str) -> None:
    signer = Signer.generate(name)

    assert Signer.from_skey(signer.to_skey()) == signer
    assert Verifier.from_vkey(signer.verifier.vkey) == signer.verifier


@pytest.mark.parametrize(
    ("vkey", "problem"),
    [
        (EXAMPLE_VKEY.replace("530d903a", "530d903b"), "does not match"),
        (EXAMPLE_VKEY[:-4] + "!!!!", "not valid base64"),
        ("example.com/foo+530d903a+" + base64.b64encode(b"\x02" + bytes(32)).decode(),
         "not an Ed25519 key"),
        ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "key name"),
    ],
)  # fmt: skip
def test_malformed_verifier_keys_are_refused(vkey: str, problem: str) -> None:
    with pytest.raises(NoteError, match=problem):
        Verifier.from_vkey(vkey)


@pytest.mark.parametrize(
    "text",
    ["", "PRIVATE+KEY+name", EXAMPLE_VKEY, "PRIVATE+KEY+a+00000000+AAAA"],
)
def test_malformed_signer_keys_are_refused(text: str) -> None:
    with pytest.raises(NoteError):
        Signer.from_skey(text)


@pytest.mark.parametrize(
    "body",
    [
        "origin\n",
        "origin\nten\nAAAA\n",
        "origin\n1\nnot-base64!\n",
        "origin\n1\nAAAA\n",
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(body)
