"""Which rows `kfm ledger list` shows, decided without I/O.

The ledger is read from its right edge backwards, one entry bundle (256 rows)
at a time, newest first, until a page is full: showing the last 20 rows reads
one or two bundles however long the ledger is. A filter (repository, branch,
``--since``) is applied to each bundle as it arrives, so a rare filter costs
as many bundle reads as it takes to find ``limit`` matching rows, at most the
whole ledger (docs/ledger.md says so). Why the filters look at bytes first:
a stored line is canonical JSON (:mod:`worker.ledger.row`), so a repository
or branch appears in it as exactly one spelling of ``"lakefs_repo":"<id>"``;
a line without it cannot match and is never parsed, which keeps a scan for a
rare filter bound by reads, not by parsing.

Paging: a page is the newest ``limit`` matching rows below a cursor (the seq
``--before`` names, default the checkpoint's size); when it is full and older
rows remain, :attr:`Page.next_before` is the cursor of the next page, the seq
of the oldest row shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from worker.ledger.row import LedgerRow, parse_line
from worker.ledger.tiles import TILE_WIDTH
from worker.utc import parse_utc

__all__ = ["MAX_LIMIT", "Page", "PageBuilder", "RowFilter", "bundles_backwards"]

MAX_LIMIT: Final = 10_000
"""Largest page: a page is held in memory and printed at once."""

_CREATED_AT = re.compile(rb'"created_at":"([^"]*)"')


@dataclass(frozen=True)
class RowFilter:
    """What a listed row must match; None matches anything.

    Attributes:
        repo: the row's ``lakefs_repo``.
        branch: the row's ``lakefs_branch``.
        since: rows whose ``created_at`` (the bundle run's finish time) is at or after it.
    """

    repo: str | None = None
    branch: str | None = None
    since: datetime | None = None

    def _needles(self) -> tuple[bytes, ...]:
        # json.dumps spells an id as JCS does: ids are printable ASCII without escapes.
        out = []
        if self.repo is not None:
            out.append(b'"lakefs_repo":' + json.dumps(self.repo).encode())
        if self.branch is not None:
            out.append(b'"lakefs_branch":' + json.dumps(self.branch).encode())
        return tuple(out)

    def could_match(self, line: bytes) -> bool:
        """False when the stored line certainly does not match (no parsing)."""
        return all(n in line for n in self._needles())

    def matches(self, row: LedgerRow) -> bool:
        return (
            (self.repo is None or row.lakefs_repo == self.repo)
            and (self.branch is None or row.lakefs_branch == self.branch)
            and (self.since is None or parse_utc(row.created_at) >= self.since)
        )


def bundles_backwards(end: int) -> Iterator[tuple[int, int]]:
    """The entry bundles holding rows ``[0, end)``, newest first, as ``(index, first seq)``."""
    if end <= 0:
        return
    for index in range((end - 1) // TILE_WIDTH, -1, -1):
        yield index, index * TILE_WIDTH


@dataclass(frozen=True)
class Page:
    """One page of ``kfm ledger list``.

    Attributes:
        rows: the rows shown, oldest first (as they read on a terminal, the newest last).
        next_before: the ``--before`` of the next (older) page; None when no older row is left
            to look at.
        bundles_read: entry bundles read to make the page.
    """

    rows: tuple[LedgerRow, ...]
    next_before: int | None
    bundles_read: int


@dataclass
class PageBuilder:
    """Collects a page from bundles fed newest first; :meth:`feed` says when to stop reading.

    Args:
        limit: rows wanted (1..:data:`MAX_LIMIT`).
        flt: what a row must match.
        before: only rows with ``seq`` below it.
    """

    limit: int
    flt: RowFilter
    before: int
    _found: list[LedgerRow] = field(default_factory=list)
    _bundles: int = 0
    _done: bool = False
    _older_left: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.before < 0:
            raise ValueError("before must be a seq (0 or more)")

    def feed(self, first: int, data: bytes) -> bool:
        """One entry bundle's JSONL (``first`` = seq of its first row); True once the page is complete.

        Raises:
            VerificationError: a stored line that may match is not a valid row.
        """
        self._bundles += 1
        lines = data.split(b"\n")[:-1]
        for offset in range(len(lines) - 1, -1, -1):
            seq = first + offset
            if seq >= self.before:
                continue
            if len(self._found) == self.limit:
                return self._stop(older_left=True)
            line = lines[offset]
            if self.flt.could_match(line):
                row = parse_line(line, seq + 1)
                if self.flt.matches(row):
                    self._found.append(row)
        if first == 0:
            return self._stop(older_left=False)
        if self.flt.since is not None and self._all_older(lines):
            # Rows are appended in the order their bundles finished (give or take the seconds
            # between a bundle's finish and its append), so a whole bundle older than --since
            # means every earlier bundle is older too.
            return self._stop(older_left=False)
        if len(self._found) == self.limit:
            # Full, and older rows remain: they are the next page's.
            return self._stop(older_left=True)
        return False

    def _all_older(self, lines: Sequence[bytes]) -> bool:
        assert self.flt.since is not None
        for line in lines:
            m = _CREATED_AT.search(line)
            if m is None:
                return False
            try:
                if parse_utc(m.group(1).decode("ascii", "replace")) >= self.flt.since:
                    return False
            except ValueError:
                return False
        return True

    def _stop(self, *, older_left: bool) -> bool:
        self._done = True
        self._older_left = older_left
        return True

    def page(self) -> Page:
        """The page so far (complete once :meth:`feed` returned True or every bundle was fed)."""
        rows = tuple(reversed(self._found))
        full = len(rows) == self.limit
        older = self._older_left if self._done else False
        next_before = rows[0].seq if full and older and rows[0].seq > 0 else None
        return Page(rows=rows, next_before=next_before, bundles_read=self._bundles)
