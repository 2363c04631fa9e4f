"""RFC 9162 §2.1 Merkle tree hashing, proof shapes and pure proof verification.

Nothing here touches storage: the verifiers need only the proof, the hashes and
the sizes, so a third party can check our proofs with this module alone (or
with any other RFC 9162 implementation).

Proof generation is split in two: the *shape* of a proof is a list of leaf
ranges ``(lo, hi)`` whose subtree hashes form the proof, and a range is the
right fold of the complete subtrees that tile it. The store answers complete
subtree hashes from its table; the in-memory reference below answers them from
a list of leaf hashes. Both then share one folding rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Range = tuple[int, int]
Subtree = tuple[int, int]
"""A complete subtree as ``(first_leaf, level)``: it covers 2**level leaves."""


class ProofShapeError(ValueError):
    """An index or size that no proof exists for."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly less than ``n`` (RFC 9162 §2.1.1)."""
    return 1 << ((n - 1).bit_length() - 1)


def complete_subtrees(lo: int, hi: int) -> list[Subtree]:
    """Tile the leaf range [lo, hi) with complete subtrees, largest first.

    Valid for every range a proof asks for: ``lo`` is always a multiple of the
    size of the largest power of two not exceeding ``hi - lo``.
    """
    tiles: list[Subtree] = []
    start = lo
    remaining = hi - lo
    while remaining:
        level = remaining.bit_length() - 1
        tiles.append((start, level))
        start += 1 << level
        remaining -= 1 << level

    return tiles


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Hash of a range from its complete subtrees, combined right to left."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)

    return result


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes make PATH(index, D[0:size]), deepest first."""
    if not 0 <= index < size:
        raise ProofShapeError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k

    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges whose hashes make PROOF(old_size, D[0:new_size]) (§2.1.4.1)."""
    if not 0 <= old_size <= new_size:
        raise ProofShapeError(
            f"no consistency proof from size {old_size} to size {new_size}"
        )
    if old_size in (0, new_size):
        return []
    ranges: list[Range] = []
    lo, hi = 0, new_size
    complete = True
    while old_size != hi:
        k = split_point(hi - lo)
        if old_size - lo <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            complete = False
    if not complete:
        ranges.append((lo, hi))

    ranges.reverse()
    return ranges


def proof_from_subtrees(
    ranges: Sequence[Range], subtree: Callable[[Subtree], bytes]
) -> list[bytes]:
    return [fold_right([subtree(t) for t in complete_subtrees(*r)]) for r in ranges]


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) computed directly: the reference the stored tree must match."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = split_point(len(leaves))

    return node_hash(root_from_leaves(leaves[:k]), root_from_leaves(leaves[k:]))


def inclusion_proof_from_leaves(leaves: Sequence[bytes], index: int) -> list[bytes]:
    ranges = inclusion_ranges(index, len(leaves))

    return [root_from_leaves(leaves[lo:hi]) for lo, hi in ranges]


def consistency_proof_from_leaves(
    leaves: Sequence[bytes], old_size: int
) -> list[bytes]:
    ranges = consistency_ranges(old_size, len(leaves))

    return [root_from_leaves(leaves[lo:hi]) for lo, hi in ranges]


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``leaf`` sit at ``index`` of the tree ``root``?"""
    if not (_is_hash(leaf) and _is_hash(root) and all(map(_is_hash, proof))):
        return False
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1

    return sn == 0 and r == root


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``new_root`` an extension of ``old_root``?"""
    if not (_is_hash(old_root) and _is_hash(new_root) and all(map(_is_hash, proof))):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1

    return sn == 0 and fr == old_root and sr == new_root


class Frontier:
    """The right edge of a growing tree: one hash per set bit of its size.

    Appending a leaf yields the complete subtrees it closes, which the store
    persists; the root at the current size is the right fold of the edge.
    """

    def __init__(self, size: int = 0, edge: Sequence[bytes] = ()) -> None:
        if len(edge) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} edges")
        self.size = size
        self.edge = list(edge)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.edge)

    def append(self, leaf: bytes) -> list[tuple[int, bytes]]:
        """Add a leaf; return ``(level, hash)`` of each subtree it completes."""
        closed: list[tuple[int, bytes]] = []
        h, n, level = leaf, self.size, 0
        while n & 1:
            h = node_hash(self.edge.pop(), h)
            level += 1
            closed.append((level, h))
            n >>= 1
        self.edge.append(h)
        self.size += 1

        return closed

    def root(self) -> bytes:
        return fold_right(self.edge) if self.edge else EMPTY_ROOT


def edge_subtrees(size: int) -> list[Subtree]:
    """The complete subtrees on the right edge of a tree of ``size`` leaves."""
    return complete_subtrees(0, size)
