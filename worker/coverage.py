"""Coverage decisions without I/O: which commits of a watched branch still need a bundle.

The reconciler (:mod:`worker.io.reconciling`) and ``kfm coverage`` fetch a
branch's first-parent commit log page by page (newest first), the ledger rows
and the coverage markers; everything they decide from those facts lives here,
so it is tested with plain data (tests/unit/test_reconcile.py). What counts,
and why, is in docs/coverage.md.

Words used throughout:

- *horizon*: where a walk down the log stops (a date, a commit, or the
  newest commit that has a row); commits past it are not looked at.
- *settled*: a commit that has a row, or a ``failed`` marker (retried only
  when asked, or on a backoff for retryable failures).
- *watermark*: the newest walked commit such that it and every walked commit
  older than it are settled; the next pass stops there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from worker._internal.lakefs import CommitInfo

__all__ = [
    "CommitCoverage",
    "CommitState",
    "CoverageStats",
    "FailedMark",
    "Floor",
    "HookRunFailure",
    "Horizon",
    "Known",
    "Plan",
    "RowRef",
    "coverage_exit_code",
    "cut",
    "due_retries",
    "plan_pass",
    "report",
    "retry_delay_s",
    "state_of",
    "through_newest_recorded",
]

CommitState = Literal["recorded", "pending", "missing", "failed"]


@dataclass(frozen=True)
class Floor:
    """A commit the walk stops at: the first watched commit (inclusive) or the watermark (exclusive).

    ``created`` also stops the walk at any older commit, so a branch reset to
    before the floor does not send the walk to the start of history.
    """

    commit: str
    created: datetime
    inclusive: bool


@dataclass(frozen=True)
class Horizon:
    since: datetime | None = None
    floor: Floor | None = None
    # First sight of a branch with no other horizon: stop at (and include)
    # the newest commit that has a ledger row.
    stop_at_recorded: bool = False


@dataclass(frozen=True)
class RowRef:
    seq: int
    bundle_sha256: str


@dataclass(frozen=True)
class FailedMark:
    """``coverage/failed/<repo>/<commit>.json``: the bundler gave up on this commit."""

    repo: str
    branch: str
    commit: str
    reason: str
    retryable: bool
    failed_at: datetime
    attempts: int = 1
    event: Mapping[str, object] = field(default_factory=dict)  # the event that failed, to request it again


@dataclass(frozen=True)
class Known:
    """What the registry knows about commits: rows, failed markers, first-seen times."""

    rows: Mapping[str, RowRef] = field(default_factory=dict)
    failed: Mapping[str, FailedMark] = field(default_factory=dict)
    seen: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class CoverageStats:
    """The figures of one reconcile pass (or their sum over branches)."""

    missing: int = 0
    oldest_missing_age_s: float | None = None
    failed: int = 0
    pending: int = 0
    requested: int = 0
    hook_runs_failed: int = 0

    def __add__(self, other: CoverageStats) -> CoverageStats:
        ages = [a for a in (self.oldest_missing_age_s, other.oldest_missing_age_s) if a is not None]
        return CoverageStats(
            missing=self.missing + other.missing,
            oldest_missing_age_s=max(ages) if ages else None,
            failed=self.failed + other.failed,
            pending=self.pending + other.pending,
            requested=self.requested + other.requested,
            hook_runs_failed=self.hook_runs_failed + other.hook_runs_failed,
        )


@dataclass(frozen=True)
class Plan:
    requests: tuple[CommitInfo, ...]  # oldest first
    watermark: CommitInfo | None  # None: the walk advanced nothing
    stats: CoverageStats
    deferred: int = 0  # over max_requests; the next pass asks for them


@dataclass(frozen=True)
class HookRunFailure:
    """A lakeFS action run in which our action's hook failed (the webhook was not delivered)."""

    repo: str
    run_id: str
    branch: str
    commit_id: str
    event_type: str
    start_time: datetime


@dataclass(frozen=True)
class CommitCoverage:
    """One line of ``kfm coverage``."""

    commit: str
    created: datetime
    message: str
    merge: bool
    state: CommitState
    seq: int | None = None
    bundle_sha256: str | None = None
    reason: str | None = None
    retryable: bool | None = None
    seen_at: datetime | None = None


def cut(page: Sequence[CommitInfo], horizon: Horizon) -> tuple[list[CommitInfo], bool]:
    """The part of one log page (newest first) inside the date/commit horizon, and whether the walk ends here."""
    out: list[CommitInfo] = []
    for c in page:
        if horizon.since is not None and c.creation_date < horizon.since:
            return out, True
        f = horizon.floor
        if f is not None:
            if c.id == f.commit:
                if f.inclusive:
                    out.append(c)
                return out, True
            if c.creation_date < f.created:
                return out, True
        out.append(c)
    return out, False


def through_newest_recorded(commits: Sequence[CommitInfo], recorded: Set[str]) -> tuple[list[CommitInfo], bool]:
    """Commits (newest first) down to and including the first that has a row; True if one was found."""
    for i, c in enumerate(commits):
        if c.id in recorded:
            return list(commits[: i + 1]), True
    return list(commits), False


def state_of(commit: str, known: Known) -> CommitState:
    """A row wins over a failed marker (a retry succeeded), which wins over a first-seen time."""
    if commit in known.rows:
        return "recorded"
    if commit in known.failed:
        return "failed"
    if commit in known.seen:
        return "pending"
    return "missing"


def plan_pass(
    walked: Sequence[CommitInfo],
    known: Known,
    now: datetime,
    *,
    last_requested: Mapping[str, datetime],
    retry_after_s: float,
    max_requests: int,
) -> Plan:
    """Decide one pass over the commits a walk found (newest first).

    A commit is requested when it is neither recorded nor failed, and neither
    seen by the bundler nor requested within ``retry_after_s`` (a pending
    commit whose bundle never finished is asked for again after that long).
    Requests go oldest first, at most ``max_requests``.
    """
    requests: list[CommitInfo] = []
    watermark: CommitInfo | None = None
    settled_so_far = True
    missing = pending = 0
    oldest_missing: CommitInfo | None = None
    for c in reversed(walked):
        st = state_of(c.id, known)
        if st in ("recorded", "failed"):
            if settled_so_far:
                watermark = c
            continue
        settled_so_far = False
        if st == "missing":
            missing += 1
            oldest_missing = oldest_missing or c
        else:
            pending += 1
        times = [t for t in (known.seen.get(c.id), last_requested.get(c.id)) if t is not None]
        if not times or (now - max(times)).total_seconds() >= retry_after_s:
            requests.append(c)
    stats = CoverageStats(
        missing=missing,
        oldest_missing_age_s=(now - oldest_missing.creation_date).total_seconds() if oldest_missing else None,
        pending=pending,
        requested=min(len(requests), max_requests),
    )
    return Plan(tuple(requests[:max_requests]), watermark, stats, deferred=max(0, len(requests) - max_requests))


def retry_delay_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Backoff of a retryable failure: base, 2 x base, 4 x base, ... up to cap."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), cap_s))


def due_retries(
    marks: Iterable[FailedMark],
    recorded: Set[str],
    now: datetime,
    *,
    last_requested: Mapping[str, datetime],
    base_s: float,
    cap_s: float,
) -> tuple[list[FailedMark], list[FailedMark], list[FailedMark]]:
    """Split failed markers into (due for an automatic retry, outstanding, stale).

    Stale markers belong to commits that have a row by now (a retry worked).
    Permanent failures are never due: only ``kfm reconcile --retry-failed`` or
    ``kfm checkpoint`` asks for them again. A retryable one is due once its
    backoff has passed since it failed and since it was last requested.
    Due ones come oldest failure first.
    """
    due: list[FailedMark] = []
    outstanding: list[FailedMark] = []
    stale: list[FailedMark] = []
    for m in sorted(marks, key=lambda m: (m.failed_at, m.commit)):
        if m.commit in recorded:
            stale.append(m)
            continue
        outstanding.append(m)
        since = max(t for t in (m.failed_at, last_requested.get(m.commit)) if t is not None)
        if m.retryable and (now - since).total_seconds() >= retry_delay_s(m.attempts, base_s, cap_s):
            due.append(m)
    return due, outstanding, stale


def report(walked: Sequence[CommitInfo], known: Known) -> list[CommitCoverage]:
    """One entry per commit (newest first, as walked)."""
    out: list[CommitCoverage] = []
    for c in walked:
        entry = CommitCoverage(
            commit=c.id, created=c.creation_date, message=c.message.splitlines()[0] if c.message else "",
            merge=len(c.parents) > 1, state=state_of(c.id, known), seen_at=known.seen.get(c.id),
        )
        if entry.state == "recorded":
            row = known.rows[c.id]
            entry = replace(entry, seq=row.seq, bundle_sha256=row.bundle_sha256)
        elif entry.state == "failed":
            mark = known.failed[c.id]
            entry = replace(entry, reason=mark.reason, retryable=mark.retryable)
        out.append(entry)
    return out


def coverage_exit_code(entries: Iterable[CommitCoverage], now: datetime, grace_s: float) -> int:
    """1 if a commit older than the grace period is missing or failed, else 0."""
    for e in entries:
        if e.state in ("missing", "failed") and (now - e.created).total_seconds() >= grace_s:
            return 1
    return 0
