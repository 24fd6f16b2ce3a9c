"""Fault 2: the Kafka broker SIGKILLed and restarted mid-stream.

Commits are made before, during and after the outage. The ones before are
still being bundled when the broker dies (their candidates cannot be
published); the webhooks of the ones during the outage get 503 and are lost
for good (lakeFS does not retry); the worker's consumer and producers must
reconnect by themselves once the broker is back. The reconciler then requests
every commit of the watched branch that has no row.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import (
    Outcome,
    Registry,
    assert_converged,
    commit_file,
    converge,
    ledger_rows,
    missing_rows,
    new_repo,
    retried,
)
from worker._internal.lakefs import LakeFS

pytestmark = pytest.mark.faults


async def test_broker_sigkilled_and_restarted_mid_stream(registry: Registry, lakefs: LakeFS) -> None:
    repo, _ = await new_repo(registry, "kafka")
    rows_before, _ = ledger_rows(registry.env)
    out = Outcome("Kafka broker SIGKILLed and restarted mid-stream", "commits via webhooks", [],
                  rows_before=rows_before)
    for i in range(3):  # in flight when the broker dies
        out.commits.append(await commit_file(lakefs, repo, "main", i))
    registry.stack.ctl("kill-kafka")
    during = []
    for i in range(3, 6):  # webhooks answered 503: lost
        during.append(await commit_file(lakefs, repo, "main", i))
    out.commits += during
    down_for = registry.stack.ctl("start-kafka")
    ended = time.monotonic()
    for i in range(6, 9):  # after the broker is back
        out.commits.append(await commit_file(lakefs, repo, "main", i))
    lost_webhooks = await missing_rows(registry.settings, during)
    out.notes.append(f"broker restart took {down_for:.1f}s; {len(lost_webhooks)} of {len(during)} commits made "
                     "during the outage had no row when it ended")
    out.notes.append(f"{len(retried(registry, out.commits))} bundle runs hit the outage (bundle.retry)")
    fig = await converge(registry, out, [repo], ended)
    assert_converged(fig)
