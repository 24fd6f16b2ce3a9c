"""RFC 6962 Merkle tree hashing, with RFC 9162 proof verification.

Why this tree: it is the one Certificate Transparency, Go's sumdb and every
C2SP tlog speak, so a checkpoint of our ledger can be checked (and witnessed)
with standard tools. Definitions, RFC 6962 section 2.1 / RFC 9162 section 2.1:

    MTH({})       = SHA-256()
    MTH({d0})     = SHA-256(0x00 || d0)                      (leaf hash)
    MTH(D[n])     = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
                    where k is the largest power of two smaller than n.

The domain-separation bytes keep a leaf from being passed off as a node.
Proof generation follows the recursive PATH and SUBPROOF definitions;
verification follows the RFC 9162 iterative algorithms (sections 2.1.3.2 and
2.1.4.2), whose step numbers the code cites.

Each public function has a ``*_from_hashes`` twin taking leaf hashes, so a
caller holding many leaves (the ledger) hashes each leaf once. Generators cost
O(n) hashes; verifiers O(log n). Verifiers raise and return nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Final

from worker.errors import VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "consistency_proof",
    "consistency_proof_from_hashes",
    "consistency_proof_with",
    "inclusion_proof",
    "inclusion_proof_from_hashes",
    "inclusion_proof_with",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one leaf."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of the non-empty leaf range ``[lo, hi)``, given leaf hashes."""
    n = hi - lo
    if n == 1:
        return hashes[lo]
    k = _split(n)
    return node_hash(_mth(hashes, lo, lo + k), _mth(hashes, lo + k, hi))


def root_from_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash of a tree given its leaf hashes."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def root(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash of ``leaves`` (leaf data, not hashes); SHA-256() if empty."""
    return root_from_hashes([leaf_hash(d) for d in leaves])


def inclusion_proof_from_hashes(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Audit path ``PATH(index, D[n])`` (RFC 6962 2.1.1), leaf level first.

    Raises:
        ValueError: ``index`` is not a leaf of the tree.
    """
    return inclusion_proof_with(index, len(leaf_hashes), lambda lo, hi: _mth(leaf_hashes, lo, hi))


def inclusion_proof_with(index: int, n: int, mth: Callable[[int, int], bytes]) -> list[bytes]:
    """Audit path of leaf ``index`` in a tree of ``n`` leaves, given ``mth(lo, hi)``.

    ``mth`` hashes a leaf range; the ranges asked for are the ones RFC 6962's
    recursion produces, so a caller holding tiles can answer from them.

    Raises:
        ValueError: ``index`` is not a leaf of the tree.
    """
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} not in a tree of size {n}")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    # Walk down from the root; siblings are found top-down, the path lists them bottom-up.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(mth(lo + k, hi))
            hi = lo + k
        else:
            path.append(mth(lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Audit path for leaf ``index`` of ``leaves`` (leaf data).

    Raises:
        ValueError: ``index`` is not a leaf of the tree.
    """
    return inclusion_proof_from_hashes(index, [leaf_hash(d) for d in leaves])


def consistency_proof_from_hashes(
    old_size: int, new_size: int, leaf_hashes: Sequence[bytes]
) -> list[bytes]:
    """``PROOF(old_size, D[new_size])`` (RFC 6962 2.1.2) over the first leaves.

    Empty when ``old_size`` is 0 or equal to ``new_size``: nothing needs proving.

    Raises:
        ValueError: unless ``0 <= old_size <= new_size <= len(leaf_hashes)``.
    """
    if not 0 <= old_size <= new_size <= len(leaf_hashes):
        raise ValueError(
            f"need 0 <= old_size ({old_size}) <= new_size ({new_size}) <= {len(leaf_hashes)}"
        )
    return consistency_proof_with(old_size, new_size, lambda lo, hi: _mth(leaf_hashes, lo, hi))


def consistency_proof_with(
    old_size: int, new_size: int, mth: Callable[[int, int], bytes]
) -> list[bytes]:
    """Consistency proof from ``old_size`` to ``new_size``, given ``mth(lo, hi)``.

    Raises:
        ValueError: unless ``0 <= old_size <= new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"need 0 <= old_size ({old_size}) <= new_size ({new_size})")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    # SUBPROOF(m, D[lo:hi], whole), unrolled; "whole" is the RFC's flag b.
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(mth(lo + k, hi))
            hi = lo + k
        else:
            proof.append(mth(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        proof.append(mth(lo, hi))
    proof.reverse()
    return proof


def consistency_proof(old_size: int, new_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Consistency proof that the first ``old_size`` leaves prefix the first ``new_size``.

    Raises:
        ValueError: unless ``0 <= old_size <= new_size <= len(leaves)``.
    """
    return consistency_proof_from_hashes(
        old_size, new_size, [leaf_hash(d) for d in leaves[:new_size]]
    )


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for h in hashes:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise VerificationError(f"{what}: every hash must be {HASH_SIZE} bytes")


def verify_inclusion(
    leaf_data: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_data`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 section 2.1.3.2.

    Raises:
        VerificationError: the proof does not lead from the leaf to ``root``.
    """
    _check_hashes("inclusion proof", [*proof, root])
    # Step 1.
    if not 0 <= index < size:
        raise VerificationError(f"inclusion proof: leaf index {index} not in tree size {size}")
    # Steps 2-3.
    fn, sn = index, size - 1
    r = leaf_hash(leaf_data)
    # Step 4.
    for p in proof:
        if sn == 0:  # 4a: more path than tree
            raise VerificationError("inclusion proof: too long for the tree size")
        if fn & 1 or fn == sn:  # 4b
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    # Step 5.
    if sn != 0:
        raise VerificationError("inclusion proof: too short for the tree size")
    if r != root:
        raise VerificationError("inclusion proof: computed root differs from the expected root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(old_size, old_root)`` is a prefix of ``(new_size, new_root)``.

    RFC 9162 section 2.1.4.2 for ``0 < old_size < new_size``. That algorithm
    is not defined at the edges, which are handled first: equal sizes need an
    empty proof and equal roots; ``old_size == 0`` needs an empty proof and
    ``old_root`` to be the empty-tree hash (every tree extends the empty one).

    Raises:
        VerificationError: the proof does not show consistency.
    """
    _check_hashes("consistency proof", [*proof, old_root, new_root])
    if not 0 <= old_size <= new_size:
        raise VerificationError(
            f"consistency proof: old size {old_size} is not within new size {new_size}"
        )
    if old_size == new_size:
        if proof or old_root != new_root:
            raise VerificationError("consistency proof: same size but different roots or a proof")
        return
    if old_size == 0:
        if proof or old_root != EMPTY_ROOT:
            raise VerificationError("consistency proof: old tree is empty but its root is not")
        return
    fr, sr = _consistency_roots(old_size, new_size, old_root, proof)
    # Step 7 (the rest).
    if fr != old_root:
        raise VerificationError("consistency proof: does not lead to the old root")
    if sr != new_root:
        raise VerificationError("consistency proof: does not lead to the new root")


def _consistency_roots(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """RFC 9162 2.1.4.2 steps 1-7 up to the root comparison, for ``0 < old < new``."""
    # Step 1.
    if not proof:
        raise VerificationError("consistency proof: empty")
    # Step 2.
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # Steps 3-4.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:  # 6a
            raise VerificationError("consistency proof: too long for the tree sizes")
        if fn & 1 or fn == sn:  # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1  # 6c
        sn >>= 1
    # Step 7: sn must have reached 0 exactly.
    if sn != 0:
        raise VerificationError("consistency proof: too short for the tree sizes")
    return fr, sr
