"""The webhook receiver: lakeFS action webhooks in, commit events to Kafka out.

It only validates and publishes; it never signs or bundles. It answers 2xx
only after the broker acknowledged the event, so a lakeFS run log shows a
failure whenever an event could be lost. Anything the client sends wrong, in
the headers, the framing, the coding or the JSON, is a 4xx with a one-line
reason (:mod:`hooks.intake`); a 5xx means only that Kafka did not answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import structlog
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from opentelemetry import trace

from hooks.auth import token_matches
from hooks.intake import (
    check_content_type,
    check_headers,
    content_coding,
    decode_body,
    header_values,
    read_body,
)
from hooks.payload import parse_webhook
from worker import metrics
from worker.clients import Producer
from worker.config import Settings
from worker.constants import HEADER_REQUEST_ID, HOOK_TOKEN_HEADER, TOPIC_EVENTS
from worker.errors import ConfigError, PayloadError, RequestRefusedError, TransientError
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


def _one(raw_headers: tuple[tuple[bytes, bytes], ...], name: str) -> bytes | None:
    """The header's value if it was sent exactly once (repeats are refused before this is asked)."""
    values = header_values(raw_headers, name)
    return values[0] if len(values) == 1 else None


async def webhook(request: web.Request) -> web.Response:
    settings = request.app[_SETTINGS]
    request_id = str(uuid.uuid4())
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        try:
            return await _handle(request, settings, await _admit(request, settings), request_id)
        except RequestRefusedError as e:
            log.info("webhook.refused", status=e.status, reason=e.reason)
            response = _error(e.status, e.reason, request_id)
            if not request.content.is_eof():
                response.force_close()  # what is left of the body must not be read as a next request
            return response
    finally:
        structlog.contextvars.unbind_contextvars("request_id", "repository_id", "commit_id", "trace_id")


async def _not_allowed(request: web.Request) -> web.Response:
    response = _error(405, "only POST is accepted here", str(uuid.uuid4()))
    response.headers["Allow"] = "POST"
    return response


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """Ask for the body (``100 Continue``) only when it would be read.

    aiohttp's default invites every client to send its body, a caller without the token
    too, only to refuse it once sent. Here the final answer comes at once when the head
    already decides it; ``None`` lets the handler run.
    """
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no 100 Continue; the header is ignored
    request_id = str(uuid.uuid4())
    raw_headers = request.raw_headers
    refusal: RequestRefusedError | None = None
    if request.method != "POST":
        refusal = RequestRefusedError(405, "only POST is accepted here")
    elif header_values(raw_headers, "Expect") != [b"100-continue"]:
        refusal = RequestRefusedError(417, "the only expectation understood is Expect: 100-continue")
    elif not token_matches(_one(raw_headers, HOOK_TOKEN_HEADER), request.app[_TOKEN]):
        refusal = RequestRefusedError(401, f"missing, repeated or wrong {HOOK_TOKEN_HEADER} header")
    elif (request.content_length or 0) > (limit := request.app[_SETTINGS].limits.max_webhook_bytes):
        refusal = RequestRefusedError(413, f"body larger than {limit} bytes")
    if refusal is not None:
        log.info("webhook.refused", status=refusal.status, reason=refusal.reason, request_id=request_id)
        response = _error(refusal.status, refusal.reason, request_id)
        if refusal.status == 405:
            response.headers["Allow"] = "POST"
        response.force_close()  # the client may send the body anyway; it is not read
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the final answer starts after the interim one
    return None


async def _admit(request: web.Request, settings: Settings) -> bytes:
    """The request's decoded body, once its token, headers, framing and coding are acceptable.

    Checked in this order, so an unauthenticated caller learns nothing but 401: the token
    (sent exactly once), header values (UTF-8; the ones we read sent at most once), the
    media type, the content coding, then the whole body within the size limit and the read
    timeout, then the decoded body within the size limit.

    Raises:
        RequestRefusedError: 401, 400, 415, 413 or 408 with the reason.
    """
    raw_headers = request.raw_headers
    if not token_matches(_one(raw_headers, HOOK_TOKEN_HEADER), request.app[_TOKEN]):
        log.warning("webhook.unauthorized", remote=request.remote)
        raise RequestRefusedError(401, f"missing, repeated or wrong {HOOK_TOKEN_HEADER} header")
    check_headers(raw_headers)
    check_content_type(_one(raw_headers, "Content-Type"))
    coding = content_coding(_one(raw_headers, "Content-Encoding"))
    limit = settings.limits.max_webhook_bytes
    timeout = settings.hooks_read_timeout_s
    try:
        async with asyncio.timeout(timeout):
            wire = await read_body(request.content, limit, request.content_length)
    except TimeoutError:
        raise RequestRefusedError(408, f"body not complete within {timeout:g} s") from None
    return decode_body(wire, coding, limit)


async def _handle(request: web.Request, settings: Settings, raw: bytes, request_id: str) -> web.Response:
    try:
        body, event = parse_webhook(raw)
    except PayloadError as e:
        log.info("webhook.rejected", reason=str(e))
        return _error(422 if raw.strip().startswith(b"{") else 400, str(e), request_id)
    if event is None:
        log.info("webhook.ignored", event_type=body.event_type, repository_id=body.repository_id)
        return web.json_response({"status": "ignored", "event_type": body.event_type, "request_id": request_id})
    if not settings.branch_watched(event.branch_id):
        log.info("webhook.unwatched_branch", branch_id=event.branch_id)
        return web.json_response({"status": "ignored", "reason": "branch not watched", "request_id": request_id})

    event = event.model_copy(update={"request_id": request_id})
    parent = context_from_headers([(k.decode("ascii", "replace").lower(), v) for k, v in request.raw_headers])
    with tracer.start_as_current_span("hooks.webhook", context=parent) as span:
        span.set_attribute("lakefs.repository", event.repository_id)
        span.set_attribute("lakefs.commit", event.commit_id)
        trace_id = format(span.get_span_context().trace_id, "032x")
        structlog.contextvars.bind_contextvars(
            repository_id=event.repository_id, commit_id=event.commit_id, trace_id=trace_id
        )
        try:
            sent = time.monotonic()
            partition, offset = await request.app[_PRODUCER].send(
                settings.topic(TOPIC_EVENTS),
                event.to_bytes(),
                key=event_key(event.repository_id, event.commit_id),
                headers=headers_with_trace([(HEADER_REQUEST_ID, request_id.encode())]),
            )
            metrics.WEBHOOK_PUBLISH_SECONDS.observe(time.monotonic() - sent)
        except (TransientError, ConfigError) as e:  # ConfigError: the cluster refused our login since start
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
    except (TransientError, ConfigError) as e:
        return web.json_response({"status": "unavailable", "reason": str(e)}, status=503)
    return web.json_response({"status": "ready"})


def make_app(settings: Settings, producer: Producer | None = None) -> web.Application:
    """Build the aiohttp app; the producer is closed on app cleanup."""
    app = web.Application(
        # client_max_size guards aiohttp's own readers; hooks.intake enforces the limit.
        client_max_size=settings.limits.max_webhook_bytes + 1,
        handler_args={
            # The body is decoded by hooks.intake, bounded; aiohttp's decoder fails as a 500.
            "auto_decompress": False,
            # A connection that sends no complete request head (idle keep-alive, or a head
            # trickling in) is closed after the read timeout, not after aiohttp's hour.
            "keepalive_timeout": settings.hooks_read_timeout_s,
        },
    )
    app[_SETTINGS] = settings
    app[_TOKEN] = settings.resolved_hook_token()
    app[_PRODUCER] = producer or Producer(
        settings.kafka,
        timeout_s=settings.kafka_timeout_s,
        max_message_bytes=settings.limits.max_message_bytes,
    )

    async def _close(app: web.Application) -> None:
        await app[_PRODUCER].aclose()

    async def _ensure_topics(app: web.Application) -> None:
        # Best effort: with Kafka down the service still starts (and is not ready); an
        # untrusted certificate or a refused login (ConfigError) stops it with one line.
        try:
            await ensure_all_topics(settings)
        except TransientError as e:
            log.warning("hooks.topics_not_ensured", error=str(e))

    app.on_startup.append(_ensure_topics)
    app.on_cleanup.append(_close)
    app.on_response_prepare.append(_count_webhook)
    if settings.hooks_metrics_port:
        app.cleanup_ctx.append(_metrics_listener)
    app.router.add_post(WEBHOOK_PATH, webhook, expect_handler=_expect)
    # Every other method gets its 405 from us, after our expect handler: aiohttp's own would
    # first invite the body with 100 Continue (refusing a request only after it was sent).
    app.router.add_route("*", WEBHOOK_PATH, _not_allowed, expect_handler=_expect)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _count_webhook(request: web.Request, response: web.StreamResponse) -> None:
    """Every final answer on the webhook path, whichever handler gave it (the expect handler too)."""
    if request.path == WEBHOOK_PATH:
        metrics.WEBHOOKS.labels(str(response.status)).inc()


async def _metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """``/metrics`` on its own port (worker/metrics.py says why not the webhook port)."""
    settings = app[_SETTINGS]
    runner = await metrics.serve(settings.metrics_host, settings.hooks_metrics_port, "KFM_HOOKS_METRICS_PORT")
    yield
    await runner.cleanup()


class _OneLineClientFaults(logging.Filter):
    """aiohttp logs a request it cannot parse (the client's fault) as an ERROR with a traceback.

    Such a request is bad input like any other: it gets its 400 from aiohttp and one log line
    here. Only the first line of aiohttp's message is kept; the rest quotes the raw request,
    which may carry the token.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        reason = str(exc.message).strip().splitlines()[0][:200] if exc.message else type(exc).__name__
        log.info("webhook.bad_http", status=exc.code, reason=reason)
        return False


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM (aiohttp installs the handlers)."""
    logging.getLogger("aiohttp.server").addFilter(_OneLineClientFaults())
    web.run_app(
        make_app(settings),
        host=settings.hooks_host,
        port=settings.hooks_port,
        print=None,
        shutdown_timeout=10.0,
    )
