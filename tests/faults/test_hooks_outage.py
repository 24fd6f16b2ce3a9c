"""Fault 1: ``kfm hooks serve`` stopped during 10 commits and merges.

lakeFS runs each post-commit/post-merge hook once: every webhook sent while
the receiver is down is lost for good. Only the reconciler (a pass every
``KFM_RECONCILE_INTERVAL_S``, walking the first-parent log of the watched
branch) can find these commits. Measured too: the time from each lost
webhook's commit to its row (goal: at most one interval plus one bundle time).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faults.harness import (
    Outcome,
    Registry,
    assert_converged,
    commit_file,
    converge,
    ledger_rows,
    new_repo,
)
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.io.ledger_reader import LedgerReader
from worker.utc import parse_utc

pytestmark = pytest.mark.faults


async def test_hooks_server_stopped_during_commits_and_merges(registry: Registry, lakefs: LakeFS) -> None:
    repo, _ = await new_repo(registry, "hooks")
    rows_before, _ = ledger_rows(registry.env)
    out = Outcome("kfm hooks serve stopped during 10 commits and merges", "5 commits + 5 merges, webhooks lost",
                  [], rows_before=rows_before)
    registry.hooks.stop()
    for i in range(5):
        out.commits.append(await commit_file(lakefs, repo, "main", i))
        branch = f"feature-{i}"
        await lakefs.create_branch(repo, branch, "main")
        await lakefs.upload(repo, branch, f"configs/feature-{i}.yaml", f"feature: {i}\n".encode())
        await lakefs.commit(repo, branch, f"feature {i}")  # not on main's first-parent line: not bundled
        out.commits.append(await lakefs.merge(repo, branch, "main", f"merge feature {i}"))
    registry.hooks.start()
    ended = time.monotonic()

    async def lags() -> dict[str, Any]:
        """Seconds from each lost webhook's commit to its row's bundle run (the reconciler found it)."""
        seconds = []
        async with open_bucket(registry.settings) as b:
            reader = LedgerReader(b)
            for c in out.commits:
                row = await reader.row_for(c)
                if row is not None:
                    made = (await lakefs.get_commit(repo, c)).creation_date
                    seconds.append((parse_utc(row.created_at) - made).total_seconds())
        if not seconds:
            return {}
        return {"lost_webhook_commit_to_row_s": {"max": round(max(seconds), 1), "min": round(min(seconds), 1)}}

    fig = await converge(registry, out, [repo], ended, extra=lags)
    assert_converged(fig)
