"""The Merkle tree stored as C2SP tlog-tiles, and the ledger's object layout.

Why tiles: an append must cost the same at any ledger size. With the tree kept
as immutable tiles of 256 hashes (c2sp.org/tlog-tiles), an append of ``b``
rows writes the ``b`` new leaf hashes plus at most one partial tile per level
(O(b + log n) bytes), the writer keeps only the right edge of the tree in
memory (at most 255 hashes per level), and a reader computes any root,
inclusion or consistency proof from O(log n) tiles.

Layout under the registry bucket (``ledger/`` is the log's prefix):

* ``ledger/checkpoint``: the latest signed checkpoint (the only object that moves
  for readers).
* ``ledger/tile/<L>/<N>[.p/<W>]``: hash tiles exactly per tlog-tiles: height 8;
  level 0 holds RFC 6962 leaf hashes, level ``L`` the roots of the full tiles
  of level ``L - 1``; ``N`` in 3-digit groups with ``x`` prefixes
  (``1234067`` → ``x001/x234/067``); ``.p/<W>`` a partial tile of width ``W``.
* ``ledger/rows/<N>[.p/<W>]``: entry bundles. Our entries are the ledger's
  JSONL lines (canonical row plus ``\\n``), not tlog-tiles' 16-bit
  length-prefixed entries, because a row may exceed 64 KiB and because
  concatenating the bundles then gives the ledger's JSONL file byte for byte.

Everything here is pure: tile contents come in through a :class:`TileSource`,
so the I/O layer can first ask which tiles a computation needs
(:func:`tiles_needed`), fetch them concurrently, then run it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from worker.errors import VerificationError
from worker.ledger import merkle

__all__ = [
    "LOG_PREFIX",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "TileSource",
    "TreeEdge",
    "consistency_proof",
    "edge_at",
    "edge_from_tiles",
    "encode_index",
    "entries_key",
    "inclusion_proof",
    "leaf_hashes",
    "parse_tile",
    "perfect_root",
    "root_at",
    "tile_key",
    "tiles_for_size",
    "tiles_needed",
]

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
LOG_PREFIX: Final = "ledger/"
_HASH: Final = merkle.HASH_SIZE


def encode_index(n: int) -> str:
    """tlog-tiles index path: 3-digit groups, all but the last prefixed with ``x``."""
    if n < 0:
        raise ValueError("tile index must not be negative")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def _suffix(width: int) -> str:
    if not 0 < width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} not in 1..{TILE_WIDTH}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_key(level: int, index: int, width: int) -> str:
    """Object key of a hash tile (``width`` 256 is a full tile)."""
    return f"{LOG_PREFIX}tile/{level}/{encode_index(index)}{_suffix(width)}"


def entries_key(index: int, width: int) -> str:
    """Object key of an entry bundle of ``width`` rows."""
    return f"{LOG_PREFIX}rows/{encode_index(index)}{_suffix(width)}"


@dataclass(frozen=True, order=True)
class Tile:
    """One tile of a tree: which level and index, how many hashes it holds."""

    level: int
    index: int
    width: int

    @property
    def key(self) -> str:
        return tile_key(self.level, self.index, self.width)


def parse_tile(tile: Tile, data: bytes) -> list[bytes]:
    """Split a tile's bytes into its hashes.

    Raises:
        VerificationError: the object has the wrong length for its width.
    """
    if len(data) != tile.width * _HASH:
        raise VerificationError(
            f"tile {tile.key}: {len(data)} bytes, expected {tile.width * _HASH}"
        )
    return [data[i : i + _HASH] for i in range(0, len(data), _HASH)]


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect subtree given its 2^k bottom hashes (left to right)."""
    level = list(hashes)
    if not level or len(level) & (len(level) - 1):
        raise ValueError("a perfect subtree has a power-of-two number of hashes")
    while len(level) > 1:
        level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def _fold(subtrees: Sequence[bytes]) -> bytes:
    """RFC 6962 root from the perfect subtrees of a tree, left (largest) to right."""
    if not subtrees:
        return merkle.EMPTY_ROOT
    root = subtrees[-1]
    for s in reversed(subtrees[:-1]):
        root = merkle.node_hash(s, root)
    return root


def _chunks(hashes: Sequence[bytes]) -> list[bytes]:
    """Perfect-subtree roots of a run of hashes, by the binary digits of its length."""
    out: list[bytes] = []
    start, n = 0, len(hashes)
    while start < n:
        size = 1 << ((n - start).bit_length() - 1)
        out.append(perfect_root(hashes[start : start + size]))
        start += size
    return out


@dataclass
class TreeEdge:
    """The right edge of the tree: the partial tile of every level.

    ``levels[L]`` holds the hashes of level ``L``'s rightmost, not yet full
    tile (``(size >> 8L) % 256`` of them), which is all an appender needs: a
    full tile never changes again. Memory is at most 255 hashes per level.
    """

    size: int = 0
    levels: list[list[bytes]] = field(default_factory=lambda: [[]])

    def copy(self) -> TreeEdge:
        return TreeEdge(self.size, [list(level) for level in self.levels])

    def append(self, leaf_hash: bytes) -> list[tuple[Tile, bytes]]:
        """Add one leaf hash; return the tiles this completed (full tiles)."""
        self.levels[0].append(leaf_hash)
        self.size += 1
        return self._carry(0)

    def append_tile(self, hashes: bytes, root: bytes) -> list[tuple[Tile, bytes]]:
        """Add a whole level-0 tile (256 leaf hashes, and their subtree root) at once.

        For a verifier that hashed a full entry bundle elsewhere (a process
        pool): one call instead of 256. ``root`` is trusted to be the perfect
        root of ``hashes``; the caller computed both from the rows.

        Raises:
            ValueError: the tree does not end at a tile boundary, or the tile
                is not 256 hashes.
        """
        if self.levels[0] or len(hashes) != TILE_WIDTH * _HASH:
            raise ValueError("a whole tile goes only at a tile boundary and holds 256 hashes")
        full = [(Tile(0, self.size >> TILE_HEIGHT, TILE_WIDTH), hashes)]
        self.size += TILE_WIDTH
        if len(self.levels) == 1:
            self.levels.append([])
        self.levels[1].append(root)
        return full + self._carry(1)

    def _carry(self, level: int) -> list[tuple[Tile, bytes]]:
        """Close every level whose tile became full, from ``level`` up."""
        full: list[tuple[Tile, bytes]] = []
        while len(self.levels[level]) == TILE_WIDTH:
            hashes = self.levels[level]
            index = (self.size >> (TILE_HEIGHT * (level + 1))) - 1
            full.append((Tile(level, index, TILE_WIDTH), b"".join(hashes)))
            self.levels[level] = []
            if len(self.levels) == level + 1:
                self.levels.append([])
            self.levels[level + 1].append(perfect_root(hashes))
            level += 1
        return full

    def partial_tiles(self) -> list[tuple[Tile, bytes]]:
        """The partial tiles of the tree at this size (one per level that has one)."""
        out: list[tuple[Tile, bytes]] = []
        for level, hashes in enumerate(self.levels):
            if hashes:
                index = self.size >> (TILE_HEIGHT * (level + 1))
                out.append((Tile(level, index, len(hashes)), b"".join(hashes)))
        return out

    def root(self) -> bytes:
        """RFC 6962 root of the tree at this size: O(log n) hashing."""
        subtrees: list[bytes] = []
        for hashes in reversed(self.levels):
            subtrees.extend(_chunks(hashes))
        return _fold(subtrees)


def tiles_for_size(size: int) -> list[Tile]:
    """The partial tiles a tree of ``size`` leaves publishes (its right edge)."""
    out: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        width = (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
        if width:
            out.append(Tile(level, size >> (TILE_HEIGHT * (level + 1)), width))
        level += 1
    return out


def edge_from_tiles(size: int, tiles: TileSource) -> TreeEdge:
    """The edge of a tree from its own partial tiles (what a writer reads at start)."""
    edge = TreeEdge(size, [[]])
    for tile in tiles_for_size(size):
        while len(edge.levels) <= tile.level:
            edge.levels.append([])
        edge.levels[tile.level] = parse_tile(tile, tiles(tile))
    while len(edge.levels) > 1 and not edge.levels[-1]:
        edge.levels.pop()
    return edge


TileSource = Callable[[Tile], bytes]
"""Tile bytes by tile; raises ``KeyError`` if the tile is not at hand."""


class _Tree:
    """Subtree hashes of the tree of ``size`` leaves, read from its tiles."""

    def __init__(self, size: int, source: TileSource) -> None:
        self.size = size
        self._source = source
        self._parsed: dict[Tile, list[bytes]] = {}

    def _tile_hashes(self, level: int, index: int) -> list[bytes]:
        width = min(TILE_WIDTH, (self.size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH)
        tile = Tile(level, index, width)
        hashes = self._parsed.get(tile)
        if hashes is None:
            hashes = self._parsed[tile] = parse_tile(tile, self._source(tile))
        return hashes

    def subtree(self, height: int, index: int) -> bytes:
        """Hash of the perfect subtree of ``2**height`` leaves at position ``index``."""
        level, rest = divmod(height, TILE_HEIGHT)
        first = index << rest  # first node of tile level `level` under this subtree
        hashes = self._tile_hashes(level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        return perfect_root(hashes[offset : offset + (1 << rest)])

    def range_hash(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``[lo, hi)`` as RFC 6962's recursion splits it."""
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            return self.subtree(n.bit_length() - 1, lo // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return merkle.node_hash(self.range_hash(lo, lo + k), self.range_hash(lo + k, hi))


def root_at(size: int, tree_size: int, source: TileSource) -> bytes:
    """Root of the first ``size`` leaves, read from the tiles of a tree of ``tree_size``."""
    if not 0 <= size <= tree_size:
        raise ValueError(f"size {size} not in 0..{tree_size}")
    return merkle.EMPTY_ROOT if size == 0 else _Tree(tree_size, source).range_hash(0, size)


def edge_at(size: int, tree_size: int, source: TileSource) -> TreeEdge:
    """The edge of the first ``size`` leaves, from the tiles of a tree of ``tree_size``.

    Used to continue from a trusted checkpoint: appending the rows after
    ``size`` to this edge must give the newer root.
    """
    if not 0 <= size <= tree_size:
        raise ValueError(f"size {size} not in 0..{tree_size}")
    tree = _Tree(tree_size, source)
    edge = TreeEdge(size, [[]])
    level = 0
    while size >> (TILE_HEIGHT * level):
        width = (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
        first = (size >> (TILE_HEIGHT * (level + 1))) * TILE_WIDTH
        while len(edge.levels) <= level:
            edge.levels.append([])
        edge.levels[level] = [tree.subtree(TILE_HEIGHT * level, first + i) for i in range(width)]
        level += 1
    while len(edge.levels) > 1 and not edge.levels[-1]:
        edge.levels.pop()
    return edge


def inclusion_proof(index: int, size: int, source: TileSource) -> list[bytes]:
    """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size``, from tiles."""
    return merkle.inclusion_proof_with(index, size, _Tree(size, source).range_hash)


def consistency_proof(old_size: int, size: int, source: TileSource) -> list[bytes]:
    """RFC 9162 consistency proof from ``old_size`` to ``size``, from tiles."""
    return merkle.consistency_proof_with(old_size, size, _Tree(size, source).range_hash)


def tiles_needed(compute: Callable[[TileSource], object]) -> set[Tile]:
    """Which tiles ``compute`` reads: run it once on dummy tiles and record them.

    The I/O layer then fetches exactly those, concurrently, and runs
    ``compute`` again on the real bytes.
    """
    seen: set[Tile] = set()

    def record(tile: Tile) -> bytes:
        seen.add(tile)
        return bytes(tile.width * _HASH)

    compute(record)
    return seen


def leaf_hashes(lines: Iterable[bytes]) -> list[bytes]:
    """RFC 6962 leaf hashes of JSONL lines (the newline is not part of the leaf)."""
    return [hashlib.sha256(b"\x00" + line.rstrip(b"\n")).digest() for line in lines]
