"""``penin ledger …``: the round trip a user makes, exit codes, and bad input."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import (
    ORIGIN,
    append_n,
    assert_intact,
    assert_refused,
    invoke,
    penin,
    raw_connect,
    remount,
)
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import MAX_PAYLOAD_BYTES

RECORD_KEYS = [
    "seq", "ts", "event_type", "payload", "term", "prev_hash", "idempotency_key",
    "leaf_hash",
]  # fmt: skip


def _count(data_dir: Path) -> int:
    with WORMLedger(data_dir / "ledger.db") as led:
        return led.count_records()


@dataclass
class Proven:
    """Files a third party gets: a record, its proof and a signed checkpoint."""

    record: Path
    proof: Path
    checkpoint: Path
    vkey: str

    def verify(self, *extra: object) -> int:
        result = invoke(
            "verify-proof",
            "--proof", self.proof,
            "--record", self.record,
            "--checkpoint", self.checkpoint,
            "--vkey", self.vkey,
            *extra,
        )  # fmt: skip
        assert "Traceback" not in result.output
        return result.exit_code


@pytest.fixture
def proven(data_dir: Path, tmp_path: Path) -> Proven:
    files = Proven(
        tmp_path / "record.json",
        tmp_path / "proof.json",
        tmp_path / "checkpoint.txt",
        invoke("vkey", "--data-dir", data_dir).stdout.strip(),
    )
    files.checkpoint.write_text(invoke("checkpoint", "--data-dir", data_dir).stdout)
    files.record.write_text(
        invoke("get", "--data-dir", data_dir, "--seq", 1, "--json").stdout
    )
    files.proof.write_text(
        invoke("prove", "--data-dir", data_dir, "--seq", 1, "--json").stdout
    )

    return files


def _edit_json(path: Path, change: Callable[[dict[str, object]], None]) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


# -- the round trip ---------------------------------------------------------------


def test_round_trip_init_append_get_prove_verify(tmp_path: Path) -> None:
    data = tmp_path / "data"

    init = penin("init", "--data-dir", data, "--origin", ORIGIN)
    appended = [
        penin("append", "--data-dir", data, "--type", "demo.run", "--payload",
              json.dumps({"i": i, "who": "ünïcode"}), "--json")
        for i in range(3)
    ]  # fmt: skip
    got = penin("get", "--data-dir", data, "--seq", 2, "--json")
    checkpoint = penin("checkpoint", "--data-dir", data)
    vkey = penin("vkey", "--data-dir", data).stdout.strip()
    proof = penin("prove", "--data-dir", data, "--seq", 2, "--json")
    (tmp_path / "record.json").write_text(got.stdout)
    (tmp_path / "proof.json").write_text(proof.stdout)
    (tmp_path / "checkpoint.txt").write_text(checkpoint.stdout)
    verified = penin(
        "verify-proof", "--proof", tmp_path / "proof.json", "--record",
        tmp_path / "record.json", "--checkpoint", tmp_path / "checkpoint.txt",
        "--vkey", vkey,
    )  # fmt: skip

    assert init.returncode == 0, init.stderr
    assert f"vkey:   {vkey}" in init.stdout
    assert [json.loads(a.stdout)["seq"] for a in appended] == [0, 1, 2]
    assert json.loads(got.stdout) == json.loads(appended[2].stdout)
    assert list(json.loads(got.stdout)) == RECORD_KEYS
    assert json.loads(proof.stdout)["tree_size"] == 3
    assert checkpoint.stdout.startswith(f"{ORIGIN}\n3\n")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == "ok: proof verifies"


def test_get_json_prints_exactly_the_record(data_dir: Path) -> None:
    result = invoke("get", "--data-dir", data_dir, "--seq", 2, "--json")

    with WORMLedger(data_dir / "ledger.db") as led:
        expected = led.get(2).to_dict()

    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1
    assert json.loads(result.stdout) == expected
    assert list(json.loads(result.stdout)) == RECORD_KEYS


def test_prove_json_prints_index_size_and_hashes(data_dir: Path) -> None:
    result = invoke("prove", "--data-dir", data_dir, "--seq", 0, "--json")

    proof = json.loads(result.stdout)

    assert result.exit_code == 0
    assert list(proof) == ["leaf_index", "tree_size", "hashes"]
    assert (proof["leaf_index"], proof["tree_size"]) == (0, 3)
    assert len(proof["hashes"]) == 2


def test_prove_at_an_older_tree_size(data_dir: Path) -> None:
    result = invoke(
        "prove", "--data-dir", data_dir, "--seq", 0, "--tree-size", 1, "--json"
    )

    assert json.loads(result.stdout) == {"leaf_index": 0, "tree_size": 1, "hashes": []}


def test_the_proof_verifies_against_the_signed_checkpoint(proven: Proven) -> None:
    assert proven.verify() == 0


def test_the_proof_verifies_against_a_bare_root_and_leaf_hash(
    proven: Proven, data_dir: Path
) -> None:
    leaf = json.loads(proven.record.read_text())["leaf_hash"]
    with WORMLedger(data_dir / "ledger.db") as led:
        root = led.root().hex()

    result = invoke(
        "verify-proof", "--proof", proven.proof, "--leaf-hash", leaf, "--root", root
    )

    assert result.exit_code == 0, result.stderr


def test_an_altered_record_fails_the_proof(proven: Proven) -> None:
    _edit_json(proven.record, lambda r: r.update(payload={"n": 2}))

    assert proven.verify() == 1


def test_an_altered_record_without_its_leaf_hash_fails_the_proof(
    proven: Proven,
) -> None:
    def alter(record: dict[str, object]) -> None:
        del record["leaf_hash"]
        record["ts"] = "2000-01-01T00:00:00.000000Z"

    _edit_json(proven.record, alter)

    assert proven.verify() == 1


def test_an_altered_proof_hash_fails(proven: Proven) -> None:
    def alter(proof: dict[str, list[str]]) -> None:
        first = proof["hashes"][0]
        proof["hashes"][0] = ("1" if first[0] == "0" else "0") + first[1:]

    _edit_json(proven.proof, alter)  # type: ignore[arg-type]

    assert proven.verify() == 1


def test_a_proof_for_another_index_fails(proven: Proven) -> None:
    _edit_json(proven.proof, lambda p: p.update(leaf_index=0))

    assert proven.verify() == 1


def test_a_proof_against_a_checkpoint_of_another_size_fails(
    proven: Proven, data_dir: Path
) -> None:
    with WORMLedger(data_dir / "ledger.db") as led:
        append_n(led, 1)
    proven.checkpoint.write_text(invoke("checkpoint", "--data-dir", data_dir).stdout)

    assert proven.verify() == 1


def test_a_checkpoint_under_another_key_is_refused_in_one_line(
    proven: Proven, tmp_path: Path
) -> None:
    with WORMLedger(tmp_path / "other.db").initialize(ORIGIN) as other:
        proven.vkey = other.verifier.vkey

    result = invoke(
        "verify-proof", "--proof", proven.proof, "--record", proven.record,
        "--checkpoint", proven.checkpoint, "--vkey", proven.vkey,
    )  # fmt: skip

    assert_refused(result, 1, "checkpoint does not verify")


def test_consistency_proof_verifies_with_old_root(
    data_dir: Path, tmp_path: Path
) -> None:
    with WORMLedger(data_dir / "ledger.db") as led:
        old_root = led.root(2).hex()
        new_root = led.root(3).hex()
    proof = invoke("prove-consistency", "--data-dir", data_dir, "--from", 2, "--to", 3,
                   "--json")  # fmt: skip
    (tmp_path / "consistency.json").write_text(proof.stdout)

    good = invoke("verify-proof", "--proof", tmp_path / "consistency.json",
                  "--old-root", old_root, "--root", new_root)  # fmt: skip
    bad = invoke("verify-proof", "--proof", tmp_path / "consistency.json",
                 "--old-root", new_root, "--root", new_root)  # fmt: skip

    assert json.loads(proof.stdout)["old_size"] == 2
    assert good.exit_code == 0, good.stderr
    assert bad.exit_code == 1
    assert bad.stdout.strip() == "FAILED: proof does not verify"


def test_consistency_proof_verifies_against_a_signed_checkpoint(
    data_dir: Path, tmp_path: Path
) -> None:
    with WORMLedger(data_dir / "ledger.db") as led:
        old_root = led.root(1).hex()
    (tmp_path / "cp.txt").write_text(
        invoke("checkpoint", "--data-dir", data_dir).stdout
    )
    (tmp_path / "p.json").write_text(
        invoke("prove-consistency", "--data-dir", data_dir, "--from", 1, "--to", 3,
               "--json").stdout
    )  # fmt: skip
    vkey = invoke("vkey", "--data-dir", data_dir).stdout.strip()

    result = invoke(
        "verify-proof", "--proof", tmp_path / "p.json", "--old-root", old_root,
        "--checkpoint", tmp_path / "cp.txt", "--vkey", vkey,
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr


# -- reading --------------------------------------------------------------------


def test_export_prints_one_record_object_a_line(data_dir: Path) -> None:
    with WORMLedger(data_dir / "ledger.db") as led:
        expected = [r.to_dict() for r in led.query()]

    result = penin("export", "--data-dir", data_dir)

    lines = result.stdout.splitlines()

    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in lines] == expected
    assert len(lines) == 3


def test_export_after_a_seq_continues_from_there(data_dir: Path) -> None:
    result = invoke("export", "--data-dir", data_dir, "--after-seq", 0)

    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2]


def test_count_and_tail(data_dir: Path) -> None:
    count = invoke("count", "--data-dir", data_dir, "--json")
    tail = invoke("tail", "--data-dir", data_dir, "-n", 2, "--json")

    assert json.loads(count.stdout) == {"tree_size": 3}
    assert [json.loads(x)["seq"] for x in tail.stdout.splitlines()] == [1, 2]


def test_the_data_dir_can_come_from_the_environment(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data_dir)
    monkeypatch.setenv("PENIN_DATA_DIR", str(data_dir))

    result = invoke("count")

    assert result.stdout.strip() == "3"


def test_a_reused_idempotency_key_appends_once(data_dir: Path) -> None:
    common = ("--data-dir", data_dir, "--type", "test.event")
    first = invoke("append", *common, "--payload", "{}",
                   "--idempotency-key", "k1", "--json")  # fmt: skip
    second = invoke("append", *common, "--payload", '{"x":1}',
                    "--idempotency-key", "k1", "--json")  # fmt: skip

    assert second.exit_code == 0
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert _count(data_dir) == 4


# -- verify ---------------------------------------------------------------------


def test_verify_of_a_clean_ledger_exits_0(data_dir: Path) -> None:
    result = penin("verify", "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: 3 records, 0 checkpoints verified"


def test_verify_of_a_tampered_ledger_exits_1_naming_the_seq(data_dir: Path) -> None:
    conn = raw_connect(data_dir / "ledger.db")
    conn.execute("DROP TRIGGER records_no_update")
    conn.execute("UPDATE records SET payload = '{\"n\":9}' WHERE seq = 1")
    conn.close()

    result = invoke("verify", "--data-dir", data_dir)
    report = invoke("verify", "--data-dir", data_dir, "--json")

    assert result.exit_code == 1
    assert result.stdout.startswith("FAILED at seq 1: leaf hash does not match")
    assert json.loads(report.stdout)["first_bad_seq"] == 1
    assert report.exit_code == 1


def test_verify_without_a_key_file_warns_on_stderr(data_dir: Path) -> None:
    (data_dir / "ledger.key").unlink()

    result = invoke("verify", "--data-dir", data_dir)

    assert result.exit_code == 0
    assert result.stderr.startswith("warning: checked against the verifier key")


def test_verify_against_another_ledgers_vkey_exits_1(
    data_dir: Path, tmp_path: Path
) -> None:
    with WORMLedger(tmp_path / "other.db").initialize(ORIGIN) as other:
        vkey = other.verifier.vkey

    result = invoke("verify", "--data-dir", data_dir, "--vkey", vkey)

    assert result.exit_code == 1
    assert "not the trusted" in result.stdout


# -- bad input: exit 2, one line, nothing written ----------------------------------


def _append(data_dir: Path, payload: str, event_type: str = "test.event") -> object:
    return invoke(
        "append", "--data-dir", data_dir, "--type", event_type, "--payload", payload
    )


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("[1, 2]", "must be a JSON object, not list"),
        ('"text"', "must be a JSON object, not str"),
        ("{not json", "not valid JSON"),
        ('{"x": NaN}', "NaN"),
        ('{"x": Infinity}', "Infinity"),
        ('{"x": 9007199254740992}', "9007199254740992"),
    ],
)
def test_a_bad_payload_is_refused_and_nothing_is_written(
    data_dir: Path, payload: str, problem: str
) -> None:
    result = _append(data_dir, payload)

    assert_refused(result, 2, problem)
    assert_intact(data_dir / "ledger.db", 3)


def test_a_payload_over_the_size_limit_is_refused(data_dir: Path) -> None:
    # Given in-process: the OS refuses an argument this long before we see it.
    payload = json.dumps({"x": "a" * MAX_PAYLOAD_BYTES})

    result = _append(data_dir, payload)

    assert_refused(result, 2, f"limit of {MAX_PAYLOAD_BYTES} bytes")
    assert_intact(data_dir / "ledger.db", 3)


@pytest.mark.parametrize("event_type", ["Bad.Type", "nodots", "a..b", "ü.x"])
def test_a_bad_event_type_is_refused_and_nothing_is_written(
    data_dir: Path, event_type: str
) -> None:
    result = _append(data_dir, "{}", event_type)

    assert_refused(result, 2, "is not a dotted lowercase name")
    assert_intact(data_dir / "ledger.db", 3)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("get", "--seq", 3), "no record with seq 3"),
        (("get", "--seq", -1), "no record with seq -1"),
        (("get", "--seq", 2**70), "no record with seq"),
        (("prove", "--seq", 0, "--tree-size", 4), "tree size 4 is beyond the log"),
        (("prove", "--seq", 3), "seq 3 is not in a tree of size 3"),
        (("prove-consistency", "--from", 3, "--to", 2), "smaller size 2"),
        (("prove-consistency", "--from", 1, "--to", 9), "tree size 9 is beyond"),
    ],
    ids=["seq", "negative-seq", "huge-seq", "tree-size", "seq-in-size",
         "consistency-order", "consistency-size"],
)  # fmt: skip
def test_reads_beyond_the_log_are_refused_in_one_line(
    data_dir: Path, args: tuple[object, ...], problem: str
) -> None:
    result = invoke(args[0], "--data-dir", data_dir, *args[1:])

    assert_refused(result, 2, problem)


@pytest.mark.parametrize("after_seq", [2, 3, 2**70])
def test_export_after_the_last_seq_prints_nothing(
    data_dir: Path, after_seq: int
) -> None:
    # A follower polls with the last seq it holds; being up to date is no error.
    result = invoke("export", "--data-dir", data_dir, "--after-seq", after_seq)

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""


def test_checkpoint_without_its_key_file_names_the_file(data_dir: Path) -> None:
    (data_dir / "ledger.key").unlink()

    result = penin("checkpoint", "--data-dir", data_dir)

    assert_refused(result, 2, "ledger.key is missing")
    assert_intact(data_dir / "ledger.db", 3)


def test_checkpoint_with_another_ledgers_key_is_refused(
    data_dir: Path, tmp_path: Path
) -> None:
    with WORMLedger(tmp_path / "other.db").initialize(ORIGIN) as other:
        (data_dir / "ledger.key").write_text(other.key_path.read_text())

    result = invoke("checkpoint", "--data-dir", data_dir)

    assert_refused(result, 2, "use the ledger's own key")
    with WORMLedger(data_dir / "ledger.db") as led:
        assert led.latest_checkpoint() is None


def test_a_missing_ledger_says_to_run_init(tmp_path: Path) -> None:
    result = invoke("count", "--data-dir", tmp_path / "nowhere")

    assert_refused(result, 2, "run 'penin ledger init' first")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("command", ["count", "verify", "append"])
def test_a_corrupted_file_is_refused_as_not_a_ledger(
    tmp_path: Path, command: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    garbage = bytes(range(256)) * 64
    (data / "ledger.db").write_bytes(garbage)
    extra = ("--type", "test.event", "--payload", "{}") if command == "append" else ()

    result = invoke(command, "--data-dir", data, *extra)

    assert_refused(result, 2, "is not a PENIN ledger")
    assert (data / "ledger.db").read_bytes() == garbage


@pytest.mark.parametrize("command", ["count", "verify", "append"])
def test_a_foreign_sqlite_file_is_refused_as_not_a_ledger(
    tmp_path: Path, command: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = raw_connect(data / "ledger.db")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    extra = ("--type", "test.event", "--payload", "{}") if command == "append" else ()

    result = penin(command, "--data-dir", data, *extra)

    assert_refused(result, 2, "is not a PENIN ledger")


@pytest.mark.parametrize(
    ("proof", "problem"),
    [
        ('{"leaf_index": 1, "tree_size": 3}', "no 'hashes' list"),
        ('{"leaf_index": 1, "tree_size": 3, "hashes": ["zz"]}', "64 hex digits"),
        ('{"leaf_index": "one", "tree_size": 3, "hashes": []}', "leaf_index"),
        ("not json", "proof"),
    ],
)
def test_a_malformed_proof_file_is_refused_in_one_line(
    proven: Proven, proof: str, problem: str
) -> None:
    proven.proof.write_text(proof)

    result = invoke(
        "verify-proof", "--proof", proven.proof, "--record", proven.record,
        "--checkpoint", proven.checkpoint, "--vkey", proven.vkey,
    )  # fmt: skip

    assert_refused(result, 2, problem)


def test_a_record_file_json_cannot_hold_is_refused_in_one_line(
    proven: Proven,
) -> None:
    proven.record.write_text('{"seq": 1, "payload": {"x": NaN}}')

    result = invoke(
        "verify-proof", "--proof", proven.proof, "--record", proven.record,
        "--checkpoint", proven.checkpoint, "--vkey", proven.vkey,
    )  # fmt: skip

    assert_refused(result, 2, "NaN")


def test_a_float_no_reader_could_recanonicalise_is_refused_in_one_line(
    data_dir: Path,
) -> None:
    result = invoke("append", "--data-dir", data_dir, "--type", "test.event",
                    "--payload", '{"x": 1e16}', "--json")  # fmt: skip

    assert_refused(result, 2, "payload", "safe integer")
    assert_intact(data_dir / "ledger.db", 3)


def test_verify_proof_needs_a_root_or_a_checkpoint(proven: Proven) -> None:
    result = invoke("verify-proof", "--proof", proven.proof, "--record", proven.record)

    assert result.exit_code == 2
    assert "give --root, or --checkpoint with --vkey" in result.stderr


def test_a_non_ascii_vkey_is_refused_in_one_line(data_dir: Path) -> None:
    result = invoke("verify", "--data-dir", data_dir, "--vkey", "a+00000000+é")

    assert_refused(result, 2, "--vkey")


# -- hostile file systems ---------------------------------------------------------


def _ledger_on(directory: Path) -> Path:
    data = directory / "data"
    data.mkdir()
    with WORMLedger(data / "ledger.db").initialize(ORIGIN) as led:
        append_n(led, 3)

    return data


def _fill(directory: Path) -> Path:
    """Write a file until the file system refuses another byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)

    return filler


def test_append_to_a_read_only_data_dir_is_refused_and_writes_nothing(
    tmpfs: Callable[[str], Path],
) -> None:
    mount = tmpfs("4m")
    data = _ledger_on(mount)
    remount(mount, "ro")

    result = penin("append", "--data-dir", data, "--type", "test.event",
                   "--payload", "{}")  # fmt: skip

    assert_refused(result, 2, str(data / "ledger.db"), "writable")
    remount(mount, "rw")
    assert_intact(data / "ledger.db", 3)


def test_init_in_a_read_only_directory_is_refused(tmpfs: Callable[[str], Path]) -> None:
    mount = tmpfs("1m")
    remount(mount, "ro")

    result = penin("init", "--data-dir", mount / "data")

    assert_refused(result, 2, "read-only file system")


def test_append_to_a_full_disk_is_refused_and_writes_nothing(
    tmpfs: Callable[[str], Path],
) -> None:
    mount = tmpfs("2m")
    data = _ledger_on(mount)
    filler = _fill(mount)

    result = penin("append", "--data-dir", data, "--type", "test.event",
                   "--payload", json.dumps({"x": "y" * 4000}))  # fmt: skip

    assert_refused(result, 2, str(data / "ledger.db"), "free space")
    filler.unlink()
    assert_intact(data / "ledger.db", 3)
