"""Prometheus metrics of the receiver and the worker, defined once, and the small HTTP server that serves them.

Why one module: the receiver (``kfm hooks serve``) and the worker (``kfm worker``) each
count what they do into these objects, and each serves them on a listener of its own
(``KFM_HOOKS_METRICS_PORT``, ``KFM_WORKER_HTTP_PORT``; docs/configuration.md). Names follow
Prometheus' conventions: the ``kfm_`` prefix, ``_total`` for counters, base units
(``_seconds``, ``_bytes``). Labels take only a few fixed values (an HTTP status, an
outcome, a reason), never a repository or a commit, so the number of series stays bounded.

Why not the webhook port for the receiver's metrics: that port is the one lakeFS calls and
is often exposed beyond the cluster (an ingress); ``/metrics`` tells how busy and how
failing the registry is, which is for the monitoring system only. A separate port lets a
Service or a network policy expose the one without the other.

Why our own aiohttp server in the worker, not Faust's web server: Faust's serves its own
pages too (tables, router, stats), which we neither need nor want exposed, and its
port/host settings would be a second set of names beside ours.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from worker.errors import ConfigError

__all__ = [
    "BUNDLES_BUILT",
    "BUNDLES_FAILED",
    "BUNDLE_BUILD_SECONDS",
    "BUNDLE_BYTES",
    "LEDGER_APPEND_SECONDS",
    "LEDGER_CANDIDATES",
    "LEDGER_ROWS",
    "LINEAGE_EVENTS",
    "RECONCILE_MISSING",
    "RECONCILE_OLDEST_MISSING_AGE",
    "ROLLBACKS",
    "ROLLBACK_SECONDS",
    "WEBHOOKS",
    "WEBHOOK_PUBLISH_SECONDS",
    "WRITER_LAG_OFFSETS",
    "WRITER_LAG_SECONDS",
    "check_port",
    "serve",
]

# No ``*_created`` series beside every counter and histogram: they double what is scraped and
# Prometheus does not need them (a reset shows as a drop of the counter).
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

# Latencies from a millisecond (a publish, an append) to tens of minutes (a large bundle).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Bundle sizes from 1 KiB to 64 GiB, by factors of 4.
_BYTES = tuple(float(1 << n) for n in range(10, 37, 2))

# --- receiver -------------------------------------------------------------------------
WEBHOOKS = Counter("kfm_webhooks_total", "Webhook requests the receiver answered, by HTTP status.", ["status"])
WEBHOOK_PUBLISH_SECONDS = Histogram(
    "kfm_webhook_publish_seconds",
    "Time from sending a webhook's commit event to Kafka's acknowledgement (published events only).",
    buckets=_SECONDS,
)

# --- bundler --------------------------------------------------------------------------
BUNDLES_BUILT = Counter("kfm_bundles_built_total", "Bundles built and stored whose index candidate was published.")
BUNDLES_FAILED = Counter(
    "kfm_bundles_failed_total", "Commits whose bundle the bundler gave up on, by reason.", ["reason"]
)
BUNDLE_BUILD_SECONDS = Histogram(
    "kfm_bundle_build_seconds", "Time to stage a commit and pack its bundle (one attempt).", buckets=_SECONDS
)
BUNDLE_BYTES = Histogram("kfm_bundle_bytes", "Size of each bundle built (.tar.zst).", buckets=_BYTES)

# --- ledger writer --------------------------------------------------------------------
LEDGER_CANDIDATES = Counter(
    "kfm_ledger_candidates_total",
    "Index candidates the ledger writer decided, by outcome: recorded (a new row), duplicate, rejected.",
    ["outcome"],
)
LEDGER_ROWS = Gauge("kfm_ledger_rows", "Rows in the ledger after this writer's last append (the tree size).")
LEDGER_APPEND_SECONDS = Histogram(
    "kfm_ledger_append_seconds",
    "Time to commit one batch of rows: tiles, head and signed checkpoint written.",
    buckets=_SECONDS,
)
WRITER_LAG_SECONDS = Histogram(
    "kfm_ledger_writer_lag_seconds",
    "Time from a candidate's arrival on the writer topic to the end of the batch that decided it.",
    buckets=_SECONDS,
)
WRITER_LAG_OFFSETS = Gauge(
    "kfm_ledger_writer_lag_offsets",
    "Candidates on the writer topic not yet decided, after each batch: the topic's end minus the writer's read"
    " position, plus those read and waiting. A writer that has caught up shows 0 (the commit marker after the"
    " last transaction is read past); while it is behind, the markers of transactions it has not read count too.",
)

# --- reconciler -----------------------------------------------------------------------
RECONCILE_MISSING = Gauge(
    "kfm_reconcile_missing_commits", "Commits of watched branches with no row and no bundle run, at the last pass."
)
RECONCILE_OLDEST_MISSING_AGE = Gauge(
    "kfm_reconcile_oldest_missing_age_seconds", "Age of the oldest missing commit at the last pass (0: none)."
)

# --- rollback -------------------------------------------------------------------------
ROLLBACK_OUTCOMES = ("completed", "rejected", "failed", "dry_run")
ROLLBACKS = Counter("kfm_rollbacks_total", "Rollback requests answered, by outcome.", ["outcome"])
ROLLBACK_SECONDS = Histogram(
    "kfm_rollback_seconds",
    "Time from taking a rollback request to its final answer, by outcome.",
    ["outcome"],
    buckets=_SECONDS,
)

# --- OpenLineage (only when the openlineage-python client is configured: worker/io/lineage.py)
LINEAGE_EVENTS = Counter(
    "kfm_lineage_events_total",
    "OpenLineage events handed to the openlineage-python client's transport, by outcome "
    "(sent; failed after the transport's retries; dropped because the backlog was full).",
    ["outcome"],
)

# Series that exist from the start at 0, so a rate or an alert has a value before the first event.
for _outcome in ("recorded", "duplicate", "rejected"):
    LEDGER_CANDIDATES.labels(_outcome)
for _outcome in ROLLBACK_OUTCOMES:
    ROLLBACKS.labels(_outcome)
for _outcome in ("sent", "failed", "dropped"):
    LINEAGE_EVENTS.labels(_outcome)


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _cannot_listen(variable: str, host: str, port: int, e: OSError) -> ConfigError:
    why = "in use" if e.errno == errno.EADDRINUSE else (e.strerror or type(e).__name__)
    return ConfigError(f"{variable}: cannot listen on {host}:{port}: {why}")


def check_port(host: str, port: int, variable: str) -> None:
    """Before a start that takes long (the worker's), whether the listener could bind at all.

    Raises:
        ConfigError: it could not, naming ``variable``.
    """
    try:
        with socket.create_server((host, port), reuse_port=False) as _:
            pass
    except OSError as e:
        raise _cannot_listen(variable, host, port, e) from None


async def serve(host: str, port: int, variable: str, routes: dict[str, Handler] | None = None) -> web.AppRunner:
    """Start ``/metrics`` (and ``routes``, GET) on ``host:port`` in the running loop; the caller cleans up.

    Raises:
        ConfigError: the address cannot be bound (in use, not local), naming ``variable``.
    """
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    for path, handler in (routes or {}).items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        raise _cannot_listen(variable, host, port, e) from None
    return runner
