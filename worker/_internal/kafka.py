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
import ssl
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from worker.config import KafkaAccess
from worker.errors import ConfigError, TransientError

if TYPE_CHECKING:
    from worker.progress import Progress

__all__ = ["KafkaAccess", "PartitionTail", "Producer", "TopicSpec", "check_access", "ensure_topics",
           "follow_partition", "partition_count", "read_partition"]

Kafka = KafkaAccess | str
"""A cluster: its connection settings, or a bare bootstrap address for a plaintext one."""


def _access(kafka: Kafka) -> KafkaAccess:
    """The connection settings; a bare address is a plaintext cluster.

    Raises:
        ConfigError: no bootstrap address (KFM_KAFKA_BOOTSTRAP unset).
    """
    access = KafkaAccess(kafka) if isinstance(kafka, str) else kafka
    if not access.bootstrap.strip():
        raise ConfigError("KFM_KAFKA_BOOTSTRAP must be set (host:port[,host:port])")
    return access


async def check_access(kafka: Kafka, timeout_s: float = 10.0) -> None:
    """Connect to a bootstrap broker as the clients will, and say why that fails.

    Why: aiokafka logs each broker's error and raises only "Unable to bootstrap",
    so an untrusted certificate or a wrong password would read as an outage and be
    retried forever. A refused handshake or login is a setting to fix, not to wait out.

    Raises:
        ConfigError: the broker's certificate is not trusted, or it refused the login.
        TransientError: no broker answered within ``timeout_s`` (down, or not listening).
    """
    access = _access(kafka)
    options = access.client_options()
    del options["bootstrap_servers"]
    last = "no broker answered"
    for address in access.bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        where = f"Kafka at {host}:{port}"
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options), timeout_s)
        except ssl.SSLCertVerificationError as e:
            raise ConfigError(f"{where}: TLS certificate not trusted ({e.verify_message}); "
                              "check KFM_KAFKA_SSL_CAFILE") from e
        except ssl.SSLError as e:
            raise ConfigError(f"{where}: TLS handshake failed ({e.reason or e}); is it a "
                              f"{access.security_protocol} listener? check KFM_KAFKA_SECURITY_PROTOCOL") from e
        except (SaslAuthenticationFailed, IllegalSaslStateError, UnsupportedSaslMechanismError) as e:
            raise ConfigError(f"{where}: SASL {access.sasl_mechanism} login as {access.sasl_username!r} refused "
                              f"({_first_line(e)}); check KFM_KAFKA_SASL_USERNAME, KFM_KAFKA_SASL_PASSWORD "
                              "and KFM_KAFKA_SASL_MECHANISM") from e
        except (KafkaError, OSError, TimeoutError, ValueError) as e:
            last = f"{where}: {_first_line(e)}{_closed_hint(access, e)}"
            continue
        conn.close()
        return
    raise TransientError(f"Kafka unreachable ({last})")


def _closed_hint(access: KafkaAccess, e: BaseException) -> str:
    """What a broker ending the connection at once usually means, for the settings in use."""
    if not isinstance(e, KafkaConnectionError) or "closed" not in str(e):
        return ""
    if access.uses_tls and not access.client_certificate:
        return ("; the broker ended the connection after the TLS handshake: does it require a client "
                "certificate (KFM_KAFKA_SSL_CERTFILE)?")
    if not access.uses_tls:
        return "; is it a TLS listener? check KFM_KAFKA_SECURITY_PROTOCOL"
    return ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


async def _explain(kafka: KafkaAccess, e: BaseException, what: str, timeout_s: float) -> ConfigError | TransientError:
    """The error to raise for a client that failed: a settings problem found by :func:`check_access`
    wins over the client's own (less telling) error."""
    try:
        await check_access(kafka, min(timeout_s, 10.0))
    except ConfigError as cause:
        return cause
    except TransientError as cause:
        return TransientError(f"{what}: {cause}")
    return TransientError(f"{what}: {type(e).__name__}: {_first_line(e)}")


class Producer:
    """A started, idempotent, acks=all producer. Use ``async with``."""

    def __init__(self, kafka: Kafka, *, timeout_s: float = 10.0, max_message_bytes: int = 1 << 20):
        """Raises: ConfigError: no bootstrap address."""
        self._kafka = _access(kafka)
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
                **self._kafka.client_options(),
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
                raise await _explain(self._kafka, e, f"Kafka at {self._kafka.bootstrap} unreachable",
                                     self._timeout_s) from e
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


async def partition_count(kafka: Kafka, topic: str, timeout_s: float = 10.0) -> int | None:
    """How many partitions the topic has (None: no such topic).

    Raises:
        ConfigError: the cluster refused our TLS settings or login.
        TransientError: the cluster did not answer.
    """
    access = _access(kafka)
    admin = AIOKafkaAdminClient(**access.client_options(), request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        desc = await admin.describe_topics([topic])
    except (KafkaError, OSError, TimeoutError) as e:
        raise await _explain(access, e, f"describe {topic} failed", timeout_s) from e
    finally:
        await admin.close()
    for t in desc:
        if t.get("topic") == topic and not t.get("error_code"):
            return len(t.get("partitions", []))
    return None


async def ensure_topics(kafka: Kafka, specs: Sequence[TopicSpec], timeout_s: float = 10.0) -> None:
    """Create missing topics; refuse to run if an exact-count topic has more partitions.

    Raises:
        ConfigError: a single-partition topic has more than one partition, or the
            cluster refused our TLS settings or login.
        TransientError: the cluster did not answer.
    """
    access = _access(kafka)
    admin = AIOKafkaAdminClient(**access.client_options(), request_timeout_ms=int(timeout_s * 1000))
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
        raise await _explain(access, e, "topic administration failed", timeout_s) from e
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


def _reader(kafka: Kafka) -> AIOKafkaConsumer:
    """A group-less consumer that sees committed records only (no offsets stored)."""
    return AIOKafkaConsumer(
        **_access(kafka).client_options(),
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )


async def read_partition(
    kafka: Kafka, topic: str, partition: int = 0, *, progress: Progress | None = None
) -> AsyncIterator[bytes]:
    """Every committed value of one partition, from its start up to its end as of the call.

    Why up to the end as of the call: a replay must terminate while the
    writer keeps appending. ``progress`` counts offsets (transaction markers
    take offsets too, so it ends exactly at the end).

    Raises:
        TransientError: Kafka did not answer.
    """
    consumer = _reader(kafka)
    try:
        try:
            await consumer.start()
        except (KafkaError, OSError) as e:
            raise await _explain(_access(kafka), e, f"read {topic}", 10.0) from e
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        done = await consumer.position(tp)
        if progress is not None:
            progress.expect(max(end - done, 0))
        while (position := await consumer.position(tp)) < end:
            if progress is not None:
                progress.advance(position - done)
                done = position
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in batch.get(tp, []):
                if record.value is not None:
                    yield record.value
        if progress is not None:
            progress.advance(position - done)
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
async def follow_partition(kafka: Kafka, topic: str, partition: int = 0) -> AsyncIterator[PartitionTail]:
    """Follow one partition from its current end.

    The position is resolved before this yields, so a record published after
    entering (a result answering a request sent next) is always seen.

    Raises:
        TransientError: Kafka did not answer.
    """
    consumer = _reader(kafka)
    try:
        try:
            await consumer.start()
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            # The end as an explicit offset, not seek_to_end: on a partition whose leader
            # is still settling (a topic just created) a lazy reset can fall back to the
            # reset policy and start at the beginning; end_offsets fails or answers.
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.seek(tp, end)
        except (KafkaError, OSError) as e:
            raise await _explain(_access(kafka), e, f"follow {topic}", 10.0) from e
        yield PartitionTail(consumer, topic)
    finally:
        await consumer.stop()
