"""Finished OTel spans as OTLP/JSON (the ``ExportTraceServiceRequest`` shape).

Stored as run evidence so a bundle's trace can be read without the tracing
backend that originally received it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["spans_to_otlp_json"]


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


def spans_to_otlp_json(spans: Sequence[ReadableSpan], service_name: str) -> dict[str, Any]:
    out = []
    for s in sorted(spans, key=lambda x: (x.start_time or 0, x.name)):
        ctx = s.get_span_context()
        if ctx is None:
            continue
        out.append(
            {
                "traceId": format(ctx.trace_id, "032x"),
                "spanId": format(ctx.span_id, "016x"),
                "parentSpanId": format(s.parent.span_id, "016x") if s.parent else "",
                "name": s.name,
                "kind": int(s.kind.value) + 1,
                "startTimeUnixNano": str(s.start_time or 0),
                "endTimeUnixNano": str(s.end_time or 0),
                "attributes": [_attr(k, v) for k, v in sorted((s.attributes or {}).items())],
                "status": {"code": int(s.status.status_code.value)},
            }
        )
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", service_name)]},
                "scopeSpans": [{"scope": {"name": "kfm.worker"}, "spans": out}],
            }
        ]
    }
