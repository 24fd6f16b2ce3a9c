"""The webhook receiver: lakeFS action webhooks in, commit events to Kafka out.

It only validates and publishes; it never signs or bundles. It answers 2xx
only after the broker acknowledged the event, so a lakeFS run log shows a
failure whenever an event could be lost.
"""

from __future__ import annotations

import uuid

import structlog
from aiohttp import web
from opentelemetry import trace

from hooks.auth import token_matches
from hooks.payload import BadPayload, parse_webhook
from worker.clients import Producer
from worker.config import Settings
from worker.constants import HEADER_REQUEST_ID, HOOK_TOKEN_HEADER, TOPIC_EVENTS
from worker.errors import TransientError
from worker.events import event_key
from worker.topics import ensure_all_topics
from worker.tracing import context_from_headers, headers_with_trace

__all__ = ["WEBHOOK_PATH", "make_app"]

WEBHOOK_PATH = "/lakefs/webhook"

log = structlog.get_logger("kfm.hooks")
tracer = trace.get_tracer("kfm.hooks")

_PRODUCER: web.AppKey[Producer] = web.AppKey("producer", Producer)
_SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
_TOKEN: web.AppKey[str] = web.AppKey("token", str)


def _error(status: int, reason: str, request_id: str) -> web.Response:
    return web.json_response({"error": reason, "request_id": request_id}, status=status)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """Read at most ``limit`` bytes; ``None`` if the body is larger."""
    if request.content_length is not None and request.content_length > limit:
        return None
    data = await request.content.read(limit + 1)
    return None if len(data) > limit else data


async def webhook(request: web.Request) -> web.Response:
    settings = request.app[_SETTINGS]
    request_id = str(uuid.uuid4())
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        return await _handle(request, settings, request_id)
    finally:
        structlog.contextvars.unbind_contextvars("request_id", "repository_id", "commit_id", "trace_id")


async def _admit(request: web.Request, settings: Settings, request_id: str) -> bytes | web.Response:
    """The request's body, or the error response if it is unauthorised, not JSON, or too large."""
    if not token_matches(request.headers.get(HOOK_TOKEN_HEADER), request.app[_TOKEN]):
        log.warning("webhook.unauthorized", remote=request.remote)
        return _error(401, f"missing or wrong {HOOK_TOKEN_HEADER} header", request_id)
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return _error(415, "Content-Type must be application/json", request_id)
    raw = await _read_limited(request, settings.limits.max_webhook_bytes)
    if raw is None:
        return _error(413, f"body larger than {settings.limits.max_webhook_bytes} bytes", request_id)
    return raw


async def _handle(request: web.Request, settings: Settings, request_id: str) -> web.Response:
    raw = await _admit(request, settings, request_id)
    if isinstance(raw, web.Response):
        return raw
    try:
        body, event = parse_webhook(raw)
    except BadPayload as e:
        log.info("webhook.rejected", reason=str(e))
        return _error(422 if raw.strip().startswith(b"{") else 400, str(e), request_id)
    if event is None:
        log.info("webhook.ignored", event_type=body.event_type, repository_id=body.repository_id)
        return web.json_response({"status": "ignored", "event_type": body.event_type, "request_id": request_id})
    if not settings.branch_watched(event.branch_id):
        log.info("webhook.unwatched_branch", branch_id=event.branch_id)
        return web.json_response({"status": "ignored", "reason": "branch not watched", "request_id": request_id})

    event = event.model_copy(update={"request_id": request_id})
    parent = context_from_headers([(k.lower(), v.encode()) for k, v in request.headers.items()])
    with tracer.start_as_current_span("hooks.webhook", context=parent) as span:
        span.set_attribute("lakefs.repository", event.repository_id)
        span.set_attribute("lakefs.commit", event.commit_id)
        trace_id = format(span.get_span_context().trace_id, "032x")
        structlog.contextvars.bind_contextvars(
            repository_id=event.repository_id, commit_id=event.commit_id, trace_id=trace_id
        )
        try:
            partition, offset = await request.app[_PRODUCER].send(
                settings.topic(TOPIC_EVENTS),
                event.to_bytes(),
                key=event_key(event.repository_id, event.commit_id),
                headers=headers_with_trace([(HEADER_REQUEST_ID, request_id.encode())]),
            )
        except TransientError as e:
            log.error("webhook.kafka_unavailable", error=str(e))
            return _error(503, "event log unavailable; lakeFS should retry the action", request_id)
    log.info("webhook.published", event_type=event.source, partition=partition, offset=offset)
    return web.json_response(
        {"status": "published", "request_id": request_id, "trace_id": trace_id}, status=202
    )


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[_PRODUCER].ping()
    except TransientError as e:
        return web.json_response({"status": "unavailable", "reason": str(e)}, status=503)
    return web.json_response({"status": "ready"})


def make_app(settings: Settings, producer: Producer | None = None) -> web.Application:
    """Build the aiohttp app; the producer is closed on app cleanup."""
    # client_max_size guards aiohttp's own readers; our handler enforces the limit too.
    app = web.Application(client_max_size=settings.limits.max_webhook_bytes + 1)
    app[_SETTINGS] = settings
    app[_TOKEN] = settings.resolved_hook_token()
    app[_PRODUCER] = producer or Producer(
        settings.kafka_bootstrap,
        timeout_s=settings.kafka_timeout_s,
        max_message_bytes=settings.limits.max_message_bytes,
    )

    async def _close(app: web.Application) -> None:
        await app[_PRODUCER].aclose()

    async def _ensure_topics(app: web.Application) -> None:
        # Best effort: with Kafka down the service still starts (and is not ready).
        try:
            await ensure_all_topics(settings)
        except TransientError as e:
            log.warning("hooks.topics_not_ensured", error=str(e))

    app.on_startup.append(_ensure_topics)
    app.on_cleanup.append(_close)
    app.router.add_post(WEBHOOK_PATH, webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM (aiohttp installs the handlers)."""
    web.run_app(
        make_app(settings),
        host=settings.hooks_host,
        port=settings.hooks_port,
        print=None,
        shutdown_timeout=10.0,
    )
