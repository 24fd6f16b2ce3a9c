"""OpenTelemetry setup and W3C trace-context propagation through Kafka headers.

Why: a bundle's trace must continue the webhook's trace, and a rollback's
trace must link to the bundle's, so the context rides in Kafka headers.
The in-memory exporter lets the bundler store its own span tree as OTLP JSON
inside the bundle.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.constants import HEADER_TRACEPARENT

__all__ = [
    "TraceBuffer",
    "context_from_headers",
    "headers_with_trace",
    "init_tracing",
    "trace_buffer",
]

_propagator = TraceContextTextMapPropagator()
_initialised = False


class TraceBuffer(SpanExporter):
    """Keeps finished spans by trace id until a bundle takes its own tree.

    Bounded: the oldest traces are dropped past ``max_traces`` so a trace that
    nobody takes (a webhook-only trace, say) cannot grow memory forever.
    """

    def __init__(self, max_traces: int = 1024) -> None:
        self._spans: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._max = max_traces
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for s in spans:
                ctx = s.get_span_context()
                if ctx is None:
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


_buffer = TraceBuffer()


def init_tracing(service_name: str, exporter: str = "none") -> None:
    """Install a tracer provider once per process; later calls are no-ops.

    ``exporter``: ``none`` or ``console`` (JSON spans on stdout) besides the
    in-process buffer that bundles read their span tree from.
    """
    global _initialised  # noqa: PLW0603 - process-wide OTel state by design
    if _initialised:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(_buffer))
    if exporter == "console":
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
