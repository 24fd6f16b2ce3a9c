"""The single writer's state machine: candidates in, rows out, one per commit.

Pure and constant in memory: a :class:`Tip` is all the writer holds of the
ledger (its size, the last row, the right edge of the Merkle tree, the rows of
the open entry bundle), an :class:`Appender` decides a batch of candidates on
it, and :func:`extend` says which immutable objects the batch adds. The I/O
shell (``worker/io/ledger_writer.py``) looks up the batch's commits, writes the
head (the commit point) and then the objects; on a storage failure it throws
the appender away and reloads the tip (the stored objects are the truth).

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

from worker.errors import IntegrityError
from worker.ledger import merkle
from worker.ledger.chain import link
from worker.ledger.row import (
    IndexCandidate,
    LedgerRow,
    leaf_bytes,
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
    too. Decisions as in the module docstring.
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
        """Append ``candidate`` unless its commit already has a row (recorded or in this batch).

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
