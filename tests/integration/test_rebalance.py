"""One row per commit holds across a rebalance.

Two workers share the consumer group; events are delivered twice; one worker
is killed (SIGKILL, no goodbye) while work is in flight, so its event
partitions and possibly the writer partition move to the survivor, which
reloads the ledger from the bucket. Every commit still gets exactly one row.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime

import boto3
import pytest

from tests.integration.helpers import ledger_jsonl, run_kfm, unique, worker_process
from worker._internal.kafka import Producer
from worker._internal.lakefs import LakeFS
from worker.config import load_settings
from worker.constants import TOPIC_EVENTS
from worker.events import CommitEvent, event_key

pytestmark = pytest.mark.stack

N = 20


async def test_one_row_per_commit_across_a_rebalance(stack_env: dict[str, str]) -> None:
    prefix, bucket = unique("rebal") + ".", unique("kfm-rebalance-test")
    env = {**stack_env, "KFM_TOPIC_PREFIX": prefix, "KFM_S3_BUCKET": bucket, "KFM_KAFKA_SESSION_TIMEOUT_S": "6"}
    boto3.client("s3", endpoint_url=env["KFM_S3_ENDPOINT"], region_name="us-east-1",
                 aws_access_key_id=env["KFM_S3_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["KFM_S3_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
    run_kfm(env, "topics", "ensure")
    settings = load_settings({**os.environ, **env})
    lakefs = LakeFS(settings)
    repo = unique("rebal")
    commits: list[str] = []
    try:
        await lakefs.create_repository(repo, f"local://{repo}")
        for i in range(N):
            await lakefs.upload(repo, "main", "configs/pipeline.yaml", f"run: {i}\n".encode())
            commits.append(await lakefs.commit(repo, "main", f"run {i}"))
    finally:
        lakefs.close()

    async def publish(c: str) -> None:
        e = CommitEvent(source="post-commit", repository_id=repo, branch_id="main", commit_id=c,
                        event_time=datetime.now(UTC))
        async with Producer(settings.kafka_bootstrap) as p:
            await p.send(settings.topic(TOPIC_EVENTS), e.to_bytes(), key=event_key(repo, c))

    async def rows() -> list[dict]:
        return [json.loads(x) for x in (await ledger_jsonl(settings)).splitlines()]

    with worker_process(env, prefix + "a") as a, worker_process(env, prefix + "b"):
        await asyncio.sleep(12)  # both joined the group
        for c in commits:
            await publish(c)
            await publish(c)  # duplicate delivery
        await asyncio.sleep(2)
        a.send_signal(signal.SIGKILL)  # mid-run, no clean leave: the group must time it out
        deadline = asyncio.get_running_loop().time() + 240
        got: list[dict] = []
        while asyncio.get_running_loop().time() < deadline:
            got = await rows()
            if len(got) >= N:
                break
            await asyncio.sleep(1)
        await asyncio.sleep(5)
        got = await rows()
    assert [r["seq"] for r in got] == list(range(N))
    assert sorted(r["lakefs_commit"] for r in got) == sorted(commits)
    assert run_kfm(env, "ledger", "verify").stdout.startswith(f"OK: {N} rows")
