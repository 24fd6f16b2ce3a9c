"""The writer topic must have exactly one partition — checked by
`kfm topics ensure`, `kfm health` and the worker itself, which refuses to run."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.helpers import free_port, run_kfm, unique, worker_process
from worker.constants import TOPIC_INDEX_CANDIDATES

pytestmark = pytest.mark.stack


def test_health_passes_on_the_stack_and_names_what_fails(stack_env: dict[str, str]) -> None:
    ok = run_kfm(stack_env, "health")
    assert ok.stdout.count("ok  ") == 4, ok.stdout
    bad = run_kfm({**stack_env, "KFM_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}, "health", check=False)
    assert bad.returncode == 1 and "FAIL s3" in bad.stdout


async def test_writer_topic_with_two_partitions_is_refused(stack_env: dict[str, str]) -> None:
    prefix = unique("twoparts") + "."
    env = {**stack_env, "KFM_TOPIC_PREFIX": prefix}
    admin = AIOKafkaAdminClient(bootstrap_servers=stack_env["KFM_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        await admin.create_topics([NewTopic(prefix + TOPIC_INDEX_CANDIDATES, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    r = run_kfm(env, "topics", "ensure", check=False)
    assert r.returncode == 4 and "exactly 1" in r.stderr, r.stderr  # could not run (docs/cli.md)
    h = run_kfm(env, "health", check=False)
    assert h.returncode == 1 and "FAIL kafka" in h.stdout and "2 partitions" in h.stdout
    with worker_process(env, prefix) as proc:
        rc = await asyncio.to_thread(proc.wait, 60)
    assert rc != 0  # the worker's preflight refuses to start
