"""The single writer's state machine: candidates in, rows out, one per commit.

Pure: it holds the verified rows in memory and decides; the agent around it
reads the ledger from storage, calls :meth:`Ledger.apply`, persists
``row_to_line(result.row)`` with a conditional write, and on any storage
failure throws this object away and reloads (``apply`` has already moved the
in-memory tail; the stored file is the truth).

Decisions, so that replaying the candidates topic rebuilds the same bytes:
    * The row's ``created_at`` is the candidate body's ``created_at`` (when the
      bundle was made, which is also what the attestation covers), never the
      writer's clock. A row is then a pure function of the tail and the
      candidate, and a re-delivered candidate is recognised as a duplicate.
    * The writer's clock (``apply``'s ``created_at`` argument) is used only to
      refuse bodies dated in the future beyond ``max_future_skew``: such a
      timestamp is wrong data, and once appended it could never be corrected.
    * A second candidate for a commit is never appended (one bundle per commit); it
      is reported as :class:`Duplicate`. ``same_digest=True`` is a harmless
      re-delivery; ``False`` means two different bundles claim one commit,
      which the caller must treat as an :class:`~worker.errors.IntegrityError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from worker.errors import IntegrityError, VerificationError
from worker.ledger import merkle
from worker.ledger.chain import link, next_row, verify_chain, verify_jsonl
from worker.ledger.checkpoint import Checkpoint
from worker.ledger.row import (
    IndexCandidate,
    LedgerRow,
    leaf_bytes,
    row_to_line,
)
from worker.ledger.tiles import TILE_WIDTH, Tile, TreeEdge, tiles_for_size
from worker.utc import format_utc, parse_utc

__all__ = [
    "DEFAULT_MAX_FUTURE_SKEW",
    "Appended",
    "Appender",
    "ApplyResult",
    "BatchObjects",
    "Duplicate",
    "InclusionProof",
    "Ledger",
    "Tip",
    "extend",
]

DEFAULT_MAX_FUTURE_SKEW: Final = timedelta(minutes=5)


@dataclass(frozen=True)
class Appended:
    """The candidate became a new row; persist ``row_to_line(row)``."""

    row: LedgerRow


@dataclass(frozen=True)
class Duplicate:
    """The commit already has a row; nothing was appended."""

    existing_row: LedgerRow
    same_digest: bool


ApplyResult = Appended | Duplicate


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 inclusion proof of one row in the tree of ``size`` rows."""

    index: int
    size: int
    hashes: tuple[bytes, ...]


class Ledger:
    """The ledger as one writer sees it: verified rows plus indexes over them.

    Args:
        rows: the existing rows in file order; verified here (fail closed), so
            a tampered ledger cannot be extended.
        max_future_skew: how far a candidate's ``created_at`` may be ahead of
            the writer's clock.

    Raises:
        VerificationError: ``rows`` do not form a valid chain.
    """

    def __init__(
        self,
        rows: Sequence[LedgerRow] = (),
        *,
        max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    ) -> None:
        verify_chain(rows)
        self._max_future_skew = max_future_skew
        self._rows: list[LedgerRow] = []
        self._leaves: list[bytes] = []
        self._leaf_hashes: list[bytes] = []
        self._by_commit: dict[str, int] = {}
        self._root_cache: tuple[int, bytes] = (0, merkle.EMPTY_ROOT)
        for row in rows:
            self._add(row)

    @classmethod
    def from_jsonl(
        cls, data: bytes, *, max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW
    ) -> Ledger:
        """Load a ledger file.

        Raises:
            VerificationError: the file is malformed or the chain is broken.
        """
        return cls(verify_jsonl(data), max_future_skew=max_future_skew)

    def _add(self, row: LedgerRow) -> None:
        leaf = leaf_bytes(row)
        self._by_commit[row.lakefs_commit] = len(self._rows)
        self._rows.append(row)
        self._leaves.append(leaf)
        self._leaf_hashes.append(merkle.leaf_hash(leaf))

    @property
    def size(self) -> int:
        """Number of rows, which is also the Merkle tree size."""
        return len(self._rows)

    @property
    def rows(self) -> tuple[LedgerRow, ...]:
        """The rows in ``seq`` order (a copy: the ledger only grows through ``apply``)."""
        return tuple(self._rows)

    @property
    def leaves(self) -> tuple[bytes, ...]:
        """Merkle leaf data: each row's JSONL line without its newline."""
        return tuple(self._leaves)

    @property
    def tail(self) -> LedgerRow | None:
        """The last row, which the next row's ``prev`` links to."""
        return self._rows[-1] if self._rows else None

    def to_jsonl(self) -> bytes:
        """The whole ledger file, byte-identical to what was loaded plus appends."""
        return b"".join(row_to_line(r) for r in self._rows)

    def root(self) -> bytes:
        """RFC 6962 root over all rows (cached until the next append)."""
        size, cached = self._root_cache
        if size != self.size:
            cached = merkle.root_from_hashes(self._leaf_hashes)
            self._root_cache = (self.size, cached)
        return cached

    def root_at(self, size: int) -> bytes:
        """Root of the first ``size`` rows, for checking an older checkpoint.

        Raises:
            ValueError: ``size`` is negative or beyond the ledger.
        """
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} not in 0..{self.size}")
        return merkle.root_from_hashes(self._leaf_hashes[:size])

    def row_for(self, commit: str) -> LedgerRow | None:
        """The row of a lakeFS commit, if it has one."""
        index = self._by_commit.get(commit)
        return None if index is None else self._rows[index]

    def inclusion_proof(self, commit: str) -> InclusionProof:
        """Proof that the commit's row is in the current tree.

        Raises:
            KeyError: the commit has no row.
        """
        index = self._by_commit[commit]
        hashes = merkle.inclusion_proof_from_hashes(index, self._leaf_hashes)
        return InclusionProof(index=index, size=self.size, hashes=tuple(hashes))

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """Proof that the tree at ``old_size`` is a prefix of the current tree.

        Raises:
            ValueError: ``old_size`` is negative or beyond the ledger.
        """
        return merkle.consistency_proof_from_hashes(old_size, self.size, self._leaf_hashes)

    def verify_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Check that a verified checkpoint describes a prefix of this ledger.

        This is what catches what the chain cannot: a truncated file (fewer
        rows than a checkpoint already vouched for) and a rewritten history
        (same size, different root).

        Raises:
            VerificationError: the ledger is shorter than the checkpoint, or
                its first ``checkpoint.size`` rows have another root.
        """
        if checkpoint.size > self.size:
            raise VerificationError(
                f"ledger has {self.size} rows but checkpoint {checkpoint.origin} vouches for "
                f"{checkpoint.size}; rows were removed"
            )
        if self.root_at(checkpoint.size) != checkpoint.root:
            raise VerificationError(
                f"ledger root at size {checkpoint.size} differs from the checkpoint; "
                "history was rewritten"
            )

    def apply(self, candidate: IndexCandidate, created_at: datetime) -> ApplyResult:
        """Append ``candidate`` unless its commit already has a row.

        Args:
            candidate: a parsed (so already schema-checked) candidate. Bundle
                and attestation verification is the caller's job, before this.
            created_at: the writer's clock now (UTC). Not written into the
                row; see the module docstring.

        Raises:
            ValueError: ``created_at`` is not an aware UTC datetime.
            IntegrityError: the body's ``created_at`` is further in the
                future than ``max_future_skew``.
        """
        format_utc(created_at)  # refuses naive and non-UTC clocks
        body = candidate.body
        existing = self.row_for(body.lakefs_commit)
        if existing is not None:
            same = existing.checksums.artifact_sha256 == candidate.bundle_sha256
            return Duplicate(existing_row=existing, same_digest=same)
        if parse_utc(body.created_at) > created_at + self._max_future_skew:
            raise IntegrityError(
                f"index candidate for commit {body.lakefs_commit}: created_at "
                f"{body.created_at} is more than {self._max_future_skew} ahead of the writer"
            )
        row = next_row(self.tail, body)
        self._add(row)
        return Appended(row=row)


@dataclass(frozen=True)
class Tip:
    """The end of the ledger: all a writer needs to append, in constant memory.

    ``edge`` is the right edge of the Merkle tree; ``open_lines`` the rows of
    the entry bundle that is not yet full (at most 255); ``tail`` the last
    row, which the next row's ``prev`` links to.
    """

    size: int = 0
    tail: LedgerRow | None = None
    edge: TreeEdge = field(default_factory=TreeEdge)
    open_lines: tuple[bytes, ...] = ()

    def root(self) -> bytes:
        return self.edge.root()


@dataclass(frozen=True)
class BatchObjects:
    """What one appended batch adds to storage: immutable keys and their bytes."""

    bundles: tuple[tuple[int, int, bytes], ...]  # (bundle index, width, JSONL bytes)
    tiles: tuple[tuple[Tile, bytes], ...]


class Appender:
    """Candidates onto a :class:`Tip`, one row per commit, in constant memory.

    The pure core of the writer. The I/O shell looks up, for the batch's
    commits only, the rows already recorded (``recorded``), so nothing here
    holds the whole ledger; commits appended by this batch are remembered
    too. Same decisions as :class:`Ledger` (see the module docstring).
    """

    def __init__(
        self,
        tip: Tip,
        recorded: Mapping[str, LedgerRow],
        *,
        max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    ) -> None:
        self.start = tip
        self._recorded = dict(recorded)
        self._max_future_skew = max_future_skew
        self._prev = (
            None if tip.tail is None else (tip.tail.seq, hashlib.sha256(leaf_bytes(tip.tail)).hexdigest())
        )
        self.rows: list[LedgerRow] = []
        self.lines: list[bytes] = []

    @property
    def size(self) -> int:
        return self.start.size + len(self.rows)

    def row_for(self, commit: str) -> LedgerRow | None:
        """The row of ``commit``, recorded before or appended by this batch."""
        return self._recorded.get(commit)

    def apply(self, candidate: IndexCandidate, created_at: datetime) -> ApplyResult:
        """As :meth:`Ledger.apply`.

        Raises:
            ValueError: ``created_at`` is not an aware UTC datetime.
            IntegrityError: the body's ``created_at`` is too far in the future.
        """
        format_utc(created_at)
        body = candidate.body
        existing = self._recorded.get(body.lakefs_commit)
        if existing is not None:
            same = existing.checksums.artifact_sha256 == candidate.bundle_sha256
            return Duplicate(existing_row=existing, same_digest=same)
        if parse_utc(body.created_at) > created_at + self._max_future_skew:
            raise IntegrityError(
                f"index candidate for commit {body.lakefs_commit}: created_at "
                f"{body.created_at} is more than {self._max_future_skew} ahead of the writer"
            )
        row, line = link(self._prev, body)
        self._prev = (row.seq, hashlib.sha256(line).hexdigest())
        self._recorded[row.lakefs_commit] = row
        self.rows.append(row)
        self.lines.append(line)
        return Appended(row=row)

    def finish(self) -> tuple[Tip, BatchObjects]:
        """The new tip and the objects that store the appended rows."""
        return extend(self.start, self.lines, self.rows[-1] if self.rows else self.start.tail)


def extend(tip: Tip, lines: Sequence[bytes], tail: LedgerRow | None) -> tuple[Tip, BatchObjects]:
    """Add ``lines`` (already linked rows, no newline) after ``tip``.

    Returns the new tip, the entry bundles that changed (every bundle completed
    on the way, and the new partial one) and the tiles that changed (every full
    tile completed, and the new partial tile of each level that moved).
    """
    edge = tip.edge.copy()
    tiles: list[tuple[Tile, bytes]] = []
    bundles: list[tuple[int, int, bytes]] = []
    open_lines = list(tip.open_lines)
    size = tip.size
    for line in lines:
        tiles.extend(edge.append(merkle.leaf_hash(line)))
        open_lines.append(line)
        size += 1
        if len(open_lines) == TILE_WIDTH:
            bundles.append((size // TILE_WIDTH - 1, TILE_WIDTH, _jsonl(open_lines)))
            open_lines = []
    if lines and open_lines:
        bundles.append((size // TILE_WIDTH, len(open_lines), _jsonl(open_lines)))
    if lines:
        before = set(tiles_for_size(tip.size))
        tiles.extend((t, data) for t, data in edge.partial_tiles() if t not in before)
    new = Tip(size=size, tail=tail, edge=edge, open_lines=tuple(open_lines))
    return new, BatchObjects(bundles=tuple(bundles), tiles=tuple(tiles))


def _jsonl(lines: Sequence[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)
