"""Fault 4: the S3 server (the registry bucket) unavailable during uploads, and back.

Needs a server whose data survives a restart: the private stack runs SeaweedFS
(``KFM_STACK_S3_SERVER=seaweedfs``); moto keeps its state in memory. Commits
are made; as soon as their events are on the topic the S3 server is stopped
(their bundles are being uploaded), more commits are made while it is down
(webhooks still succeed: Kafka and lakeFS are up, but no bundle, marker or
ledger write can be stored), and then it is started again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.harness import (
    Outcome,
    Registry,
    assert_converged,
    commit_file,
    converge,
    ledger_rows,
    new_repo,
    retried,
)
from tests.integration.helpers import end_offsets, read_since
from worker._internal.lakefs import LakeFS
from worker.constants import TOPIC_EVENTS

pytestmark = pytest.mark.faults

DOWN_S = 12.0


async def test_s3_unavailable_during_uploads(registry: Registry, lakefs: LakeFS) -> None:
    if registry.stack.s3_server != "seaweedfs":
        pytest.skip("needs the persistent S3 server (KFM_STACK_S3_SERVER=seaweedfs in deploy/local/stack)")
    repo, _ = await new_repo(registry, "s3")
    rows_before, _ = ledger_rows(registry.env)
    out = Outcome("S3 server unavailable during uploads", "commits of a 2 MiB config via webhooks", [],
                  rows_before=rows_before)
    topic = registry.settings.topic(TOPIC_EVENTS)
    start = await end_offsets(registry.settings.kafka_bootstrap, topic)
    for i in range(3):
        out.commits.append(await commit_file(lakefs, repo, "main", i, size=2 << 20))
    wanted = {f"{repo}/{c}" for c in out.commits}
    deadline = time.monotonic() + 30
    while not wanted <= {k.decode() for k, _, _ in
                         await read_since(registry.settings.kafka_bootstrap, topic, start, want=0, timeout=2) if k}:
        assert time.monotonic() < deadline, "webhooks did not arrive"
        await asyncio.sleep(0.1)
    stopped = time.monotonic()
    registry.stack.ctl("stop-s3")
    for i in range(3, 6):  # while the bucket is down
        out.commits.append(await commit_file(lakefs, repo, "main", i, size=2 << 20))
    await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped)))
    took = registry.stack.ctl("start-s3")
    ended = time.monotonic()
    out.notes.append(f"bucket down {ended - stopped:.1f}s (start-s3 took {took:.1f}s); "
                     f"{len(retried(registry, out.commits))} of {len(out.commits)} bundle runs hit it (bundle.retry)")
    fig = await converge(registry, out, [repo], ended)
    assert_converged(fig)
