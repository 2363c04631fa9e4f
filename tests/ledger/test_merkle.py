"""RFC 9162 known answers, and store-made proofs checked by the pure verifiers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penin.ledger import merkle
from penin.ledger.errors import TreeSizeError
from penin.ledger.ledger import WORMLedger

# RFC 9162 / Certificate Transparency test vectors (the entries, hex).
ENTRIES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CONSISTENCY = {
    (2, 8): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}

LEAVES = [merkle.leaf_hash(bytes.fromhex(e)) for e in ENTRIES]
STORE_SIZE = 300


def _hex(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def _flip(h: bytes, bit: int) -> bytes:
    return h[: bit // 8] + bytes([h[bit // 8] ^ (1 << bit % 8)]) + h[bit // 8 + 1 :]


# -- known answers ------------------------------------------------------------


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle.root_from_leaves([]).hex() == EMPTY_ROOT
    assert merkle.Frontier().root().hex() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_root_matches_the_rfc_vector(size: int) -> None:
    assert merkle.root_from_leaves(LEAVES[:size]).hex() == ROOTS[size - 1]


def test_growing_tree_edge_gives_every_vector_root() -> None:
    frontier = merkle.Frontier()
    roots = []
    for leaf in LEAVES:
        frontier.append(leaf)
        roots.append(frontier.root().hex())

    assert roots == ROOTS


@pytest.mark.parametrize(("index", "size"), list(INCLUSION))
def test_inclusion_proof_matches_the_rfc_vector(index: int, size: int) -> None:
    proof = merkle.inclusion_proof_from_leaves(LEAVES[:size], index)
    root = bytes.fromhex(ROOTS[size - 1])

    assert _hex(proof) == INCLUSION[index, size]
    assert merkle.verify_inclusion(LEAVES[index], index, size, proof, root)


@pytest.mark.parametrize(("old", "new"), list(CONSISTENCY))
def test_consistency_proof_matches_the_rfc_vector(old: int, new: int) -> None:
    proof = merkle.consistency_proof_from_leaves(LEAVES[:new], old)
    old_root, new_root = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])

    assert _hex(proof) == CONSISTENCY[old, new]
    assert merkle.verify_consistency(old, new, old_root, new_root, proof)


def test_verifiers_accept_the_published_proofs_as_given() -> None:
    root8 = bytes.fromhex(ROOTS[7])
    inclusion = [bytes.fromhex(h) for h in INCLUSION[5, 8]]
    consistency = [bytes.fromhex(h) for h in CONSISTENCY[6, 8]]

    assert merkle.verify_inclusion(LEAVES[5], 5, 8, inclusion, root8)
    assert merkle.verify_consistency(6, 8, bytes.fromhex(ROOTS[5]), root8, consistency)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    left, right = LEAVES[0], LEAVES[1]

    assert merkle.node_hash(left, right) != merkle.leaf_hash(left + right)


# -- proofs from the store ----------------------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoredTree]:
    path = tmp_path_factory.mktemp("merkle") / "ledger.db"
    led = WORMLedger(path).initialize("test.local/merkle")
    records = led.append_many(
        [("test.event", {"n": i}) for i in range(STORE_SIZE // 2)]
    )
    records += [led.append_record("test.event", {"m": i}) for i in range(50)]
    records += led.append_many(
        [("test.event", {"k": i}) for i in range(STORE_SIZE - len(records))]
    )
    yield StoredTree(led, [bytes.fromhex(r.leaf_hash) for r in records])
    led.close()


class StoredTree:
    def __init__(self, ledger: WORMLedger, leaves: list[bytes]) -> None:
        self.ledger = ledger
        self.leaves = leaves

    def root(self, size: int) -> bytes:
        return self.ledger.root(size)


def test_store_roots_equal_the_reference_at_every_size(stored: StoredTree) -> None:
    for size in range(STORE_SIZE + 1):
        assert stored.root(size) == merkle.root_from_leaves(stored.leaves[:size])


sizes_and_indexes = st.integers(1, STORE_SIZE).flatmap(
    lambda size: st.tuples(st.just(size), st.integers(0, size - 1))
)
old_and_new_sizes = st.integers(0, STORE_SIZE).flatmap(
    lambda new: st.tuples(st.integers(0, new), st.just(new))
)


@settings(max_examples=300, deadline=None)
@given(sizes_and_indexes)
def test_store_inclusion_proof_verifies_and_equals_reference(
    stored: StoredTree, case: tuple[int, int]
) -> None:
    size, index = case
    proof = stored.ledger.inclusion_proof(index, size)
    reference = merkle.inclusion_proof_from_leaves(stored.leaves[:size], index)

    assert (proof.leaf_index, proof.tree_size) == (index, size)
    assert proof.hashes == reference
    assert merkle.verify_inclusion(
        stored.leaves[index], index, size, proof.hashes, stored.root(size)
    )


@settings(max_examples=300, deadline=None)
@given(old_and_new_sizes)
def test_store_consistency_proof_verifies_and_equals_reference(
    stored: StoredTree, case: tuple[int, int]
) -> None:
    old, new = case
    proof = stored.ledger.consistency_proof(old, new)
    reference = merkle.consistency_proof_from_leaves(stored.leaves[:new], old)

    assert (proof.old_size, proof.new_size) == (old, new)
    assert proof.hashes == reference
    assert merkle.verify_consistency(
        old, new, stored.root(old), stored.root(new), proof.hashes
    )


@settings(max_examples=300, deadline=None)
@given(sizes_and_indexes, st.data())
def test_any_altered_inclusion_proof_is_rejected(
    stored: StoredTree, case: tuple[int, int], data: st.DataObject
) -> None:
    size, index = case
    leaf, root = stored.leaves[index], stored.root(size)
    hashes = stored.ledger.inclusion_proof(index, size).hashes
    kinds = ["index", "extend", "root", "leaf"]
    if hashes:
        kinds += ["flip", "truncate"]
    if index + 1 < STORE_SIZE:
        kinds.append("size")
    alteration = data.draw(st.sampled_from(kinds))

    if alteration == "flip":
        at = data.draw(st.integers(0, len(hashes) - 1))
        hashes[at] = _flip(hashes[at], data.draw(st.integers(0, 255)))
    elif alteration == "index":
        index = data.draw(st.integers(0, size).filter(lambda i: i != index))
    elif alteration == "size":
        # The root is bound to its size (a checkpoint signs both), so a
        # claimed size comes with the root of that size.
        size = data.draw(st.integers(index + 1, STORE_SIZE).filter(lambda s: s != size))
        root = stored.root(size)
    elif alteration == "truncate":
        del hashes[data.draw(st.integers(0, len(hashes) - 1))]
    elif alteration == "extend":
        at = data.draw(st.integers(0, len(hashes)))
        hashes.insert(at, data.draw(st.sampled_from(stored.leaves)))
    elif alteration == "root":
        root = _flip(root, data.draw(st.integers(0, 255)))
    else:
        leaf = _flip(leaf, data.draw(st.integers(0, 255)))

    assert not merkle.verify_inclusion(leaf, index, size, hashes, root)


@settings(max_examples=300, deadline=None)
@given(old_and_new_sizes, st.data())
def test_any_altered_consistency_proof_is_rejected(
    stored: StoredTree, case: tuple[int, int], data: st.DataObject
) -> None:
    old, new = case
    old_root, new_root = stored.root(old), stored.root(new)
    hashes = stored.ledger.consistency_proof(old, new).hashes
    kinds = ["extend", "old_root"]
    if hashes:
        kinds += ["flip", "truncate"]
    if set(range(1, new)) - {old}:
        kinds.append("old_size")
    if old > 0:
        # The empty tree is a prefix of every tree: any new size and root fit it.
        kinds += ["new_root", *(["new_size"] if old < STORE_SIZE else [])]
    alteration = data.draw(st.sampled_from(kinds))

    if alteration == "flip":
        at = data.draw(st.integers(0, len(hashes) - 1))
        hashes[at] = _flip(hashes[at], data.draw(st.integers(0, 255)))
    elif alteration == "old_size":
        # Sizes 0 and ``new`` are prefixes that need no proof at all.
        old = data.draw(st.integers(1, new - 1).filter(lambda m: m != old))
        old_root = stored.root(old)
    elif alteration == "new_size":
        new = data.draw(st.integers(old, STORE_SIZE).filter(lambda n: n != new))
        new_root = stored.root(new)
    elif alteration == "truncate":
        del hashes[data.draw(st.integers(0, len(hashes) - 1))]
    elif alteration == "extend":
        at = data.draw(st.integers(0, len(hashes)))
        hashes.insert(at, data.draw(st.sampled_from(stored.leaves)))
    elif alteration == "old_root":
        old_root = _flip(old_root, data.draw(st.integers(0, 255)))
    else:
        new_root = _flip(new_root, data.draw(st.integers(0, 255)))

    assert not merkle.verify_consistency(old, new, old_root, new_root, hashes)


def test_store_refuses_proofs_beyond_the_log(stored: StoredTree) -> None:
    with pytest.raises(TreeSizeError, match="beyond the log"):
        stored.ledger.root(STORE_SIZE + 1)
    with pytest.raises(TreeSizeError, match="beyond the log"):
        stored.ledger.inclusion_proof(0, STORE_SIZE + 1)
    with pytest.raises(TreeSizeError, match=f"seq {STORE_SIZE}"):
        stored.ledger.inclusion_proof(STORE_SIZE, STORE_SIZE)
    with pytest.raises(TreeSizeError):
        stored.ledger.consistency_proof(5, 4)
    with pytest.raises(TreeSizeError, match="beyond the log"):
        stored.ledger.consistency_proof(1, STORE_SIZE + 1)


def test_verifiers_reject_hashes_of_the_wrong_length() -> None:
    root = bytes.fromhex(ROOTS[7])
    proof = [bytes.fromhex(h) for h in INCLUSION[0, 8]]

    assert not merkle.verify_inclusion(LEAVES[0][:31], 0, 8, proof, root)
    assert not merkle.verify_inclusion(LEAVES[0], 0, 8, [*proof[:2], b"x"], root)
    assert not merkle.verify_consistency(2, 8, b"", root, proof[1:])


def test_no_inclusion_proof_exists_in_an_empty_tree() -> None:
    with pytest.raises(merkle.ProofShapeError, match="outside a tree of size 0"):
        merkle.inclusion_ranges(0, 0)
