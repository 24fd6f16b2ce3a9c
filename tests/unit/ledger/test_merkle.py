"""RFC 6962 / RFC 9162 Merkle tree: known answers, hand-built trees, exhaustive sizes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from worker.errors import VerificationError
from worker.ledger.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    consistency_proof_from_hashes,
    inclusion_proof,
    inclusion_proof_from_hashes,
    leaf_hash,
    node_hash,
    root,
    root_from_hashes,
    verify_consistency,
    verify_inclusion,
)

MAX = 40


def h(hex_digest: str) -> bytes:
    return bytes.fromhex(hex_digest)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- Known answers: the Certificate Transparency reference test tree ----------------------------

CT_LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    EMPTY_ROOT,
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


@pytest.mark.parametrize("n", range(9))
def test_ct_roots(n: int) -> None:
    assert root(CT_LEAVES[:n]) == CT_ROOTS[n]


@pytest.mark.parametrize(("index", "size", "expected"), CT_INCLUSION)
def test_ct_inclusion(index: int, size: int, expected: list[str]) -> None:
    proof = inclusion_proof(index, CT_LEAVES[:size])
    assert proof == [h(x) for x in expected]
    verify_inclusion(CT_LEAVES[index], index, size, proof, CT_ROOTS[size])


@pytest.mark.parametrize(("old", "new", "expected"), CT_CONSISTENCY)
def test_ct_consistency(old: int, new: int, expected: list[str]) -> None:
    proof = consistency_proof(old, new, CT_LEAVES)
    assert proof == [h(x) for x in expected]
    verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], proof)


# --- Hand-computed small trees --------------------------------------------------------------------

A, B, C, D, E = (bytes([x]) * 3 for x in b"abcde")
LA, LB, LC, LD, LE = (sha(b"\x00" + x) for x in (A, B, C, D, E))
AB = sha(b"\x01" + LA + LB)
CD = sha(b"\x01" + LC + LD)
ABCD = sha(b"\x01" + AB + CD)


def test_hand_computed_roots() -> None:
    assert root([]) == sha(b"") == EMPTY_ROOT
    assert root([A]) == LA
    assert root([A, B]) == AB
    assert root([A, B, C]) == sha(b"\x01" + AB + LC)
    assert root([A, B, C, D]) == ABCD
    # n = 5 splits at 4: the left subtree is perfect, the fifth leaf hangs right.
    assert root([A, B, C, D, E]) == sha(b"\x01" + ABCD + LE)
    assert leaf_hash(A) == LA and node_hash(LA, LB) == AB


def test_hand_computed_proofs() -> None:
    five = [A, B, C, D, E]
    assert inclusion_proof(4, five) == [ABCD]
    assert inclusion_proof(2, five) == [LD, AB, LE]
    assert inclusion_proof(0, [A, B, C]) == [LB, LC]
    # PROOF(3, D[5]) = SUBPROOF(3, D[0:4], true) : MTH(D[4:5])
    #               = SUBPROOF(1, D[2:4], false) : MTH(D[0:2]) : LE = [LC, LD, AB, LE]
    assert consistency_proof(3, 5, five) == [LC, LD, AB, LE]
    # Old tree a perfect left subtree: its root is not repeated in the proof.
    assert consistency_proof(4, 5, five) == [LE]
    assert consistency_proof(2, 4, five) == [CD]


# --- Reference implementation, straight from the RFC 6962 recursive definitions -------------------


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return sha(b"")
    if len(d) == 1:
        return sha(b"\x00" + d[0])
    k = ref_split(len(d))
    return sha(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = ref_split(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], whole: bool) -> list[bytes]:
    if m == len(d):
        return [] if whole else [ref_mth(d)]
    k = ref_split(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], whole), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


LEAVES = [f"row-{i}".encode() for i in range(MAX)]
HASHES = [leaf_hash(x) for x in LEAVES]
# Computed once: roots of every prefix, so the loops below stay linear per proof.
ROOTS = [root_from_hashes(HASHES[:n]) for n in range(MAX + 1)]


def _flip(data: bytes, byte: int = 0) -> bytes:
    out = bytearray(data)
    out[byte] ^= 0x01
    return bytes(out)


def test_roots_match_reference() -> None:
    for n in range(MAX + 1):
        assert ROOTS[n] == ref_mth(LEAVES[:n]) == root(LEAVES[:n])


def test_every_inclusion_proof_for_sizes_1_to_40() -> None:
    for n in range(1, MAX + 1):
        for i in range(n):
            proof = inclusion_proof_from_hashes(i, HASHES[:n])
            assert proof == ref_path(i, LEAVES[:n]), (i, n)
            verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])


def _inclusion_fails(leaf: bytes, index: int, size: int, proof: list[bytes], root_: bytes) -> None:
    with pytest.raises(VerificationError, match=r"^inclusion proof: "):
        verify_inclusion(leaf, index, size, proof, root_)


def test_every_tampered_inclusion_proof_fails() -> None:
    for n in range(1, MAX + 1):
        for i in range(n):
            proof = inclusion_proof_from_hashes(i, HASHES[:n])
            for j in range(len(proof)):
                tampered = [*proof[:j], _flip(proof[j], j % 32), *proof[j + 1 :]]
                _inclusion_fails(LEAVES[i], i, n, tampered, ROOTS[n])
            if proof:
                _inclusion_fails(LEAVES[i], i, n, proof[:-1], ROOTS[n])
                _inclusion_fails(LEAVES[i], i, n, proof[1:], ROOTS[n])
            if len(proof) > 1:
                _inclusion_fails(LEAVES[i], i, n, proof[::-1], ROOTS[n])
            _inclusion_fails(LEAVES[i], i, n, [*proof, HASHES[0]], ROOTS[n])
            _inclusion_fails(LEAVES[i] + b"x", i, n, proof, ROOTS[n])
            _inclusion_fails(LEAVES[i], i, n, proof, _flip(ROOTS[n], 31))
            if n > 1:
                _inclusion_fails(LEAVES[i], (i + 1) % n, n, proof, ROOTS[n])
            if n < MAX:
                _inclusion_fails(LEAVES[i], i, n + 1, proof, ROOTS[n + 1])
            if i < n - 1:
                _inclusion_fails(LEAVES[i], i, n - 1, proof, ROOTS[n - 1])


@pytest.mark.parametrize(
    ("index", "size"), [(0, 0), (-1, 5), (5, 5), (6, 5)], ids=["empty", "negative", "at", "past"]
)
def test_inclusion_index_out_of_range(index: int, size: int) -> None:
    _inclusion_fails(LEAVES[0], index, size, [], ROOTS[min(size, MAX)])
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof_from_hashes(index, HASHES[:size])


def test_inclusion_refuses_wrong_length_hashes() -> None:
    proof = inclusion_proof_from_hashes(3, HASHES[:8])
    with pytest.raises(VerificationError, match="32 bytes"):
        verify_inclusion(LEAVES[3], 3, 8, [*proof[:-1], proof[-1][:31]], ROOTS[8])
    with pytest.raises(VerificationError, match="32 bytes"):
        verify_inclusion(LEAVES[3], 3, 8, proof, ROOTS[8] + b"\x00")


def test_every_consistency_proof_for_sizes_1_to_40() -> None:
    for n in range(1, MAX + 1):
        for m in range(1, n + 1):
            proof = consistency_proof_from_hashes(m, n, HASHES)
            assert proof == ref_subproof(m, LEAVES[:n], True), (m, n)
            verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def _consistency_fails(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> None:
    with pytest.raises(VerificationError, match=r"^consistency proof: "):
        verify_consistency(m, n, old, new, proof)


def test_every_tampered_consistency_proof_fails() -> None:
    for n in range(1, MAX + 1):
        for m in range(1, n + 1):
            proof = consistency_proof_from_hashes(m, n, HASHES)
            for j in range(len(proof)):
                tampered = [*proof[:j], _flip(proof[j], j % 32), *proof[j + 1 :]]
                _consistency_fails(m, n, ROOTS[m], ROOTS[n], tampered)
            if proof:
                _consistency_fails(m, n, ROOTS[m], ROOTS[n], proof[:-1])
                _consistency_fails(m, n, ROOTS[m], ROOTS[n], proof[1:])
            _consistency_fails(m, n, ROOTS[m], ROOTS[n], [*proof, HASHES[0]])
            _consistency_fails(m, n, _flip(ROOTS[m]), ROOTS[n], proof)
            _consistency_fails(m, n, ROOTS[m], _flip(ROOTS[n]), proof)
            if m < n:
                # A fork: the same old size, but a history that differs at leaf 0.
                forked = [leaf_hash(b"forged"), *HASHES[1:n]]
                _consistency_fails(m, n, root_from_hashes(forked[:m]), ROOTS[n], proof)
                _consistency_fails(m + 1, n, ROOTS[m + 1], ROOTS[n], proof)
                _consistency_fails(n, m, ROOTS[n], ROOTS[m], proof)
            if m > 1:
                _consistency_fails(m - 1, n, ROOTS[m - 1], ROOTS[n], proof)


def test_consistency_edges() -> None:
    for n in range(MAX + 1):
        assert consistency_proof_from_hashes(0, n, HASHES) == []
        verify_consistency(0, n, EMPTY_ROOT, ROOTS[n], [])
        assert consistency_proof_from_hashes(n, n, HASHES) == []
        verify_consistency(n, n, ROOTS[n], ROOTS[n], [])
    _consistency_fails(0, 5, ROOTS[1], ROOTS[5], [])
    _consistency_fails(0, 5, EMPTY_ROOT, ROOTS[5], [HASHES[0]])
    _consistency_fails(5, 5, ROOTS[5], ROOTS[4], [])
    _consistency_fails(5, 5, ROOTS[5], ROOTS[5], [HASHES[0]])
    _consistency_fails(6, 5, ROOTS[6], ROOTS[5], [])
    _consistency_fails(-1, 5, ROOTS[0], ROOTS[5], [])
    _consistency_fails(3, 5, ROOTS[3], ROOTS[5], [])
    with pytest.raises(VerificationError, match="32 bytes"):
        verify_consistency(
            3, 5, ROOTS[3][:16], ROOTS[5], consistency_proof_from_hashes(3, 5, HASHES)
        )
    for old, new in [(-1, 3), (4, 3), (3, MAX + 1)]:
        with pytest.raises(ValueError, match="old_size"):
            consistency_proof_from_hashes(old, new, HASHES)
