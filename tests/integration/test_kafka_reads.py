"""The partition reads the CLI and the auditor make, against the stack's Kafka.

`kfm rollback --wait` follows the results topic from its end before it publishes the
request; `kfm audit replay` reads the writer topic from its start to its end.
"""

from __future__ import annotations

import pytest

from tests.integration.helpers import free_port, unique
from worker._internal.kafka import Producer, TopicSpec, ensure_topics, follow_partition, read_partition
from worker.errors import TransientError

pytestmark = pytest.mark.stack


async def test_follow_sees_only_what_came_after_it_began_and_read_sees_everything(
    stack_env: dict[str, str],
) -> None:
    bootstrap = stack_env["KFM_KAFKA_BOOTSTRAP"]
    topic = unique("kfm-reads")
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, exact=True)])
    async with Producer(bootstrap) as producer:
        await producer.send(topic, b"before")
        async with follow_partition(bootstrap, topic) as tail:
            await producer.send(topic, b"after")
            seen: list[bytes] = []
            for _ in range(30):
                seen += await tail.poll(1.0)
                if seen:
                    break
        await producer.send(topic, b"later")
    assert seen == [b"after"]
    assert [v async for v in read_partition(bootstrap, topic)] == [b"before", b"after", b"later"]


async def test_reads_from_an_unreachable_kafka_are_transient() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(TransientError):
        _ = [v async for v in read_partition(bootstrap, "nowhere")]
    with pytest.raises(TransientError):
        async with follow_partition(bootstrap, "nowhere"):
            pass
