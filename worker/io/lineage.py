"""Where a run's OpenLineage events go: the ``kfm.openlineage`` topic, or the client's transport.

Nothing configured: the events are published on ``kfm.openlineage`` with the worker's
own producer (idempotent, one transaction per record, ``acks=all``), as they always were.

Configured the way the ``openlineage-python`` client documents (``OPENLINEAGE_URL``,
``OPENLINEAGE__TRANSPORT__*``, an ``openlineage.yml`` named by ``OPENLINEAGE_CONFIG``, in the
working directory or in ``~/.openlineage``, or ``OPENLINEAGE_DISABLED=true``): the events go
through the client and its transport instead (HTTP to Marquez or any OpenLineage backend,
a file, the console, ...), and the topic receives none.

Why the client's transports run on a thread of their own, fire and forget: they are
blocking (``requests`` with urllib3's retries: up to five tries with backoff on a refused
connection or a 5xx), so on the event loop they would stall every agent, and awaited they
would add a slow backend's seconds to each commit's way into the ledger. Why a failure is
only logged and counted: the events are evidence *about* a run that has already succeeded,
and they are stored beside the bundle (``evidence/<commit>/<run id>/openlineage.json``,
bound to it by the signed attestation), so a backend that was down can be fed later from
there (docs/deploy.md); failing or retrying the bundle would not make them safer. Why a
bounded backlog: a backend that hangs must not grow the worker's memory without end; past
:data:`BACKLOG_RUNS` runs waiting, a run's events are dropped (logged, counted).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Protocol

import structlog
from openlineage.client import OpenLineageClient
from openlineage.client.generated.base import EventType, InputDataset, Job, OutputDataset, Run, RunEvent

from worker.canonical import canonical_bytes
from worker.constants import TOPIC_LINEAGE
from worker.errors import ConfigError
from worker.io.governance import Publisher
from worker.metrics import LINEAGE_EVENTS

__all__ = [
    "BACKLOG_RUNS",
    "CLOSE_TIMEOUT_S",
    "LineageEmitter",
    "LineagePublisher",
    "check_lineage_config",
    "client_configured",
    "open_lineage_emitter",
    "publish_lineage",
]

log = structlog.get_logger("kfm.lineage")

#: Runs whose events may wait for the client's transport at once; more are dropped.
BACKLOG_RUNS: Final = 1000
#: How long closing the worker (or a CLI command) waits for waiting events to be sent.
CLOSE_TIMEOUT_S: Final = 30.0


def client_configured(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None, home: Path | None = None
) -> bool:
    """Whether the ``openlineage-python`` client has been configured, by the sources it reads.

    Why our own test and not the client's resolution: unconfigured, the client falls back
    to printing events on the console, and ours must fall back to the Kafka topic instead.
    """
    env = os.environ if environ is None else environ
    if env.get("OPENLINEAGE_URL") or env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return True
    if any(k.startswith("OPENLINEAGE__TRANSPORT") and v for k, v in env.items()):
        return True
    if env.get("OPENLINEAGE_CONFIG"):
        return True
    cwd = Path.cwd() if cwd is None else cwd
    home = Path.home() if home is None else home
    return (cwd / "openlineage.yml").is_file() or (home / ".openlineage" / "openlineage.yml").is_file()


def _typed(event: Mapping[str, Any]) -> RunEvent:
    """The client's typed event for one of our JSON RunEvents (the client emits only typed
    events). Facets stay the dicts they are, so the backend gets exactly the stored JSON
    plus whatever facets the client is configured to add."""

    def facets(part: Mapping[str, Any], key: str = "facets") -> dict[str, Any]:
        return dict(part.get(key) or {})

    return RunEvent(
        eventType=EventType(event["eventType"]),
        eventTime=event["eventTime"],
        run=Run(runId=event["run"]["runId"], facets=facets(event["run"])),
        job=Job(namespace=event["job"]["namespace"], name=event["job"]["name"], facets=facets(event["job"])),
        inputs=[
            InputDataset(
                namespace=d["namespace"], name=d["name"], facets=facets(d), inputFacets=facets(d, "inputFacets")
            )
            for d in event.get("inputs", [])
        ],
        outputs=[
            OutputDataset(
                namespace=d["namespace"], name=d["name"], facets=facets(d), outputFacets=facets(d, "outputFacets")
            )
            for d in event.get("outputs", [])
        ],
        producer=event["producer"],
    )


class LineageEmitter:
    """Sends runs' events through one ``OpenLineageClient`` on one thread, in order.

    One thread, so a run's START always reaches the backend before its COMPLETE and the
    client's transport (a ``requests`` session) is only ever used by one thread.
    """

    def __init__(self, client: OpenLineageClient, *, backlog: int = BACKLOG_RUNS) -> None:
        self._client = client
        self._backlog = backlog
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfm-lineage")
        self._pending: set[asyncio.Future[list[str]]] = set()

    @property
    def transport(self) -> str:
        """The client's transport kind (``http``, ``file``, ``noop``, ...)."""
        return str(self._client.transport.kind)

    def submit(self, events: Sequence[Mapping[str, Any]], run_id: str) -> None:
        """Queue one run's events; returns at once. Never raises for the backend's sake."""
        if len(self._pending) >= self._backlog:
            LINEAGE_EVENTS.labels("dropped").inc(len(events))
            log.warning(
                "lineage.dropped",
                run_id=run_id,
                events=len(events),
                backlog=len(self._pending),
                transport=self.transport,
            )
            return
        fut = asyncio.get_running_loop().run_in_executor(self._pool, self._emit_all, list(events))
        self._pending.add(fut)
        fut.add_done_callback(lambda f: self._done(f, run_id, len(events)))

    def _emit_all(self, events: list[Mapping[str, Any]]) -> list[str]:
        """Runs on the emitter's thread: each event tried on its own (a COMPLETE is worth
        sending even if its START was not taken). Returns one error line per failed event."""
        errors = []
        for ev in events:
            try:
                self._client.emit(_typed(ev))
            except Exception as e:  # any transport error is reported, none may escape
                errors.append(f"{ev.get('eventType')}: {type(e).__name__}: {e}")
        return errors

    def _done(self, fut: asyncio.Future[list[str]], run_id: str, count: int) -> None:
        self._pending.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        errors = [f"{type(exc).__name__}: {exc}"] * count if exc is not None else fut.result()
        if errors:
            LINEAGE_EVENTS.labels("failed").inc(len(errors))
            log.warning(
                "lineage.send_failed", run_id=run_id, transport=self.transport, failed=len(errors), error=errors[0]
            )
        LINEAGE_EVENTS.labels("sent").inc(count - len(errors))

    async def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until every queued run was tried; False if some were still waiting at the timeout."""
        if not self._pending:
            return True
        _, waiting = await asyncio.wait(set(self._pending), timeout=timeout_s)
        return not waiting

    def close_now(self) -> None:
        """Close the client and the thread without sending anything (nothing was queued)."""
        self._client.close(0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued (up to ``timeout_s``), then close the client's transport."""
        if not await self.flush(timeout_s):
            log.warning("lineage.unsent_at_close", runs=len(self._pending), transport=self.transport)
        await asyncio.to_thread(self._client.close, 0)
        self._pool.shutdown(wait=False, cancel_futures=True)


def open_lineage_emitter() -> LineageEmitter | None:
    """The emitter for the client as its environment configures it; None when nothing does
    (the events then go to the topic).

    Raises:
        ConfigError: the client's configuration is invalid (a bad URL, an unknown transport
            type, a transport whose package is not installed, an ``OPENLINEAGE_CONFIG`` that
            names no readable file); one line naming it.
    """
    if not client_configured():
        return None
    named = os.environ.get("OPENLINEAGE_CONFIG")
    if named and not (os.path.isfile(named) and os.access(named, os.R_OK)):
        # The client would ignore it and print the events on the console instead.
        raise ConfigError(f"OPENLINEAGE_CONFIG names {named}, which is not a readable file")
    try:
        client = OpenLineageClient()
    except Exception as e:  # the client raises anything, ValueError to ImportError
        raise ConfigError(
            f"OpenLineage client configuration (OPENLINEAGE_URL, OPENLINEAGE__TRANSPORT__*, openlineage.yml) "
            f"is invalid: {type(e).__name__}: {e}"
        ) from e
    emitter = LineageEmitter(client)
    log.info("lineage.client", transport=emitter.transport)
    return emitter


def check_lineage_config() -> None:
    """Build the client as :func:`open_lineage_emitter` would and close it: a start-up check,
    so a wrong configuration stops a process at once rather than at its first run.

    Raises:
        ConfigError: as :func:`open_lineage_emitter`.
    """
    emitter = open_lineage_emitter()
    if emitter is not None:
        emitter.close_now()


class LineagePublisher(Publisher, Protocol):
    """A runtime that publishes, and may hold the client's emitter."""

    @property
    def lineage(self) -> LineageEmitter | None: ...


async def publish_lineage(rt: LineagePublisher, events: Sequence[Mapping[str, Any]], run_id: str) -> None:
    """A run's events to the configured destination.

    Raises:
        TransientError: only on the topic path (the producer's acknowledgement timed out),
            as every other publish; the client's path never raises.
    """
    if rt.lineage is not None:
        rt.lineage.submit(events, run_id)
        return
    for ev in events:
        await rt.producer.send(rt.settings.topic(TOPIC_LINEAGE), canonical_bytes(ev), key=run_id.encode())
