"""Seals of cached values: what opens, what does not, and how keys rotate."""

from __future__ import annotations

import pytest
from sealing import b64key, seal_keys

from penin.cache import CacheConfigError, SealKeys

KEY = "a" * 64
VALUE = b'{"choices": []}'


def test_a_sealed_value_opens_under_its_cache_key() -> None:
    seal = seal_keys(("k1", 1))

    assert seal.open(KEY, seal.seal(KEY, VALUE)) == VALUE
    assert seal.open(KEY, seal.seal(KEY, b"")) == b""


def test_the_layout_is_version_key_id_mac_value() -> None:
    sealed = seal_keys(("kid-7", 1)).seal(KEY, VALUE)

    assert sealed[0] == 1
    assert sealed[1] == len(b"kid-7")
    assert sealed[2:7] == b"kid-7"
    assert sealed[7 + 32 :] == VALUE


def test_a_value_moved_to_another_cache_key_does_not_open() -> None:
    seal = seal_keys(("k1", 1))
    sealed = seal.seal(KEY, VALUE)

    assert seal.open("b" * 64, sealed) is None
    assert seal.verify("b" * 64, sealed).reason == "bad_mac"


def test_flipping_any_byte_after_the_header_breaks_the_seal() -> None:
    seal = seal_keys(("k1", 1))
    sealed = seal.seal(KEY, VALUE)

    for position in range(4, len(sealed)):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        assert seal.open(KEY, bytes(tampered)) is None, position


@pytest.mark.parametrize(
    "blob", [b"", b"\x01", b"\x01\x00" + b"\x00" * 40, b"\x02\x02k1" + b"\x00" * 40]
)
def test_malformed_blobs_do_not_open(blob: bytes) -> None:
    assert seal_keys(("k1", 1)).verify(KEY, blob).reason == "malformed"


def test_a_truncated_seal_does_not_open() -> None:
    seal = seal_keys(("k1", 1))
    sealed = seal.seal(KEY, VALUE)

    for end in range(len(sealed) - len(VALUE)):
        assert seal.open(KEY, sealed[:end]) is None


def test_a_key_from_another_deployment_with_the_same_id_does_not_open() -> None:
    sealed = seal_keys(("k1", 1)).seal(KEY, VALUE)

    assert seal_keys(("k1", 2)).open(KEY, sealed) is None


def test_after_rotation_old_values_open_while_the_old_key_is_listed() -> None:
    before = seal_keys(("k0", 1))
    during = seal_keys(("k1", 2), ("k0", 1))
    after = seal_keys(("k1", 2))
    old = before.seal(KEY, VALUE)
    new = during.seal(KEY, VALUE)

    assert during.open(KEY, old) == VALUE
    assert new[2:4] == b"k1"
    assert before.open(KEY, new) is None
    assert after.open(KEY, new) == VALUE
    assert after.open(KEY, old) is None
    assert after.verify(KEY, old).reason == "unknown_kid"


def test_a_short_key_is_refused_naming_its_id_but_not_the_key() -> None:
    short = b64key(9, size=16)

    with pytest.raises(CacheConfigError, match=r"'k2'.*16 bytes") as caught:
        SealKeys.from_env(f"k1:{b64key(1)},k2:{short}")

    assert short not in str(caught.value)


def test_a_key_that_is_not_base64_is_refused_naming_its_id() -> None:
    secret = "not*base64*at*all*" * 4

    with pytest.raises(CacheConfigError, match=r"'k1'.*base64") as caught:
        SealKeys.from_env(f"k1:{secret}")

    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "entry 1"),
        ("no-colon-here", "entry 1"),
        (f"k1:{b64key(1)},bad id:{b64key(2)}", "entry 2"),
        (f"k1:{b64key(1)},k1:{b64key(2)}", "'k1' twice"),
    ],
)
def test_malformed_key_lists_are_refused(value: str, message: str) -> None:
    with pytest.raises(CacheConfigError, match=message):
        SealKeys.from_env(value)


def test_every_listed_key_id_is_kept_in_order_and_repr_shows_no_key() -> None:
    seal = seal_keys(("k2", 2), ("k1", 1), ("k0", 3))

    assert seal.current == "k2"
    assert seal.kids == ["k2", "k1", "k0"]
    assert b64key(2) not in repr(seal)
    assert "k1" in repr(seal)
