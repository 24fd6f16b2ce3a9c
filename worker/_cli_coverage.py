"""``kfm reconcile`` and ``kfm coverage``, plus the coverage side of ``kfm hooks install`` and ``kfm checkpoint``.

Kept out of :mod:`worker._cli` so that module stays a table of verbs; it
wires these in with :func:`add_coverage_commands`. What the states and exit
codes mean is in docs/coverage.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from worker.cli_output import Exit, Output, format_table
from worker.errors import Error, UsageError
from worker.utc import format_utc

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    from worker.config import Settings
    from worker.coverage import CommitCoverage, HookRunFailure, Horizon
    from worker.io.runtime import Runtime

__all__ = ["add_coverage_commands", "forget_failure", "register_watched_branch"]


def _run(coro: Coroutine[Any, Any, int]) -> int:
    import asyncio  # here, not at the top: `kfm --help` does not need it

    return asyncio.run(coro)


def _ts(t: datetime | None) -> str | None:
    return None if t is None else format_utc(t)


def _check_ids(repo: str | None, branch: str | None) -> None:
    from worker.ids import check_branch, check_repo

    try:
        if repo is not None:
            check_repo(repo)
        if branch is not None:
            check_branch(branch)
    except ValueError as e:
        raise UsageError(f"--repo/--branch: {e}") from None


# --- kfm reconcile ---------------------------------------------------------------
def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from worker._cli_common import parse_since
    from worker.io.reconciling import Reconciler
    from worker.io.runtime import Runtime
    from worker.progress import Meters

    if args.branch and not args.repo:
        raise UsageError("--branch needs --repo")
    _check_ids(args.repo, args.branch)
    since = parse_since(args.since) if args.since else None

    async def go() -> int:
        async with await Runtime.open(settings) as rt:
            with Meters.for_args(args).bar("commits walked", unit="commits") as progress:
                result = await Reconciler(rt).run_pass(
                    only=(args.repo, args.branch) if args.repo else None,
                    since=since,
                    retry_failed=args.retry_failed,
                    dry_run=args.dry_run,
                    progress=progress,
                )
        out = Output.of(args)  # --json: JSON lines, one per request, then the summary (docs/cli.md)
        if result.requested and not out.json:
            out.item(None, "\n".join(format_table(("REPOSITORY", "BRANCH", "COMMIT", "WHY", "CREATED"), [
                (r.repo, r.branch, r.commit, r.why, _ts(r.created)) for r in result.requested])))
        elif out.json:
            for r in result.requested:
                out.item({"repository": r.repo, "branch": r.branch, "commit": r.commit, "why": r.why,
                          "created": _ts(r.created), "published": not args.dry_run}, "")
        t = result.total
        verb = "would request" if args.dry_run else "requested"
        out.item({"branches": len(result.by_branch), "requested": len(result.requested),
                  "missing": t.missing, "pending": t.pending, "failed": t.failed,
                  "hook_runs_failed": t.hook_runs_failed, "dry_run": args.dry_run},
                 f"{len(result.by_branch)} branches: {verb} {len(result.requested)} bundles; {t.missing} missing, "
                 f"{t.pending} pending, {t.failed} failed, {t.hook_runs_failed} failed hook runs")
        for e in result.errors:
            print(f"kfm: error: {e}", file=sys.stderr)
        return Exit.UNAVAILABLE if result.errors else Exit.OK

    return _run(go())


# --- kfm coverage ----------------------------------------------------------------
async def _coverage_horizon(rt: Runtime, repo: str, branch: str, since: datetime | None) -> Horizon:
    """The report's window: --since, else the branch's first watched commit, else all of its history."""
    from worker.coverage import Floor, Horizon
    from worker.io import markers

    if since is not None:
        return Horizon(since=since)
    configured = rt.settings.reconcile_horizon
    state = await markers.load_state(rt.bucket, repo, branch)
    if state is not None:
        return Horizon(since=configured, floor=state.horizon_floor())
    reg = next((r for r in await markers.registrations(rt.bucket) if (r.repo, r.branch) == (repo, branch)), None)
    if reg is not None:
        return Horizon(since=configured, floor=Floor(reg.installed_commit, reg.installed_at, inclusive=True))
    return Horizon(since=configured)


def _coverage(args: argparse.Namespace, settings: Settings) -> int:
    from worker._cli_common import parse_since
    from worker.coverage import RowRef, coverage_exit_code, report
    from worker.errors import NotFoundError
    from worker.io import markers
    from worker.io.reconciling import failed_hook_runs, known_for, walk
    from worker.io.runtime import Runtime
    from worker.progress import Meters

    _check_ids(args.repo, args.branch)
    since = parse_since(args.since) if args.since else None
    grace = settings.coverage_grace_s if args.grace_s is None else args.grace_s
    if grace < 0:
        raise UsageError("--grace-s must not be negative")

    async def go() -> int:
        async with await Runtime.open(settings) as rt:
            horizon = await _coverage_horizon(rt, args.repo, args.branch, since)
            rows: dict[str, RowRef | None] = {}
            try:
                with Meters.for_args(args).bar("commits walked", unit="commits") as progress:
                    walked, _ = await walk(rt, args.repo, args.branch, horizon, rows, progress=progress)
            except NotFoundError:
                raise UsageError(f"{args.repo}/{args.branch}: no such repository or branch in lakeFS") from None
            marks = [m for m in await markers.failed_marks(rt.bucket, args.repo) if m.branch == args.branch]
            known = await known_for(rt, args.repo, walked, rows, marks)
            oldest = walked[-1].creation_date if walked else None
            runs = await failed_hook_runs(rt, args.repo, args.branch, not_before=since or oldest, max_pages=None) \
                if walked else []
        now = datetime.now(UTC)
        entries = report(walked, known)
        code = coverage_exit_code(entries, now, grace)
        out = Output.of(args)
        if out.json:
            out.result(_as_json(args, entries, runs, since=since, grace=grace, code=code))
        elif not out.quiet:
            _print_human(args, entries, runs, code, grace)
        return code

    return _run(go())


def _counts(entries: list[CommitCoverage]) -> dict[str, int]:
    counts = {"recorded": 0, "pending": 0, "missing": 0, "failed": 0}
    for e in entries:
        counts[e.state] += 1
    return counts


def _as_json(
    args: argparse.Namespace, entries: list[CommitCoverage], runs: list[HookRunFailure], *,
    since: datetime | None, grace: float, code: int,
) -> dict[str, Any]:
    commits = []
    for e in entries:
        d = {k: v for k, v in asdict(e).items() if v is not None}
        d["created"], d["seen_at"] = _ts(e.created), _ts(e.seen_at)
        commits.append({k: v for k, v in d.items() if v is not None})
    newest = max(runs, key=lambda r: r.start_time, default=None)
    return {
        "repository": args.repo,
        "branch": args.branch,
        "since": _ts(since),
        "grace_s": grace,
        "ok": code == 0,
        "counts": _counts(entries),
        "commits": commits,
        "hook_runs_failed": {
            "count": len(runs),
            "newest_run_id": newest.run_id if newest else None,
            "runs": [{"run_id": r.run_id, "commit": r.commit_id, "event_type": r.event_type,
                      "start_time": _ts(r.start_time)} for r in runs],
        },
    }


def _print_human(
    args: argparse.Namespace, entries: list[CommitCoverage], runs: list[HookRunFailure], code: int, grace: float
) -> None:
    rows: list[tuple[str, str | None, str, str]] = []
    for e in entries:
        detail = ""
        if e.state == "recorded":
            detail = f"seq {e.seq}  sha256 {e.bundle_sha256 or ''}"
        elif e.state == "failed":
            detail = f"{'retryable' if e.retryable else 'permanent'}: {e.reason}"
        elif e.state == "pending":
            detail = f"seen {_ts(e.seen_at)}"
        rows.append((e.commit, _ts(e.created), e.state, f"{detail}{' (merge)' if e.merge else ''}"))
    if rows:
        print("\n".join(format_table(("COMMIT", "CREATED", "STATE", "DETAIL"), rows)))
    c = _counts(entries)
    newest = max(runs, key=lambda r: r.start_time, default=None)
    hooks = f"; {len(runs)} failed hook runs (newest {newest.run_id})" if newest else ""
    verdict = "OK" if code == 0 else f"NOT COVERED (missing or failed older than {grace:g} s)"
    print(f"{verdict}: {args.repo}/{args.branch}: {len(entries)} commits, {c['recorded']} recorded, "
          f"{c['pending']} pending, {c['missing']} missing, {c['failed']} failed{hooks}")


# --- hooks install / checkpoint ---------------------------------------------------
async def register_watched_branch(settings: Settings, repo: str, branch: str, commit: str, created: datetime) -> None:
    """``kfm hooks install``: the reconciler watches the branch from the install commit on."""
    from worker._internal.s3 import open_bucket
    from worker.io import markers

    async with open_bucket(settings) as b:
        await markers.register_watch(b, repo, branch, commit, created)


async def forget_failure(settings: Settings, repo: str, commit: str) -> bool:
    """``kfm checkpoint``: clear the commit's failed marker so its new request is not reported failed.

    Returns False (after a warning on stderr) if the bucket could not be reached.
    """
    from worker._internal.s3 import open_bucket
    from worker.io import markers

    try:
        async with open_bucket(settings) as b:
            await markers.clear_failed(b, repo, commit)
    except Error as e:
        print(f"kfm: warning: could not clear the failed marker of {commit}: {e.diagnostics()}", file=sys.stderr)
        return False
    return True


def add_coverage_commands(sub: _SubParsersAction[argparse.ArgumentParser]) -> None:
    rc = sub.add_parser("reconcile", help="one reconcile pass now: request bundles for watched commits without rows")
    rc.add_argument("--repo", help="only this repository (default: every watched one); lakefs://REPO/BRANCH for both")
    rc.add_argument("--branch", help="only this branch of --repo")
    rc.add_argument("--since", help="back-fill: walk back to this RFC 3339 date or date-time, past the watermark")
    rc.add_argument("--retry-failed", action="store_true",
                    help="clear the failed markers and request those commits again")
    rc.add_argument("--dry-run", action="store_true", help="print what would be requested; publish nothing")
    rc.set_defaults(handler=_reconcile)

    cov = sub.add_parser("coverage", help="each commit of a branch: recorded, pending, missing or failed; "
                                          "exit 1 if one older than the grace period is missing or failed")
    cov.add_argument("--repo", required=True, help="lakeFS repository, or lakefs://REPO/BRANCH for both")
    cov.add_argument("--branch", help="branch (required; or give --repo as lakefs://REPO/BRANCH)")
    cov.set_defaults(needs_branch=True)
    cov.add_argument("--since", help="only commits since this RFC 3339 date or date-time "
                                     "(default: since the branch's first watched commit)")
    cov.add_argument("--grace-s", type=float, help="seconds a commit may be missing before it counts "
                                                   "(default KFM_COVERAGE_GRACE_S, 300)")
    cov.set_defaults(handler=_coverage)
