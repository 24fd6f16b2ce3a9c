"""The Faust app: agents that turn commit events into bundles, ledger rows and rollbacks.

``faust -A worker.app worker`` and ``kfm worker`` both run it. Agents are thin:
they decode, call a plain async function from :mod:`worker.io`, and route
errors by family (transient: retry with backoff; integrity: dead-letter and
report, never retried). Every message an agent refuses is dead-lettered with
its source coordinates (:mod:`worker.io.dead_letters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import faust
import structlog
from faust.auth import Credentials, SASLCredentials, SSLCredentials
from faust.transport.drivers import aiokafka as faust_aiokafka
from opentelemetry.context import Context

from worker import health, metrics
from worker._internal.kafka import partition_count
from worker.config import KafkaAccess, load_settings
from worker.constants import TOPIC_EVENTS, TOPIC_INDEX_CANDIDATES, TOPIC_ROLLBACK_REQUESTS
from worker.errors import ConfigError, ConflictError, TransientError
from worker.io.dead_letters import Refusal, Source, dead_letter, refusal_of, screen
from worker.io.handlers import handle_commit_event, signing_key
from worker.io.ledger_reader import checkpoint_key_names, checkpoint_signer
from worker.io.ledger_writer import LedgerStore, Outcome, checkpoint_origin, record_batch
from worker.io.lineage import check_lineage_config
from worker.io.reconciling import reconcile_tick
from worker.io.rolling_back import handle_rollback_request
from worker.io.runtime import Runtime
from worker.keys import TrustedKeys
from worker.logs import configure_logging, stdlib_config
from worker.membership import group_instance_id
from worker.retry import retry_transient
from worker.topics import app_id, ensure_all_topics
from worker.tracing import context_from_headers, continuing, init_tracing

__all__ = ["app", "main", "runtime"]

# Our producers publish inside transactions (see worker/_internal/kafka.py);
# Faust's worker consumer reads read_uncommitted unless it runs exactly-once
# itself, which would let it see aborted records. Force read_committed.
_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def _read_committed(self: Any, transport: Any) -> Any:
    consumer = _create_worker_consumer(self, transport)
    consumer._isolation_level = "read_committed"  # private aiokafka attribute: see above
    return consumer


faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _read_committed  # type: ignore[method-assign]



def broker_credentials(kafka: KafkaAccess) -> Credentials | None:
    """Faust's form of the ``KFM_KAFKA_*`` security settings, so its consumers connect as ours do."""
    if kafka.uses_sasl:
        return SASLCredentials(username=kafka.sasl_username, password=kafka.sasl_password,
                               ssl_context=kafka.ssl_context, mechanism=kafka.sasl_mechanism)
    if kafka.uses_tls:
        return SSLCredentials(kafka.ssl_context)
    return None


settings = load_settings()
configure_logging(settings.log_level)
init_tracing("kfm-worker", settings.otel_exporter)
log = structlog.get_logger("kfm.worker")
instance_id = group_instance_id(settings, app_id(settings))
log.info("worker.group_member", group=app_id(settings), group_instance_id=instance_id)

_FAUST_DIR = Path(settings.work_dir or Path.cwd() / ".stack" / "work") / "faust"
_FAUST_DIR.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level

app = faust.App(
    app_id(settings),
    broker=f"kafka://{settings.kafka_bootstrap}",
    broker_credentials=broker_credentials(settings.kafka),
    value_serializer="raw",
    key_serializer="raw",
    web_enabled=False,
    autodiscover=False,
    store="memory://",
    # Faust makes a data directory even with in-memory tables: keep it under the work dir,
    # not in whatever directory the worker was started from.
    datadir=str(_FAUST_DIR / "{conf.name}-data"),
    topic_allow_declare=False,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    broker_commit_every=1,
    broker_commit_interval=1.0,
    # Bundles of large commits take a while; the agent must not be kicked out.
    broker_max_poll_interval=1800.0,
    broker_session_timeout=settings.kafka_session_timeout_s,
    broker_heartbeat_interval=max(settings.kafka_session_timeout_s / 10, 0.5),
    # Static membership: a restarted worker rejoins as the same member, no session-timeout wait.
    consumer_group_instance_id=instance_id,
    stream_wait_empty=False,
    # Faust sets up the root logger when its worker starts: with our JSON formatter (worker/logs.py).
    logging_config=stdlib_config(settings.log_level),
)
# What /readyz knows of the agents: each one's errors, and each saying it runs (worker/health.py).
agent_states = health.AgentStates()

events_topic = app.topic(settings.topic(TOPIC_EVENTS), value_type=bytes, key_type=bytes)
candidates_topic = app.topic(settings.topic(TOPIC_INDEX_CANDIDATES), value_type=bytes, key_type=bytes)
rollback_topic = app.topic(settings.topic(TOPIC_ROLLBACK_REQUESTS), value_type=bytes, key_type=bytes)

# How long a stopping worker lets the batch in flight finish (below the units' stop timeout).
_BATCH_STOP_GRACE_S = 60.0
# The writer's batches: the stream yields when the batch is full or when this window
# ends with something in it. Candidates that arrive while a batch is being committed
# (the slow part: about 0.2 s) are buffered meanwhile and form the next batch, so
# bursts batch by themselves; the window only bounds how long a single candidate on
# an idle stream waits (it was 1 s: the floor of every commit's time to its row). Faust's
# window is a fixed tick, not a timer started by the first candidate, so a lone candidate
# waits half of it on average: 10 ms here. Each tick wakes an idle worker (about 0.3 ms of
# CPU here: 1.3 % of a core at 0.02 s, 2.5 % at 0.01 s, for 5 ms less).
_WRITER_BATCH_MAX = 100
_WRITER_BATCH_WINDOW_S = 0.02

_runtime: Runtime | None = None
_runtime_lock = asyncio.Lock()


async def runtime() -> Runtime:
    global _runtime  # noqa: PLW0603 - one set of clients per worker process
    async with _runtime_lock:
        if _runtime is None:
            _runtime = await Runtime.open(settings)
        return _runtime


@app.on_before_shutdown.connect
async def _close_runtime(app: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Close the lakeFS, S3 and Kafka clients before Faust stops the loop."""
    global _runtime
    if _runtime is not None:
        rt, _runtime = _runtime, None
        await rt.aclose()


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``kfm worker``: preflight checks, then hand over to Faust.

    Why check here: the agents open lakeFS and S3 at their first message, and
    Faust retries a broker that refuses it forever; a missing setting, an
    untrusted certificate or a wrong password must stop the start instead.

    Raises:
        ConfigError: a setting the worker needs is unset, the OpenLineage client's
            configuration is invalid, or Kafka refused it.
        TransientError: Kafka did not answer.
    """
    settings.require("kafka_bootstrap", "lakefs_endpoint", "lakefs_access_key_id", "lakefs_secret_access_key",
                     "s3_bucket")
    check_lineage_config()
    if settings.worker_http_port:  # taken: say so now, not after Faust has started
        metrics.check_port(settings.metrics_host, settings.worker_http_port, "KFM_WORKER_HTTP_PORT")
    asyncio.run(ensure_all_topics(settings))
    app.main()


@app.agent(events_topic, concurrency=2)
@agent_states.watch
async def bundler(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """One bundle (and one index candidate) per commit event."""
    agent_states.running(bundler.name)
    async for event in stream.events():
        try:
            await handle_commit_event(await runtime(), event.value, _source("bundler", event))
        except Exception:  # a bug, not bad data: log it loudly, keep the stream alive
            log.exception("bundler.unexpected_error", offset=event.message.offset)
        yield None


def _source(agent: str, event: faust.types.EventT[bytes]) -> Source:
    m = event.message
    headers = m.headers or []
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    return Source(agent, m.topic, m.partition, m.offset, m.key, pairs)


async def _settled_partition_count(topic: str) -> int | None:
    count = await partition_count(settings.kafka, topic)
    for _ in range(50):  # a just-created topic can read as 0 partitions for a moment
        if count:
            break
        await asyncio.sleep(0.2)
        count = await partition_count(settings.kafka, topic)
    return count


@app.agent(candidates_topic)
@agent_states.watch
async def ledger_writer(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """The only writer of the ledger; its topic has exactly one partition."""
    topic = settings.topic(TOPIC_INDEX_CANDIDATES)
    count = await _settled_partition_count(topic)
    if count != 1:
        err = ConfigError(f"writer topic {topic} has {count} partitions; it must have exactly 1")
        log.critical("ledger.refusing_to_run", reason=str(err))
        await app.crash(err)
        return
    rt = await runtime()
    key = signing_key(rt)
    if not settings.trusted_keys_dir:
        await app.crash(ConfigError("KFM_TRUSTED_KEYS_DIR must be set for the ledger writer"))
        return
    trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
    origin = checkpoint_origin(settings.checkpoint_name, rt.bucket.name)
    signer = checkpoint_signer(settings.checkpoint_key_name, origin)
    accepted = checkpoint_key_names(settings.checkpoint_name, origin, settings.checkpoint_key_names)

    async def open_store() -> LedgerStore:
        store, state = await retry_transient(
            lambda: LedgerStore.open(rt.bucket, origin, key, signer, trusted, accepted=accepted),
            log, "ledger.open_retrying",
        )
        # Only a head whose objects were missing means a writer died mid-append.
        level = log.warning if state in ("finished_after_crash", "migrated") else log.info
        level(f"ledger.{state}", size=store.tip.size)
        return store

    store = await open_store()
    agent_states.running(ledger_writer.name)

    async def reload_store() -> None:
        nonlocal store
        store = await open_store()

    async def record(values: list[bytes], parents: list[Context]) -> list[Outcome]:
        # A stop (SIGTERM: deploy, rebalance) must not cut an append between its
        # commit point and its checkpoint: the batch runs as its own task and a
        # cancellation waits for it (the units' stop timeouts allow for this).
        task = asyncio.ensure_future(record_batch(rt, store, values, trusted, parents))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            log.info("ledger.stopping_after_batch", candidates=len(values))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=_BATCH_STOP_GRACE_S)
            raise

    # take_events (not take): each value with its offset, for a dead letter to point back at.
    async for events in cast("faust.Stream[bytes]", stream).take_events(
        _WRITER_BATCH_MAX, within=_WRITER_BATCH_WINDOW_S
    ):
        # A value that is missing or too large is refused before the batch (never parsed).
        batch: list[tuple[Source, bytes]] = []
        for event in events:
            source, value = _source("ledger_writer", event), event.value
            refused = screen(value, settings.limits.max_message_bytes)
            if refused is not None:
                await dead_letter(rt, source, value, refused)
            elif value is not None:
                batch.append((source, value))
        if not batch:
            yield None
            continue
        # Never skip a candidate (the ledger must not have holes): retried until it is
        # recorded; a conflict means another writer moved the head, so reload first.
        outcomes = await retry_transient(
            functools.partial(record, [v for _, v in batch], [context_from_headers(s.headers) for s, _ in batch]),
            log, "ledger.retrying_batch",
            retry_on=(ConflictError, TransientError), before_retry=reload_store,
        )
        for (source, value), outcome in zip(batch, outcomes, strict=True):
            if outcome.kind == "rejected" and outcome.error is not None:
                await dead_letter(rt, source, value, refusal_of(outcome.error))
        await _writer_lag(stream, events)
        yield None


async def _writer_lag(stream: faust.StreamT[bytes], events: Sequence[faust.types.EventT[bytes]]) -> None:
    """How far behind the writer is: each candidate's wait, and what is left on its topic.

    Left: what the consumer has not read yet (end offset minus its position) plus what it
    read and has not decided (the stream's queue). Not end minus the last offset decided:
    the topic is transactional, and the commit marker after the last transaction takes an
    offset too, so a writer that had caught up showed 1. The consumer's position is past a
    marker once it has read it; markers it has not read yet still count while it is behind.
    """
    now = time.time()
    for event in events:
        metrics.WRITER_LAG_SECONDS.observe(max(now - event.message.timestamp, 0.0))
    last = events[-1].message
    with contextlib.suppress(Exception):  # no highwater yet (just assigned): keep the last figure
        position = await app.consumer.position(last.tp)
        unread = app.consumer.highwater(last.tp) - (last.offset + 1 if position is None else position)
        waiting = cast("faust.ChannelT[bytes]", stream.channel).queue.qsize()
        metrics.WRITER_LAG_OFFSETS.set(max(unread, 0) + waiting)


@app.agent(rollback_topic)
@agent_states.watch
async def rollback(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Rollback requests, in order per branch (the topic is keyed by repo/branch)."""
    rt = await runtime()
    trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
    agent_states.running(rollback.name)
    async for event in stream.events():
        source = _source("rollback", event)

        async def refused(refusal: Refusal, source: Source = source, value: bytes | None = event.value) -> None:
            await dead_letter(rt, source, value, refusal)

        try:  # transient failures are retried; the message is not acked meanwhile
            with continuing(source.headers):  # a requester's trace, if it sent one (the span links the bundle's)
                await retry_transient(functools.partial(handle_rollback_request, rt, event.value, trusted, refused),
                                      log, "rollback.retrying")
        except Exception:  # a bug: report loudly, keep the stream alive
            log.exception("rollback.unexpected_error", offset=event.message.offset)
        yield None


async def reconciler() -> None:
    """Leader only: a reconcile pass at start, then every KFM_RECONCILE_INTERVAL_S (docs/coverage.md)."""
    try:
        await reconcile_tick(await runtime(), app.is_leader)
    except Exception:  # a bug, or a dependency down past its retries: report, try again next interval
        log.exception("reconcile.unexpected_error")


# A 1 s tick checks leadership; reconcile_tick runs a pass when one is due. (Faust's
# timer decorator is untyped, so it is applied by call to keep the function typed.)
app.timer(interval=1.0, on_leader=True)(reconciler)


async def http_probes() -> None:
    """``/healthz``, ``/readyz`` and ``/metrics`` while the worker runs (KFM_WORKER_HTTP_PORT; worker/health.py)."""
    if not settings.worker_http_port:
        return
    try:
        runner = await health.serve(settings, app, agent_states, runtime)
    except ConfigError as e:  # the port is taken: the worker must not run without its probes
        log.critical("worker.http_failed", error=str(e))
        await app.crash(e)
        return
    try:
        await asyncio.Event().wait()  # until the worker stops (this task is cancelled)
    finally:
        await runner.cleanup()


app.task(http_probes)
