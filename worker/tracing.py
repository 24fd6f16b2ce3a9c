"""OpenTelemetry setup and W3C trace-context propagation through Kafka headers.

Why: a bundle's trace must continue the webhook's trace, and a rollback's
trace must link to the bundle's, so the context rides in Kafka headers.
The in-memory exporter lets the bundler store its own span tree as OTLP JSON
inside the bundle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.constants import HEADER_TRACEPARENT

__all__ = [
    "context_from_headers",
    "current_trace_id",
    "headers_with_trace",
    "init_tracing",
    "span_exporter",
]

_propagator = TraceContextTextMapPropagator()
_memory_exporter = InMemorySpanExporter()
_initialised = False


def init_tracing(service_name: str) -> None:
    """Install a tracer provider once per process; later calls are no-ops."""
    global _initialised  # noqa: PLW0603 - process-wide OTel state by design
    if _initialised:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(SimpleSpanProcessor(_memory_exporter))
    trace.set_tracer_provider(provider)
    _initialised = True


def span_exporter() -> InMemorySpanExporter:
    return _memory_exporter


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


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
