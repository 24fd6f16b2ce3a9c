"""The reconciler's and the coverage report's decisions, on plain data (worker/coverage.py, worker/watch.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from worker._internal.lakefs import CommitInfo
from worker.coverage import (
    CoverageStats,
    FailedMark,
    Floor,
    Horizon,
    Known,
    RowRef,
    coverage_exit_code,
    cut,
    due_retries,
    plan_pass,
    report,
    retry_delay_s,
    through_newest_recorded,
)
from worker.errors import ConfigError
from worker.watch import WatchSpec, parse_since, parse_watched_repos

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "reconcile" / "branch_log.json"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def cid(name: str) -> str:
    """c9 -> '00..0c9' style 64-hex ids, readable in failures."""
    return name.encode().hex().rjust(64, "0")


def ts(v: str) -> datetime:
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def commit(name: str, created: datetime, parents: tuple[str, ...] = (), message: str = "") -> CommitInfo:
    return CommitInfo(id=cid(name), parents=tuple(cid(p) for p in parents), meta_range_id="", message=message,
                      committer="t", creation_date=created, metadata={})


def line(n: int, *, step_s: int = 60) -> list[CommitInfo]:
    """c<n>..c1, newest first, one a minute, c<n> created at T0."""
    return [commit(f"c{i}", T0 - timedelta(seconds=step_s * (n - i)), (f"c{i - 1}",) if i > 1 else ())
            for i in range(n, 0, -1)]


def names(commits: list[CommitInfo] | tuple[CommitInfo, ...]) -> list[str]:
    return [bytes.fromhex(c.id.lstrip("0")).decode() for c in commits]  # names start with a letter: no odd digit


def mark(name: str, *, retryable: bool, failed_at: datetime, attempts: int = 1) -> FailedMark:
    return FailedMark(repo="r", branch="main", commit=cid(name), reason="x", retryable=retryable,
                      failed_at=failed_at, attempts=attempts)


# --- golden: one pass over a branch ----------------------------------------------
def _golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


def _pages(g: dict[str, Any]) -> list[list[CommitInfo]]:
    return [[commit(c["id"], ts(c["created"]), tuple(c["parents"]), c["message"]) for c in page]
            for page in g["pages"]]


def _known(g: dict[str, Any]) -> Known:
    return Known(
        rows={cid(k): RowRef(v[0], v[1]) for k, v in g["rows"].items()},
        failed={cid(k): FailedMark("r", "main", cid(k), v["reason"], v["retryable"], ts(g["now"]))
                for k, v in g["failed"].items()},
        seen={cid(k): ts(v) for k, v in g["seen"].items()},
    )


def test_golden_pass_walks_to_the_watermark_and_requests_oldest_first() -> None:
    g = _golden()
    f = g["horizon"]["floor"]
    horizon = Horizon(floor=Floor(cid(f["commit"]), ts(f["created"]), f["inclusive"]))
    walked: list[CommitInfo] = []
    pages_read = 0
    for page in _pages(g):
        pages_read += 1
        inside, done = cut(page, horizon)
        walked.extend(inside)
        if done:
            break
    exp = g["expected"]
    assert names(walked) == exp["walked"]
    assert pages_read == exp["pages_read"]

    plan = plan_pass(walked, _known(g), ts(g["now"]), last_requested={}, retry_after_s=900, max_requests=100)
    assert names(plan.requests) == exp["requests"]
    assert plan.watermark is not None and names([plan.watermark]) == [exp["watermark"]]
    assert plan.stats == CoverageStats(**exp["stats"])
    assert [(names([commit_of(e.commit, walked)])[0], e.state, e.merge) for e in report(walked, _known(g))] == [
        tuple(x) for x in exp["report"]
    ]


def commit_of(commit_id: str, walked: list[CommitInfo]) -> CommitInfo:
    return next(c for c in walked if c.id == commit_id)


# --- the walk's horizon -----------------------------------------------------------
def test_cut_by_date_keeps_commits_at_or_after_since() -> None:
    log = line(5)  # c5 at T0, c1 at T0 - 4 min
    inside, done = cut(log, Horizon(since=T0 - timedelta(minutes=2)))
    assert names(inside) == ["c5", "c4", "c3"] and done


def test_cut_includes_the_first_watched_commit_and_stops() -> None:
    log = line(5)
    inside, done = cut(log, Horizon(floor=Floor(cid("c2"), log[3].creation_date, inclusive=True)))
    assert names(inside) == ["c5", "c4", "c3", "c2"] and done


def test_cut_excludes_the_watermark() -> None:
    log = line(5)
    inside, done = cut(log, Horizon(floor=Floor(cid("c2"), log[3].creation_date, inclusive=False)))
    assert names(inside) == ["c5", "c4", "c3"] and done


def test_cut_stops_at_older_commits_when_the_floor_left_the_branch() -> None:
    """A branch reset below its watermark: the walk stops by date instead of walking all history."""
    log = line(5)
    gone = Floor(cid("zz"), log[2].creation_date, inclusive=False)  # not on the line; as old as c3
    inside, done = cut(log, Horizon(floor=gone))
    assert names(inside) == ["c5", "c4", "c3"] and done


def test_cut_without_horizon_reads_on() -> None:
    inside, done = cut(line(3), Horizon())
    assert names(inside) == ["c3", "c2", "c1"] and not done


def test_first_sight_stops_at_the_newest_recorded_commit() -> None:
    log = line(5)
    inside, found = through_newest_recorded(log, {cid("c3"), cid("c1")})
    assert names(inside) == ["c5", "c4", "c3"] and found
    inside, found = through_newest_recorded(log, set())
    assert len(inside) == 5 and not found


# --- planning ---------------------------------------------------------------------
def test_recently_seen_or_requested_commits_are_not_requested_again_until_the_timeout() -> None:
    log = line(4)
    known = Known(seen={cid("c2"): T0 - timedelta(seconds=100), cid("c1"): T0 - timedelta(seconds=1000)})
    plan = plan_pass(log, known, T0, last_requested={cid("c4"): T0 - timedelta(seconds=10)},
                     retry_after_s=900, max_requests=100)
    # c1: pending for 1000 s (bundle never finished) -> again; c2 pending 100 s -> wait;
    # c3 missing, never asked -> ask; c4 asked 10 s ago -> wait.
    assert names(plan.requests) == ["c1", "c3"]
    assert plan.stats.pending == 2 and plan.stats.missing == 2
    assert plan.watermark is None


def test_watermark_moves_over_recorded_and_failed_commits_only() -> None:
    log = line(5)
    known = Known(rows={cid("c1"): RowRef(0, "a"), cid("c3"): RowRef(1, "b")},
                  failed={cid("c2"): mark("c2", retryable=False, failed_at=T0)})
    plan = plan_pass(log, known, T0, last_requested={}, retry_after_s=900, max_requests=100)
    assert plan.watermark is not None and names([plan.watermark]) == ["c3"]
    assert names(plan.requests) == ["c4", "c5"]


def test_max_requests_defers_the_newest() -> None:
    plan = plan_pass(line(5), Known(), T0, last_requested={}, retry_after_s=900, max_requests=2)
    assert names(plan.requests) == ["c1", "c2"] and plan.deferred == 3
    assert plan.stats.requested == 2 and plan.stats.missing == 5
    assert plan.stats.oldest_missing_age_s == 240.0


def test_nothing_to_do() -> None:
    log = line(2)
    known = Known(rows={cid("c1"): RowRef(0, "a"), cid("c2"): RowRef(1, "b")})
    plan = plan_pass(log, known, T0, last_requested={}, retry_after_s=900, max_requests=10)
    assert plan.requests == () and plan.stats == CoverageStats()
    assert plan.watermark is not None and names([plan.watermark]) == ["c2"]


# --- failed commits ---------------------------------------------------------------
def test_permanent_failures_are_never_due_retryable_ones_back_off() -> None:
    marks = [
        mark("p", retryable=False, failed_at=T0 - timedelta(days=1)),
        mark("r1", retryable=True, failed_at=T0 - timedelta(seconds=61)),  # 1st: after 60 s
        mark("r2", retryable=True, failed_at=T0 - timedelta(seconds=100), attempts=2),  # 2nd: after 120 s
        mark("r3", retryable=True, failed_at=T0 - timedelta(seconds=200), attempts=2),
        mark("ok", retryable=True, failed_at=T0 - timedelta(days=1)),
    ]
    due, outstanding, stale = due_retries(marks, {cid("ok")}, T0, last_requested={}, base_s=60, cap_s=3600)
    assert sorted(m.commit for m in due) == sorted([cid("r1"), cid("r3")])
    assert len(outstanding) == 4 and [m.commit for m in stale] == [cid("ok")]
    due, _, _ = due_retries(marks, set(), T0, last_requested={cid("r1"): T0 - timedelta(seconds=5)},
                            base_s=60, cap_s=3600)
    assert cid("r1") not in {m.commit for m in due}


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay_s(n, 60, 600) for n in (1, 2, 3, 4, 5, 10)] == [60, 120, 240, 480, 600, 600]


# --- the report and its exit code -------------------------------------------------
def test_exit_code_counts_missing_and_failed_older_than_the_grace_period() -> None:
    log = line(3)  # c3 now, c2 1 min old, c1 2 min old
    known = Known(rows={cid("c1"): RowRef(0, "a")}, seen={cid("c2"): T0})
    entries = report(log, known)
    assert [e.state for e in entries] == ["missing", "pending", "recorded"]
    assert coverage_exit_code(entries, T0, grace_s=0) == 1  # c3 is missing
    assert coverage_exit_code(entries, T0, grace_s=30) == 0  # ... but younger than 30 s
    failed = Known(rows={cid("c1"): RowRef(0, "a")}, failed={cid("c2"): mark("c2", retryable=False, failed_at=T0)},
                   seen={cid("c3"): T0})
    entries = report(log, failed)
    assert [e.state for e in entries] == ["pending", "failed", "recorded"]
    assert entries[1].reason == "x" and entries[1].retryable is False and entries[2].seq == 0
    assert coverage_exit_code(entries, T0, grace_s=30) == 1
    assert coverage_exit_code(entries, T0, grace_s=300) == 0


def test_stats_add_up_over_branches() -> None:
    a = CoverageStats(missing=1, oldest_missing_age_s=10.0, failed=1, requested=1)
    b = CoverageStats(missing=2, oldest_missing_age_s=99.0, pending=3, hook_runs_failed=4)
    assert a + b == CoverageStats(missing=3, oldest_missing_age_s=99.0, failed=1, pending=3, requested=1,
                                  hook_runs_failed=4)
    assert (CoverageStats() + CoverageStats()).oldest_missing_age_s is None


# --- configuration ----------------------------------------------------------------
def test_watched_repos_parse() -> None:
    assert parse_watched_repos("") == []
    assert parse_watched_repos(" kfm-data , models:main|staging, kfm-data:dev ") == [
        WatchSpec("kfm-data", ("dev",)), WatchSpec("models", ("main", "staging"))
    ]


@pytest.mark.parametrize("bad", ["Bad_Repo", "repo:", "repo:main|bad..name", "ab"])
def test_watched_repos_refuse_bad_entries(bad: str) -> None:
    with pytest.raises(ConfigError, match="KFM_WATCHED_REPOS"):
        parse_watched_repos(bad)


def test_since_is_utc() -> None:
    assert parse_since("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_since("2026-01-31T12:00:00+02:00") == datetime(2026, 1, 31, 10, tzinfo=UTC)
    for bad in ("2026-01-31T12:00:00", "yesterday", "2026-13-01"):
        with pytest.raises(ConfigError):
            parse_since(bad)
