"""OpenTelemetry setup and W3C trace-context propagation through Kafka headers.

Why: a bundle's trace must continue the webhook's trace, the ledger row's
span the bundle's, and a rollback's trace must link to the bundle's, so the
context rides in Kafka headers. The in-memory exporter lets the bundler store
its own span tree as OTLP JSON beside the bundle; a team's collector gets the
same spans over OTLP/HTTP when the standard ``OTEL_*`` variables ask for it
(docs/configuration.md#traces), and nothing leaves the process otherwise.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.constants import HEADER_TRACEPARENT
from worker.errors import ConfigError

__all__ = [
    "TraceBuffer",
    "context_from_headers",
    "continuing",
    "headers_with_trace",
    "init_tracing",
    "remote_context",
    "trace_buffer",
    "trace_exporters",
]

_propagator = TraceContextTextMapPropagator()
_initialised = False


class TraceBuffer(SpanExporter):
    """Keeps finished spans by trace id until a bundle takes its own tree.

    Bounded: the oldest traces are dropped past ``max_traces`` so a trace that
    nobody takes (a webhook-only trace, say) cannot grow memory forever. Only spans
    of ``scopes`` (None: all) are kept, so other work's traces (every ledger batch
    and rollback is a trace of its own) cannot push a bundle run's spans out
    while it is still being built.
    """

    def __init__(self, max_traces: int = 1024, scopes: frozenset[str] | None = None) -> None:
        self._spans: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._max = max_traces
        self._scopes = scopes
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for s in spans:
                ctx = s.get_span_context()
                if ctx is None:
                    continue
                scope = s.instrumentation_scope
                if self._scopes is not None and (scope is None or scope.name not in self._scopes):
                    continue
                self._spans.setdefault(ctx.trace_id, []).append(s)
                self._spans.move_to_end(ctx.trace_id)
            while len(self._spans) > self._max:
                self._spans.popitem(last=False)
        return SpanExportResult.SUCCESS

    def take(self, trace_id: int) -> list[ReadableSpan]:
        with self._lock:
            return self._spans.pop(trace_id, [])

    def shutdown(self) -> None:
        with self._lock:
            self._spans.clear()


BUNDLER_SCOPE = "kfm.bundler"  # the tracer of worker/io/bundling.py and staging.py: a bundle's own tree
_buffer = TraceBuffer(scopes=frozenset({BUNDLER_SCOPE}))


def trace_exporters(setting: str = "none", env: dict[str, str] | None = None) -> list[str]:
    """The exporters the standard ``OTEL_*`` variables (and ``KFM_OTEL_EXPORTER``) ask for.

    ``OTEL_TRACES_EXPORTER`` (a comma-separated list of ``otlp``, ``console``,
    ``none``) wins when set; unset, spans go over OTLP only if an endpoint is
    configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``_TRACES_ENDPOINT``), so a
    process with no collector never tries to reach one (the SDK's own default,
    ``otlp`` to localhost, would log export failures forever).
    ``OTEL_SDK_DISABLED=true`` turns every exporter off; the in-process buffer that
    bundles read their trace from stays, since that trace is evidence, not telemetry.

    Raises:
        ConfigError: an exporter or an OTLP protocol this build does not have.
    """
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if raw:
        names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        names = ["otlp"]
    else:
        names = []
    unknown = sorted(set(names) - {"otlp", "console", "none"})
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={raw}: {', '.join(unknown)} is not one of otlp, console, none")
    if setting == "console":
        names.append("console")
    elif setting not in ("", "none"):
        raise ConfigError(f"KFM_OTEL_EXPORTER={setting}: must be none or console")
    if "otlp" in names:
        var = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        if not env.get(var):
            var = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = env.get(var) or "http/protobuf"
        if protocol != "http/protobuf":
            raise ConfigError(f"{var}={protocol}: this build exports traces over http/protobuf only")
    return [n for n in dict.fromkeys(names) if n != "none"]


def _resource(service_name: str) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` (which the SDK reads),
    with ``service_name`` as the name only when neither of them names the service."""
    named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    return Resource.create({} if named else {SERVICE_NAME: service_name})


def init_tracing(service_name: str, exporter: str = "none") -> None:
    """Install a tracer provider once per process; later calls are no-ops.

    Besides the in-process buffer that bundles read their span tree from:
    OTLP/HTTP (batched; the exporter reads ``OTEL_EXPORTER_OTLP_*`` itself) and/or
    console (JSON spans on stdout), as :func:`trace_exporters` decides from
    ``exporter`` (``KFM_OTEL_EXPORTER``) and the ``OTEL_*`` variables.

    Raises:
        ConfigError: see :func:`trace_exporters`.
    """
    global _initialised  # noqa: PLW0603 - process-wide OTel state by design
    if _initialised:
        return
    names = trace_exporters(exporter)
    provider = TracerProvider(resource=_resource(service_name))
    provider.add_span_processor(SimpleSpanProcessor(_buffer))
    if "otlp" in names:
        # Imported only when asked for: it pulls in requests and protobuf, which start-up otherwise skips.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in names:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _initialised = True


def trace_buffer() -> TraceBuffer:
    return _buffer


def headers_with_trace(
    headers: Iterable[tuple[str, bytes]] = (), context: Context | None = None
) -> list[tuple[str, bytes]]:
    """Kafka headers plus the current (or given) span's ``traceparent``."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    out = [(k, v) for k, v in headers if k != HEADER_TRACEPARENT]
    if HEADER_TRACEPARENT in carrier:
        out.append((HEADER_TRACEPARENT, carrier[HEADER_TRACEPARENT].encode("ascii")))
    return out


def context_from_headers(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    carrier: dict[str, str] = {}
    for key, value in headers or ():
        if key.lower() == HEADER_TRACEPARENT:
            try:
                carrier[HEADER_TRACEPARENT] = value.decode("ascii")
            except UnicodeDecodeError:
                continue
    return _propagator.extract(carrier)


def remote_context(trace_id: str, span_id: str) -> Context | None:
    """The context of a span another process (or an earlier run) ended, from its hex ids,
    for a child span or a ``traceparent`` header; None if the ids are not valid."""
    try:
        ctx = SpanContext(
            int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
    except ValueError:
        return None
    if not ctx.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(ctx))


@contextmanager
def continuing(headers: Sequence[tuple[str, bytes]] | None) -> Iterator[None]:
    """Spans started inside are children of the message's ``traceparent`` (if it has one),
    for handlers that start their spans deep down rather than take a parent argument."""
    token = otel_context.attach(context_from_headers(headers))
    try:
        yield
    finally:
        otel_context.detach(token)
