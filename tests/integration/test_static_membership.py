"""A SIGKILLed worker that is restarted consumes again promptly.

Measured end to end: a worker bundles a first commit (so it is a member with
partitions), is killed with SIGKILL (no LeaveGroup), an event for a second
commit is published, and the worker is restarted at once. The figure is the
time from the restart to the second commit's ledger row. With dynamic
membership (``KFM_WORKER_INSTANCE_ID=off``) the restarted worker's join waits
for the dead member's session to expire (about ``KFM_KAFKA_SESSION_TIMEOUT_S``,
default 30 s); with static membership (the default) it replaces the dead member
at once. Both are measured at the default session timeout and printed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime

import pytest

from tests.integration.helpers import isolated_registry, unique, worker_process
from worker._internal.kafka import Producer
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import Settings, load_settings
from worker.constants import TOPIC_EVENTS
from worker.events import CommitEvent, event_key
from worker.io.ledger_reader import LedgerReader

pytestmark = pytest.mark.stack

SESSION_TIMEOUT_S = Settings().kafka_session_timeout_s  # the default, not shortened for the test


async def _commits(settings: Settings, n: int) -> tuple[str, list[str]]:
    lakefs = LakeFS(settings)
    repo = unique("member")
    try:
        await lakefs.create_repository(repo, f"local://{repo}")
        out = []
        for i in range(n):
            await lakefs.upload(repo, "main", "configs/pipeline.yaml", f"run: {i}\n".encode())
            out.append(await lakefs.commit(repo, "main", f"run {i}"))
        return repo, out
    finally:
        lakefs.close()


async def _publish(settings: Settings, repo: str, commit: str) -> None:
    e = CommitEvent(source="post-commit", repository_id=repo, branch_id="main", commit_id=commit,
                    event_time=datetime.now(UTC))
    async with Producer(settings.kafka_bootstrap) as p:
        await p.send(settings.topic(TOPIC_EVENTS), e.to_bytes(), key=event_key(repo, commit))


async def _wait_row(settings: Settings, commit: str, within: float) -> float:
    """Seconds (monotonic clock) at which the commit's row was seen."""
    deadline = time.monotonic() + within
    async with open_bucket(settings) as b:
        reader = LedgerReader(b)
        while time.monotonic() < deadline:
            if await reader.row_for(commit) is not None:
                return time.monotonic()
            await asyncio.sleep(0.25)
    raise AssertionError(f"no row for {commit} within {within}s")


async def _restart_figures(stack_env: dict[str, str], instance_id: str) -> dict[str, float]:
    """(cold start to first row, restart after SIGKILL to next row) in seconds."""
    prefix = unique("member") + "."
    env = isolated_registry(stack_env, prefix, unique("kfm-member-test"))
    env["KFM_WORKER_INSTANCE_ID"] = instance_id
    settings = load_settings({**os.environ, **env})
    repo, (first, second) = await _commits(settings, 2)
    await _publish(settings, repo, first)
    started = time.monotonic()
    with worker_process(env, prefix + "1") as proc:
        cold = await _wait_row(settings, first, 120) - started
        await asyncio.sleep(2)  # a heartbeat or two: the member is established
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
    await _publish(settings, repo, second)
    restarted = time.monotonic()
    with worker_process(env, prefix + "2"):
        back = await _wait_row(settings, second, 180) - restarted
    return {"cold_start_s": round(cold, 1), "restart_to_row_s": round(back, 1)}


async def test_restarted_worker_rejoins_without_waiting_for_the_session_timeout(
    stack_env: dict[str, str],
) -> None:
    dynamic = await _restart_figures(stack_env, "off")
    static = await _restart_figures(stack_env, "")
    print(f"\nsession timeout {SESSION_TIMEOUT_S:.0f}s; SIGKILLed worker restarted -> consuming again "
          f"(restart to the next commit's row): dynamic membership {dynamic['restart_to_row_s']}s, "
          f"static membership {static['restart_to_row_s']}s; cold start to first row: "
          f"{dynamic['cold_start_s']}s / {static['cold_start_s']}s")
    # Dynamic: the join waits for the dead member's session to expire.
    assert dynamic["restart_to_row_s"] > SESSION_TIMEOUT_S * 0.6, dynamic
    # Static: about a cold start, well under the session timeout.
    assert static["restart_to_row_s"] < SESSION_TIMEOUT_S / 3, static
