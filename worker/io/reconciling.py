"""The reconciler: every commit of a watched branch gets a bundle request, webhook or not.

lakeFS runs a post-commit/post-merge hook once and never again; a webhook lost
while ``kfm hooks serve`` or Kafka was down leaves a commit nobody bundles.
One pass, for each watched repository and branch (docs/coverage.md):

1. walk the branch's first-parent log (paged, one lakeFS call per page and a
   pause between calls) from the head down to the branch's watermark (or, on
   first sight, to its horizon);
2. ask the ledger (:class:`~worker.io.ledger_reader.LedgerReader`) and the
   coverage markers what each commit's state is;
3. publish a ``CommitEvent(source="reconcile")`` on the events topic for each
   commit that is neither recorded, failed, nor recently seen or requested,
   oldest first, with the same key as a webhook; duplicates are harmless (the
   ledger writer keeps one row per commit);
4. retry retryable failures on a backoff, never permanent ones (only
   ``--retry-failed`` or ``kfm checkpoint`` does);
5. read lakeFS's action runs and report failed runs of our action;
6. move the watermark up over the settled commits and publish the pass's
   figures in :data:`FIGURES` (``reconcile.pass`` in the log).

The worker runs a pass at start and then every ``KFM_RECONCILE_INTERVAL_S``,
on the group leader only (``worker/app.py``); ``kfm reconcile`` runs one now.
The decisions themselves are pure functions in :mod:`worker.coverage`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from worker import metrics
from worker._internal.lakefs import CommitInfo
from worker.constants import TOPIC_EVENTS
from worker.coverage import (
    CoverageStats,
    FailedMark,
    Floor,
    HookRunFailure,
    Horizon,
    Known,
    RowRef,
    cut,
    due_retries,
    plan_pass,
    through_newest_recorded,
)
from worker.errors import Error, LeadershipLostError, NotFoundError
from worker.events import CommitEvent, event_key
from worker.io import markers
from worker.io.ledger_reader import LedgerReader
from worker.io.runtime import Runtime
from worker.progress import Progress
from worker.tracing import headers_with_trace
from worker.watch import WatchSpec

__all__ = [
    "ACTION_NAME",
    "FIGURES",
    "Figures",
    "PassResult",
    "Reconciler",
    "Requested",
    "Target",
    "failed_hook_runs",
    "known_for",
    "reconcile_tick",
    "walk",
    "watched_targets",
]

log = structlog.get_logger("kfm.reconciler")

# The action `kfm hooks install` commits (its template is hooks/lakefs_action.yaml).
ACTION_NAME = "kfm-rollback-registry"
RETRY_CAP_S = 3600.0
_LOOKUPS = 8  # concurrent ledger/marker reads
_MAX_INSPECTED_RUNS = 10_000


@dataclass(frozen=True)
class Target:
    """One watched branch; ``registered`` is ``kfm hooks install``'s commit and its time, if any."""

    repo: str
    branch: str
    registered: tuple[str, datetime] | None = None


@dataclass(frozen=True)
class Requested:
    repo: str
    branch: str
    commit: str
    why: str  # missing | pending | retry | retry-failed
    created: datetime


@dataclass
class Figures:
    """The latest pass's figures: the one place a metrics endpoint reads them from."""

    total: CoverageStats = field(default_factory=CoverageStats)
    by_branch: dict[tuple[str, str], CoverageStats] = field(default_factory=dict)
    passes: int = 0
    last_pass_at: datetime | None = None
    newest_failed_hook_run: str | None = None


FIGURES = Figures()


@dataclass
class PassResult:
    requested: list[Requested] = field(default_factory=list)
    total: CoverageStats = field(default_factory=CoverageStats)
    by_branch: dict[tuple[str, str], CoverageStats] = field(default_factory=dict)
    hook_runs: list[HookRunFailure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    complete: bool = True  # False: leadership was lost part way


async def watched_targets(rt: Runtime, only: tuple[str, str | None] | None = None) -> list[Target]:
    """``KFM_WATCHED_REPOS`` plus ``kfm hooks install`` registrations, minus branches the bundler ignores."""
    s = rt.settings
    defaults = list(s.watched_branch_names)
    specs = list(s.watch_specs)
    regs = await markers.registrations(rt.bucket)
    if only is not None:
        repo, branch = only
        specs = [sp for sp in specs if sp.repo == repo]
        regs = [r for r in regs if r.repo == repo]
        if branch:  # asked for by name: watched or not
            specs = [WatchSpec(repo, (branch,))]
            regs = [r for r in regs if r.branch == branch]
        elif not specs and not regs:
            specs = [WatchSpec(repo)]
    targets: dict[tuple[str, str], Target] = {}
    for spec in specs:
        branches = list(spec.branches) or defaults or [await rt.lakefs.default_branch(spec.repo)]
        for b in branches:
            targets[(spec.repo, b)] = Target(spec.repo, b)
    for reg in regs:
        targets[(reg.repo, reg.branch)] = Target(reg.repo, reg.branch, (reg.installed_commit, reg.installed_at))
    out = []
    for (repo, branch), t in sorted(targets.items()):
        if not s.branch_watched(branch):
            log.warning("reconcile.branch_ignored", repository_id=repo, branch_id=branch,
                        reason="not in KFM_WATCHED_BRANCHES: the bundler would skip its events")
            continue
        out.append(t)
    return out


async def walk(
    rt: Runtime,
    repo: str,
    branch: str,
    horizon: Horizon,
    rows: dict[str, RowRef | None],
    *,
    still_leader: Callable[[], bool] = lambda: True,
    progress: Progress | None = None,
) -> tuple[list[CommitInfo], bool]:
    """The branch's first-parent commits inside the horizon, newest first; True if a recorded commit ended it.

    ``progress`` counts the commits walked (their number is known only at the end).
    """
    out: list[CommitInfo] = []
    after = ""
    s = rt.settings
    while True:
        if not still_leader():
            raise LeadershipLostError
        page, after = await rt.lakefs.log_page(repo, branch, after=after, amount=s.reconcile_page_size)
        inside, done = cut(page, horizon)
        found = False
        if horizon.stop_at_recorded:
            await _rows(rt, (c.id for c in inside), rows)
            inside, found = through_newest_recorded(inside, {c for c, r in rows.items() if r is not None})
        out.extend(inside)
        if progress is not None:
            progress.advance(len(inside))
        if done or found or not after:
            return out, found
        await asyncio.sleep(s.reconcile_pause_s)


async def _bounded(jobs: Iterable[Callable[[], Awaitable[None]]]) -> None:
    sem = asyncio.Semaphore(_LOOKUPS)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


async def _rows(rt: Runtime, commits: Iterable[str], rows: dict[str, RowRef | None]) -> None:
    """Fill ``rows`` (a per-pass cache) with the ledger row of each commit not looked up yet."""
    reader = LedgerReader(rt.bucket)
    todo = [c for c in dict.fromkeys(commits) if c not in rows]

    def job(commit: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            row = await reader.row_for(commit)
            rows[commit] = None if row is None else RowRef(row.seq, row.checksums.artifact_sha256)

        return run

    await _bounded(job(c) for c in todo)


async def known_for(
    rt: Runtime, repo: str, commits: list[CommitInfo], rows: dict[str, RowRef | None], failed: list[FailedMark]
) -> Known:
    """Rows, failed markers and first-seen times of the walked commits."""
    await _rows(rt, (c.id for c in commits), rows)
    failed_by = {m.commit: m for m in failed}
    unrecorded = [c.id for c in commits if rows.get(c.id) is None and c.id not in failed_by]
    seen: dict[str, datetime] = {}

    def job(commit: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            t = await markers.seen_at(rt.bucket, repo, commit)
            if t is not None:
                seen[commit] = t

        return run

    await _bounded(job(c) for c in unrecorded)
    return Known(
        rows={c: r for c, r in rows.items() if r is not None},
        failed={c: m for c, m in failed_by.items() if rows.get(c) is None},
        seen=seen,
    )


async def failed_hook_runs(
    rt: Runtime,
    repo: str,
    branch: str,
    *,
    not_before: datetime | None,
    max_pages: int | None,
    inspected: dict[str, bool] | None = None,
) -> list[HookRunFailure]:
    """Failed runs of our action on ``branch``, newest first, back to ``not_before`` or ``max_pages`` pages."""
    s = rt.settings
    inspected = {} if inspected is None else inspected
    out: list[HookRunFailure] = []
    after, pages = "", 0
    while True:
        runs, after = await rt.lakefs.action_runs(repo, branch=branch, after=after, amount=s.reconcile_page_size)
        pages += 1
        for run in runs:
            if not_before is not None and run.start_time < not_before:
                return out
            if run.status != "failed" or run.event_type not in ("post-commit", "post-merge"):
                continue
            if run.run_id not in inspected:
                await asyncio.sleep(s.reconcile_pause_s)
                hooks = await rt.lakefs.run_hooks(repo, run.run_id)
                inspected[run.run_id] = any(h.action == ACTION_NAME and h.status == "failed" for h in hooks)
            if inspected[run.run_id]:
                out.append(HookRunFailure(repo, run.run_id, run.branch, run.commit_id, run.event_type, run.start_time))
        if not after or (max_pages is not None and pages >= max_pages):
            return out
        await asyncio.sleep(s.reconcile_pause_s)


def _event(repo: str, branch: str, c: CommitInfo, now: datetime) -> CommitEvent:
    meta = {k[:256]: v[:4096] for k, v in list(c.metadata.items())[:256]}
    return CommitEvent(
        source="reconcile",
        repository_id=repo,
        branch_id=branch,
        commit_id=c.id,
        event_time=now,
        action_name="kfm reconcile",
        source_ref=branch,
        commit_message=c.message[:65536],
        committer=c.committer[:4096],
        commit_metadata=meta,
    )


class Reconciler:
    """Runs passes; remembers what it requested so a slow bundle is not asked for again every pass."""

    def __init__(self, rt: Runtime, *, still_leader: Callable[[], bool] = lambda: True) -> None:
        self.rt = rt
        self.still_leader = still_leader
        self._requested: dict[str, datetime] = {}
        self._inspected_runs: dict[str, bool] = {}
        self._newest_failed_run: str | None = None

    async def run_pass(
        self,
        *,
        only: tuple[str, str | None] | None = None,
        since: datetime | None = None,
        retry_failed: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> PassResult:
        """One pass over every watched branch (or ``only`` one repository/branch).

        ``since`` walks back to that date whatever the watermark says (a
        back-fill; the watermark is left alone); ``retry_failed`` requests every
        failed commit again after clearing its marker; ``dry_run`` publishes
        and writes nothing; ``progress`` counts the commits walked (a back-fill's bar).
        """
        started = time.monotonic()
        result = PassResult()
        self._forget_old_requests()
        try:
            targets = await watched_targets(self.rt, only)
        except Error as e:
            result.errors.append(e.diagnostics())
            log.error("reconcile.targets_failed", error=e.diagnostics())
            targets = []
        failed_cache: dict[str, list[FailedMark]] = {}
        try:
            for t in targets:
                try:
                    stats = await self._branch(t, result, failed_cache, since=since, retry_failed=retry_failed,
                                               dry_run=dry_run, progress=progress)
                except Error as e:
                    result.errors.append(f"{t.repo}/{t.branch}: {e.diagnostics()}")
                    log.error("reconcile.branch_failed", repository_id=t.repo, branch_id=t.branch,
                              error=e.diagnostics())
                    continue
                result.by_branch[(t.repo, t.branch)] = stats
                result.total = result.total + stats
        except LeadershipLostError:
            result.complete = False
            log.info("reconcile.leadership_lost", requested=len(result.requested))
        newest = max(result.hook_runs, key=lambda r: r.start_time, default=None)
        if newest is not None and newest.run_id != self._newest_failed_run:
            # Once per new failure, not every pass: the pass line carries the count.
            log.warning("reconcile.hook_runs_failed", count=result.total.hook_runs_failed,
                        newest_run_id=newest.run_id, newest_commit_id=newest.commit_id,
                        repository_id=newest.repo, branch_id=newest.branch)
            self._newest_failed_run = newest.run_id
        if not dry_run and result.complete:
            FIGURES.total, FIGURES.by_branch = result.total, dict(result.by_branch)
            FIGURES.passes += 1
            FIGURES.last_pass_at = datetime.now(UTC)
            FIGURES.newest_failed_hook_run = newest.run_id if newest else None
            metrics.RECONCILE_MISSING.set(result.total.missing)
            metrics.RECONCILE_OLDEST_MISSING_AGE.set(result.total.oldest_missing_age_s or 0.0)
        tot = result.total
        log.info("reconcile.pass", branches=len(result.by_branch), missing=tot.missing,
                 oldest_missing_age_s=tot.oldest_missing_age_s, failed=tot.failed, pending=tot.pending,
                 requested=tot.requested, hook_runs_failed=tot.hook_runs_failed, errors=len(result.errors),
                 dry_run=dry_run, duration_s=round(time.monotonic() - started, 3))
        return result

    def _forget_old_requests(self) -> None:
        """Keep the in-memory request times only as long as a decision can use them."""
        keep_s = max(self.rt.settings.reconcile_pending_timeout_s, RETRY_CAP_S)
        cutoff = datetime.now(UTC) - timedelta(seconds=keep_s)
        self._requested = {c: t for c, t in self._requested.items() if t >= cutoff}
        if len(self._inspected_runs) > _MAX_INSPECTED_RUNS:
            self._inspected_runs.clear()

    def _horizon(self, t: Target, state: markers.BranchState | None, since: datetime | None) -> Horizon:
        if since is not None:
            return Horizon(since=since)
        configured = self.rt.settings.reconcile_horizon
        if state is not None:
            return Horizon(since=configured, floor=state.floor())
        if configured is not None:
            return Horizon(since=configured)
        if t.registered is not None:
            return Horizon(floor=Floor(t.registered[0], t.registered[1], inclusive=True))
        return Horizon(stop_at_recorded=True)

    async def _branch(
        self,
        t: Target,
        result: PassResult,
        failed_cache: dict[str, list[FailedMark]],
        *,
        since: datetime | None,
        retry_failed: bool,
        dry_run: bool,
        progress: Progress | None = None,
    ) -> CoverageStats:
        rt, s = self.rt, self.rt.settings
        state = await markers.load_state(rt.bucket, t.repo, t.branch)
        horizon = self._horizon(t, state, since)
        rows: dict[str, RowRef | None] = {}
        walked, found_row = await walk(rt, t.repo, t.branch, horizon, rows, still_leader=self.still_leader,
                                       progress=progress)
        first_sight = state is None and since is None
        if first_sight and horizon.stop_at_recorded and not found_row:
            walked = walked[:1]  # never recorded: watching starts at the head, older history is not back-filled
        if t.repo not in failed_cache:
            failed_cache[t.repo] = await markers.failed_marks(rt.bucket, t.repo)
        marks = [m for m in failed_cache[t.repo] if m.branch == t.branch]
        known = await known_for(rt, t.repo, walked, rows, marks)
        now = datetime.now(UTC)
        plan = plan_pass(walked, known, now, last_requested=self._requested,
                         retry_after_s=s.reconcile_pending_timeout_s, max_requests=s.reconcile_max_requests)
        await _rows(rt, (m.commit for m in marks), rows)
        recorded = {c for c, r in rows.items() if r is not None}
        due, outstanding, stale = due_retries(
            marks, recorded, now, last_requested=self._requested,
            base_s=s.reconcile_interval_s or 60.0, cap_s=RETRY_CAP_S,
        )
        if retry_failed:
            due = outstanding
        budget = s.reconcile_max_requests - len(plan.requests)
        for c in plan.requests:
            why = "pending" if c.id in known.seen else "missing"
            await self._request(result, t, _event(t.repo, t.branch, c, now), created=c.creation_date, why=why,
                                dry_run=dry_run)
            if why == "pending" and not dry_run:
                await markers.touch_seen(rt.bucket, t.repo, t.branch, c.id, now)
        for m in due[: max(budget, 0)]:
            event = CommitEvent.model_validate(m.event, strict=False).model_copy(
                update={"source": "reconcile", "event_time": now, "action_name": "kfm reconcile"}
            )
            if retry_failed and not dry_run:
                await markers.clear_failed(rt.bucket, t.repo, m.commit)
            created = next((c.creation_date for c in walked if c.id == m.commit), m.failed_at)
            await self._request(result, t, event, created=created, why="retry-failed" if retry_failed else "retry",
                                dry_run=dry_run)
        if not dry_run:
            for m in stale:
                await markers.clear_failed(rt.bucket, t.repo, m.commit)
        if plan.deferred:
            log.info("reconcile.deferred", repository_id=t.repo, branch_id=t.branch, deferred=plan.deferred)
        hook_runs = await self._hook_runs(t, horizon, state)
        result.hook_runs.extend(hook_runs)
        if not dry_run and since is None:
            await self._save_state(t, state, walked, plan.watermark, now)
        return CoverageStats(
            missing=plan.stats.missing,
            oldest_missing_age_s=plan.stats.oldest_missing_age_s,
            failed=len(outstanding) - (len(due) if retry_failed else 0),
            pending=plan.stats.pending,
            requested=len(plan.requests) + min(len(due), max(budget, 0)),
            hook_runs_failed=len(hook_runs),
        )

    async def _request(
        self, result: PassResult, t: Target, event: CommitEvent, *, created: datetime, why: str, dry_run: bool
    ) -> None:
        if not self.still_leader():
            raise LeadershipLostError
        if not dry_run:
            await self.rt.producer.send(
                self.rt.settings.topic(TOPIC_EVENTS),
                event.to_bytes(),
                key=event_key(event.repository_id, event.commit_id),
                headers=headers_with_trace(),
            )
            self._requested[event.commit_id] = datetime.now(UTC)
        result.requested.append(Requested(t.repo, t.branch, event.commit_id, why, created))
        log.info("reconcile.requested", repository_id=t.repo, branch_id=t.branch, commit_id=event.commit_id,
                 source=event.source, why=why, dry_run=dry_run)

    async def _hook_runs(
        self, t: Target, horizon: Horizon, state: markers.BranchState | None
    ) -> list[HookRunFailure]:
        """Failed webhook runs since the first watched commit; one page of runs per pass."""
        floor = state.horizon_floor() if state is not None else horizon.floor
        not_before = horizon.since or (floor.created if floor else None)
        try:
            return await failed_hook_runs(self.rt, t.repo, t.branch, not_before=not_before, max_pages=1,
                                          inspected=self._inspected_runs)
        except NotFoundError:
            return []

    async def _save_state(
        self,
        t: Target,
        state: markers.BranchState | None,
        walked: list[CommitInfo],
        watermark: CommitInfo | None,
        now: datetime,
    ) -> None:
        if state is None:
            if not walked:
                return  # nothing inside the horizon yet: decide again next pass
            oldest = walked[-1]
            new = markers.BranchState.new((oldest.id, oldest.creation_date),
                                          None if watermark is None else (watermark.id, watermark.creation_date), now)
        elif watermark is None or (state.watermark is not None and state.watermark.commit == watermark.id):
            return
        else:
            new = state.with_watermark(watermark.id, watermark.creation_date, now)
        await markers.save_state(self.rt.bucket, t.repo, t.branch, new)


_worker: Reconciler | None = None
_next_due = 0.0


async def reconcile_tick(rt: Runtime, still_leader: Callable[[], bool]) -> PassResult | None:
    """Called every second on the group leader: run a pass at start and then every interval."""
    global _worker, _next_due  # noqa: PLW0603 - one reconciler per worker process
    interval = rt.settings.reconcile_interval_s
    if interval <= 0 or time.monotonic() < _next_due:
        return None
    if _worker is None or _worker.rt is not rt:
        _worker = Reconciler(rt, still_leader=still_leader)
    try:
        return await _worker.run_pass()
    finally:
        _next_due = time.monotonic() + interval

