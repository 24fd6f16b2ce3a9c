"""Tiles: the stored tree must give the same roots and proofs as the whole-list tree."""

from __future__ import annotations

import hashlib

import pytest

from worker.errors import VerificationError
from worker.ledger import merkle
from worker.ledger.tiles import (
    TILE_WIDTH,
    Tile,
    TreeEdge,
    consistency_proof,
    edge_at,
    edge_from_tiles,
    encode_index,
    entries_key,
    inclusion_proof,
    parse_tile,
    root_at,
    tile_key,
    tiles_for_size,
    tiles_needed,
)


def leaves(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def build(n: int) -> tuple[TreeEdge, dict[Tile, bytes]]:
    """Append n leaves one at a time, keeping every tile a writer would publish."""
    edge, store = TreeEdge(), {}
    for leaf in leaves(n):
        for tile, data in edge.append(merkle.leaf_hash(leaf)):
            store[tile] = data
        for tile, data in edge.partial_tiles():
            store[tile] = data
    return edge, store


# C2SP tlog-tiles' own examples of index encoding.
@pytest.mark.parametrize(
    ("n", "path"),
    [(0, "000"), (1, "001"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_index_encoding_matches_the_spec(n: int, path: str) -> None:
    assert encode_index(n) == path


def test_keys() -> None:
    assert tile_key(0, 1234067, 256) == "ledger/tile/0/x001/x234/067"
    assert tile_key(2, 5, 17) == "ledger/tile/2/005.p/17"
    assert entries_key(3, 256) == "ledger/rows/003"
    assert entries_key(3, 1) == "ledger/rows/003.p/1"
    with pytest.raises(ValueError, match="width"):
        tile_key(0, 0, 0)
    with pytest.raises(ValueError, match="width"):
        tile_key(0, 0, 257)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 255, 256, 257, 511, 512, 513, 1000, 65535, 65536, 65537])
def test_edge_root_equals_the_rfc6962_root(n: int) -> None:
    edge, store = build(n)
    assert edge.root() == merkle.root(leaves(n))
    assert edge.size == n
    # The edge can be rebuilt from the tree's own partial tiles (writer start-up).
    again = edge_from_tiles(n, store.__getitem__)
    assert again.root() == edge.root() and again.levels == edge.levels


def test_tiles_for_size_are_the_published_partials() -> None:
    assert tiles_for_size(0) == []
    assert tiles_for_size(256) == [Tile(1, 0, 1)]
    assert tiles_for_size(70_000) == [Tile(0, 273, 112), Tile(1, 1, 17), Tile(2, 0, 1)]
    edge, _ = build(70_000)
    assert [t for t, _ in edge.partial_tiles()] == tiles_for_size(70_000)


def test_full_tiles_hold_leaf_hashes_and_subtree_roots() -> None:
    _, store = build(256 * 256 + 3)
    level0 = parse_tile(Tile(0, 1, 256), store[Tile(0, 1, 256)])
    assert level0[0] == merkle.leaf_hash(b"leaf 256")
    level1 = parse_tile(Tile(1, 0, 256), store[Tile(1, 0, 256)])
    assert level1[1] == merkle.root(leaves(512)[256:])


@pytest.mark.parametrize("size", [1, 2, 5, 256, 257, 600, 70_000])
def test_roots_and_proofs_from_tiles_match_the_list_tree(size: int) -> None:
    edge, store = build(size)
    hashes = [merkle.leaf_hash(x) for x in leaves(size)]
    for old in sorted({0, 1, size // 3, size // 2, size - 1, size}):
        assert root_at(old, size, store.__getitem__) == merkle.root_from_hashes(hashes[:old])
        assert edge_at(old, size, store.__getitem__).root() == merkle.root_from_hashes(hashes[:old])
        assert consistency_proof(old, size, store.__getitem__) == merkle.consistency_proof_from_hashes(
            old, size, hashes
        )
    for index in sorted({0, size // 2, size - 1}):
        proof = inclusion_proof(index, size, store.__getitem__)
        assert proof == merkle.inclusion_proof_from_hashes(index, hashes)
        merkle.verify_inclusion(leaves(size)[index], index, size, proof, edge.root())


def test_an_older_edge_extends_to_the_newer_root() -> None:
    _, store = build(1000)
    edge = edge_at(300, 1000, store.__getitem__)
    for leaf in leaves(1000)[300:]:
        edge.append(merkle.leaf_hash(leaf))
    assert edge.root() == merkle.root(leaves(1000))


def test_tiles_needed_is_logarithmic() -> None:
    size = 70_000
    needed = tiles_needed(lambda src: inclusion_proof(12_345, size, src))
    assert len(needed) <= 6
    _, store = build(size)
    fetched = {t: store[t] for t in needed}
    proof = inclusion_proof(12_345, size, fetched.__getitem__)
    merkle.verify_inclusion(leaves(size)[12_345], 12_345, size, proof, merkle.root(leaves(size)))


def test_a_short_tile_is_refused() -> None:
    with pytest.raises(VerificationError, match="expected 64"):
        parse_tile(Tile(0, 0, 2), hashlib.sha256(b"x").digest())


def test_a_tampered_tile_changes_the_root() -> None:
    # Roots read the highest tiles that cover a range (here level 1); a tampered
    # level-0 tile is caught by `kfm ledger verify`, which rehashes every row.
    _, store = build(600)
    bad = dict(store)
    data = bytearray(bad[Tile(1, 0, 2)])
    data[0] ^= 1
    bad[Tile(1, 0, 2)] = bytes(data)
    assert root_at(600, 600, bad.__getitem__) != root_at(600, 600, store.__getitem__)
    assert root_at(600, 600, store.__getitem__) == merkle.root(leaves(600))
    assert TILE_WIDTH == 256


def test_a_whole_tile_appended_at_once_equals_leaf_by_leaf() -> None:
    n = 256 * 256 + 256 * 3
    hashes = [merkle.leaf_hash(x) for x in leaves(n)]
    one, whole = TreeEdge(), TreeEdge()
    tiles_one, tiles_whole = [], []
    for h in hashes:
        tiles_one += one.append(h)
    for i in range(0, n, 256):
        chunk = hashes[i : i + 256]
        tiles_whole += whole.append_tile(b"".join(chunk), merkle.root_from_hashes(chunk))
    assert tiles_whole == tiles_one and whole.levels == one.levels and whole.root() == one.root()
    with pytest.raises(ValueError, match="boundary"):
        whole.append(hashes[0])
        whole.append_tile(b"".join(hashes[:256]), merkle.root_from_hashes(hashes[:256]))
