"""Fault 5: lakeFS stopped while commits are being staged, and started again.

Commits with many objects are made; as soon as their events are on the events
topic (the worker is staging them: one lakeFS read per object), lakeFS is
stopped for longer than the bundler's retry budget, so the runs fail
(``bundle.failed``, retryable). Once lakeFS is back the reconciler retries
them. No commit can be made while lakeFS is down, so the commits "made during
the fault" are the ones being staged when it began.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.harness import (
    Outcome,
    Registry,
    assert_converged,
    converge,
    ledger_rows,
    new_repo,
    retried,
)
from tests.integration.helpers import end_offsets, read_since
from worker._internal.lakefs import LakeFS
from worker.constants import TOPIC_EVENTS

pytestmark = pytest.mark.faults

OBJECTS = 150  # per commit: staging reads each one from lakeFS
DOWN_S = 12.0  # longer than the bundler's retries (0.5 + 1 + 2 s by default)


async def _big_commit(lakefs: LakeFS, repo: str, i: int) -> str:
    await asyncio.gather(*(lakefs.upload(repo, "main", f"configs/batch-{i}/part-{k:03d}.yaml",
                                         f"part: {k}\nrun: {i}\n".encode() + b"x" * 2048)
                           for k in range(OBJECTS)))
    return await lakefs.commit(repo, "main", f"big run {i}")


async def test_lakefs_stopped_while_staging(registry: Registry, lakefs: LakeFS) -> None:
    repo, _ = await new_repo(registry, "lakefs")
    rows_before, _ = ledger_rows(registry.env)
    out = Outcome("lakeFS stopped while commits are staged", "commits of 150 objects via webhooks", [],
                  rows_before=rows_before)
    topic = registry.settings.topic(TOPIC_EVENTS)
    start = await end_offsets(registry.settings.kafka_bootstrap, topic)
    for i in range(2):
        out.commits.append(await _big_commit(lakefs, repo, i))
    # Stop lakeFS the moment both events are on the topic: the worker has them in hand.
    wanted = {f"{repo}/{c}" for c in out.commits}
    deadline = time.monotonic() + 30
    while True:
        recs = await read_since(registry.settings.kafka_bootstrap, topic, start, want=0, timeout=2)
        if wanted <= {k.decode() for k, _, _ in recs if k}:
            break
        assert time.monotonic() < deadline, "webhooks did not arrive"
        await asyncio.sleep(0.1)
    stopped = time.monotonic()
    registry.stack.ctl("stop-lakefs")
    await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped)))
    registry.stack.ctl("start-lakefs")
    ended = time.monotonic()
    hit = retried(registry, out.commits)
    out.notes.append(f"{len(hit)} of {len(out.commits)} staged commits hit the outage (bundle.retry)")
    fig = await converge(registry, out, [repo], ended)
    assert_converged(fig)
    assert hit, "lakeFS was not down while a commit was staged"
