"""Finished OTel spans as OTLP/JSON (the ``ExportTraceServiceRequest`` shape).

Stored as run evidence so a bundle's trace can be read without the tracing
backend that originally received it: so it keeps what a backend would have
got, the spans' resource (``service.name``, ``OTEL_RESOURCE_ATTRIBUTES``, the
SDK's attributes), instrumentation scope, events, links, status message and
dropped counts, encoded as the OTLP/JSON mapping says (ids as lowercase hex,
64-bit integers as decimal strings, enums as integers, zero values left out
where the protobuf JSON mapping leaves them out). The collector's own decoder
reads it back in ``tests/integration/test_otlp_collector.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

__all__ = ["spans_to_otlp_json"]

# The scope of spans that carry none (never the case with a tracer from the SDK).
_NO_SCOPE = InstrumentationScope("kfm.worker")


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return _attr("", value)["value"]  # type: ignore[no-any-return]


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, list | tuple):
        return {"key": key, "value": _value(value)}
    if isinstance(value, bool):
        v: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


def _attrs(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [_attr(k, v) for k, v in sorted((attributes or {}).items())]


def _dropped(out: dict[str, Any], field: str, count: int) -> None:
    if count:
        out[field] = count


def _context(ctx: SpanContext) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": format(ctx.trace_id, "032x"), "spanId": format(ctx.span_id, "016x")}
    if ctx.trace_state:
        out["traceState"] = ctx.trace_state.to_header()
    return out


def _span(s: ReadableSpan, ctx: SpanContext) -> dict[str, Any]:
    out: dict[str, Any] = _context(ctx)
    out.update({
        "parentSpanId": format(s.parent.span_id, "016x") if s.parent else "",
        "name": s.name,
        "kind": int(s.kind.value) + 1,
        "startTimeUnixNano": str(s.start_time or 0),
        "endTimeUnixNano": str(s.end_time or 0),
        "attributes": _attrs(s.attributes),
    })
    _dropped(out, "droppedAttributesCount", s.dropped_attributes)
    if s.events:
        out["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attrs(e.attributes)}
            for e in s.events
        ]
    _dropped(out, "droppedEventsCount", s.dropped_events)
    if s.links:
        out["links"] = [{**_context(link.context), "attributes": _attrs(link.attributes)} for link in s.links]
    _dropped(out, "droppedLinksCount", s.dropped_links)
    status: dict[str, Any] = {"code": int(s.status.status_code.value)}
    if s.status.description:
        status["message"] = s.status.description
    out["status"] = status
    return out


def spans_to_otlp_json(spans: Sequence[ReadableSpan], service_name: str) -> dict[str, Any]:
    """One ``resourceSpans`` entry per resource, one ``scopeSpans`` per scope in it.

    Deterministic for the same spans in any order: resources and scopes in order
    of their first span, spans sorted by start time then name. ``service_name``
    names the service of spans whose resource does not (and of the empty
    document, which keeps one empty span list).
    """
    groups: dict[tuple[Any, ...], dict[tuple[str, str, str], list[dict[str, Any]]]] = {}
    resources: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in sorted(spans, key=lambda x: (x.start_time or 0, x.name)):
        ctx = s.get_span_context()
        if ctx is None:
            continue
        attributes = dict(s.resource.attributes) if s.resource is not None else {}
        attributes.setdefault("service.name", service_name)
        rkey = tuple(sorted((k, repr(v)) for k, v in attributes.items()))
        if rkey not in resources:
            resources[rkey] = {"attributes": _attrs(attributes)}
        scope = s.instrumentation_scope or _NO_SCOPE
        skey = (scope.name, scope.version or "", scope.schema_url or "")
        groups.setdefault(rkey, {}).setdefault(skey, []).append(_span(s, ctx))
    if not groups:
        return {
            "resourceSpans": [
                {
                    "resource": {"attributes": [_attr("service.name", service_name)]},
                    "scopeSpans": [{"scope": {"name": _NO_SCOPE.name}, "spans": []}],
                }
            ]
        }
    return {
        "resourceSpans": [
            {
                "resource": resources[rkey],
                "scopeSpans": [_scope_spans(*skey, spans_of) for skey, spans_of in scopes.items()],
            }
            for rkey, scopes in groups.items()
        ]
    }


def _scope_spans(name: str, version: str, schema_url: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    scope: dict[str, Any] = {"name": name}
    if version:
        scope["version"] = version
    out: dict[str, Any] = {"scope": scope, "spans": spans}
    if schema_url:
        out["schemaUrl"] = schema_url
    return out
