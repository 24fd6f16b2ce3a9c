"""Kafka producer and topic administration over aiokafka.

Why our own wrapper: every publish in this project must be durable before we
answer anyone (acks=all, idempotent producer), must carry trace context, and
must turn aiokafka's many exception types into :class:`TransientError`.

Why each send is a transaction: aiokafka has no delivery timeout; a record
whose send we gave up on stays in the producer and is delivered when the
broker returns, after we already answered "failed". Sending inside a
transaction that we only commit after the acknowledgement, and abandoning the
producer on failure, makes such a record part of a never-committed (so
aborted) transaction: consumers reading ``read_committed`` never see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from worker.errors import ConfigError, TransientError

__all__ = ["PartitionTail", "Producer", "TopicSpec", "ensure_topics", "follow_partition", "partition_count",
           "read_partition"]


class Producer:
    """A started, idempotent, acks=all producer. Use ``async with``."""

    def __init__(self, bootstrap: str, *, timeout_s: float = 10.0, max_message_bytes: int = 1 << 20):
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._max = max_message_bytes
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._abandoned: set[asyncio.Task[None]] = set()
        # One open transaction per producer at a time.
        self._send_lock = asyncio.Lock()

    async def _ensure(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            timeout_ms = int(self._timeout_s * 1000)
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                enable_idempotence=True,
                # A message not delivered within the timeout expires in the
                # accumulator, so a 503 we answered is never published later.
                request_timeout_ms=timeout_ms,
                max_request_size=self._max + 64 * 1024,
                linger_ms=0,
                transactional_id=f"kfm-{uuid.uuid4()}",
                # The broker aborts a transaction we abandoned after this long.
                transaction_timeout_ms=max(timeout_ms * 2, 10_000),
            )
            try:
                # start() also registers the transactional id; on a fresh
                # cluster that first creates __transaction_state, which is slow.
                await asyncio.wait_for(producer.start(), max(self._timeout_s, 30.0))
            except (KafkaError, OSError, TimeoutError) as e:
                await producer.stop()
                raise TransientError(f"Kafka at {self._bootstrap} unreachable: {type(e).__name__}") from e
            self._producer = producer
            return producer

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> tuple[int, int]:
        """Publish and wait for the broker's acknowledgement.

        Returns:
            (partition, offset) of the stored record.

        Raises:
            TransientError: not acknowledged within the timeout.
        """

        async def _txn(producer: AIOKafkaProducer) -> tuple[int, int]:
            await producer.begin_transaction()
            meta = await producer.send_and_wait(
                topic, value=value, key=key, headers=list(headers), partition=partition
            )
            await producer.commit_transaction()
            return int(meta.partition), int(meta.offset)

        async with self._send_lock:
            # Taken under the lock: a send that failed while this one waited abandoned the
            # producer with its transaction open, and beginning another on it would fail.
            producer = await self._ensure()
            try:
                return await asyncio.wait_for(_txn(producer), self._timeout_s)
            except (KafkaError, OSError, TimeoutError) as e:
                self._abandon(producer)
                raise TransientError(f"publish to {topic} failed: {type(e).__name__}") from e

    def _abandon(self, producer: AIOKafkaProducer) -> None:
        """Drop a producer whose transaction may be open; never commit it."""
        if self._producer is producer:
            self._producer = None

        async def _stop() -> None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(producer.stop(), 5.0)

        task = asyncio.get_running_loop().create_task(_stop())
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    async def ping(self) -> None:
        """Readiness: the cluster answers a metadata request.

        Raises:
            TransientError: it does not.
        """
        producer = await self._ensure()
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), self._timeout_s)
        except (KafkaError, OSError, TimeoutError) as e:
            raise TransientError(f"Kafka metadata failed: {type(e).__name__}") from e

    async def aclose(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class TopicSpec:
    def __init__(
        self, name: str, partitions: int, *, exact: bool = False, configs: dict[str, str] | None = None
    ):
        self.name = name
        self.partitions = partitions
        # exact: the topic must have exactly this many partitions (the writer topic).
        self.exact = exact
        # Topic-level settings, applied when the topic is created (never to an existing one).
        self.configs = dict(configs or {})


async def partition_count(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        desc = await admin.describe_topics([topic])
    except (KafkaError, OSError, TimeoutError) as e:
        raise TransientError(f"describe {topic} failed: {type(e).__name__}") from e
    finally:
        await admin.close()
    for t in desc:
        if t.get("topic") == topic and not t.get("error_code"):
            return len(t.get("partitions", []))
    return None


async def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], timeout_s: float = 10.0) -> None:
    """Create missing topics; refuse to run if an exact-count topic has more partitions.

    Raises:
        ConfigError: a single-partition topic has more than one partition.
        TransientError: the cluster did not answer.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, topic_configs=s.configs)
                     for s in missing]
                )
        exact = [s.name for s in specs if s.exact]
        # A topic created a moment ago may not have its partitions in the
        # metadata yet (it reads as 0 partitions): wait for it, never guess.
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            desc = await admin.describe_topics(exact)
            counts = {d["topic"]: len(d.get("partitions", [])) for d in desc if not d.get("error_code")}
            if all(counts.get(name, 0) > 0 for name in exact) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
    except (KafkaError, OSError, TimeoutError) as e:
        raise TransientError(f"topic administration failed: {type(e).__name__}: {e}") from e
    finally:
        await admin.close()
    for s in specs:
        if s.exact and counts.get(s.name, 0) == 0:
            raise TransientError(f"topic {s.name} has no partitions in the cluster metadata yet")
        if s.exact and counts[s.name] != s.partitions:
            raise ConfigError(
                f"topic {s.name} has {counts[s.name]} partitions; it must have exactly "
                f"{s.partitions} (it orders the ledger)"
            )


def _reader(bootstrap: str) -> AIOKafkaConsumer:
    """A group-less consumer that sees committed records only (no offsets stored)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )


async def read_partition(bootstrap: str, topic: str, partition: int = 0) -> AsyncIterator[bytes]:
    """Every committed value of one partition, from its start up to its end as of the call.

    Why up to the end as of the call: a replay must terminate while the
    writer keeps appending.

    Raises:
        TransientError: Kafka did not answer.
    """
    consumer = _reader(bootstrap)
    try:
        await consumer.start()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in batch.get(tp, []):
                if record.value is not None:
                    yield record.value
    except KafkaError as e:
        raise TransientError(f"read {topic}: Kafka: {type(e).__name__}") from e
    finally:
        await consumer.stop()


class PartitionTail:
    """Records of one partition published after :func:`follow_partition` began."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str):
        self._consumer = consumer
        self._topic = topic

    async def poll(self, timeout_s: float = 1.0) -> list[bytes]:
        """The values that arrived, waiting up to ``timeout_s`` for the first.

        Raises:
            TransientError: Kafka did not answer.
        """
        try:
            batch = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000))
        except KafkaError as e:
            raise TransientError(f"read {self._topic}: Kafka: {type(e).__name__}") from e
        return [r.value for records in batch.values() for r in records if r.value is not None]


@asynccontextmanager
async def follow_partition(bootstrap: str, topic: str, partition: int = 0) -> AsyncIterator[PartitionTail]:
    """Follow one partition from its current end.

    The position is resolved before this yields, so a record published after
    entering (a result answering a request sent next) is always seen.

    Raises:
        TransientError: Kafka did not answer.
    """
    consumer = _reader(bootstrap)
    try:
        try:
            await consumer.start()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
        except KafkaError as e:
            raise TransientError(f"follow {topic}: Kafka: {type(e).__name__}") from e
        yield PartitionTail(consumer, topic)
    finally:
        await consumer.stop()
