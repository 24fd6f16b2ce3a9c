"""spans_to_otlp_json: finished spans as an OTLP/JSON ExportTraceServiceRequest."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from worker.evidence.otlp import _attr, spans_to_otlp_json

T0 = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z in ns


class CountingIds(IdGenerator):
    """Small, predictable ids: exercises the zero padding of the hex form."""

    def __init__(self) -> None:
        self._span = 0

    def generate_span_id(self) -> int:
        self._span += 1
        return self._span

    def generate_trace_id(self) -> int:
        return 0xABC


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    yield exp
    exp.clear()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[trace.Tracer]:
    provider = TracerProvider(id_generator=CountingIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("kfm-test")
    provider.shutdown()


def _make_tree(tracer: trace.Tracer) -> None:
    root = tracer.start_span("bundle", kind=SpanKind.CONSUMER, start_time=T0, attributes={"repo": "repo-one"})
    ctx = trace.set_span_in_context(root)
    child = tracer.start_span(
        "upload",
        context=ctx,
        kind=SpanKind.CLIENT,
        start_time=T0 + 10,
        attributes={"bytes": 42, "ok": True, "ratio": 0.5, "bucket": "kfm"},
    )
    child.set_status(Status(StatusCode.ERROR, "s3 down"))
    child.end(end_time=T0 + 20)
    sibling = tracer.start_span("sign", context=ctx, start_time=T0 + 5)
    sibling.set_status(Status(StatusCode.OK))
    sibling.end(end_time=T0 + 8)
    root.end(end_time=T0 + 30)


def _spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    (rs,) = doc["resourceSpans"]
    (ss,) = rs["scopeSpans"]
    return list(ss["spans"])


def test_envelope_shape(tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    _make_tree(tracer)
    doc = spans_to_otlp_json(exporter.get_finished_spans(), "kfm-worker")
    (rs,) = doc["resourceSpans"]
    assert rs["resource"] == {"attributes": [{"key": "service.name", "value": {"stringValue": "kfm-worker"}}]}
    (ss,) = rs["scopeSpans"]
    assert ss["scope"] == {"name": "kfm.worker"}
    assert len(ss["spans"]) == 3


def test_ids_are_padded_lowercase_hex_and_parents_link(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    _make_tree(tracer)
    spans = {s["name"]: s for s in _spans(spans_to_otlp_json(exporter.get_finished_spans(), "svc"))}
    for s in spans.values():
        assert re.fullmatch(r"[0-9a-f]{32}", s["traceId"])
        assert re.fullmatch(r"[0-9a-f]{16}", s["spanId"])
        assert s["traceId"] == f"{0xABC:032x}"
    root, upload, sign = spans["bundle"], spans["upload"], spans["sign"]
    assert root["spanId"] == "0000000000000001"
    assert root["parentSpanId"] == ""
    assert upload["parentSpanId"] == root["spanId"]
    assert sign["parentSpanId"] == root["spanId"]
    assert len({s["spanId"] for s in spans.values()}) == 3


def test_spans_sorted_by_start_time(tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    _make_tree(tracer)
    finished = exporter.get_finished_spans()
    assert [s.name for s in finished] == ["upload", "sign", "bundle"]  # end order
    out = _spans(spans_to_otlp_json(list(reversed(finished)), "svc"))
    assert [s["name"] for s in out] == ["bundle", "sign", "upload"]
    assert [s["startTimeUnixNano"] for s in out] == [str(T0), str(T0 + 5), str(T0 + 10)]
    assert [s["endTimeUnixNano"] for s in out] == [str(T0 + 30), str(T0 + 8), str(T0 + 20)]


def test_kind_status_and_attributes_use_otlp_encoding(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    _make_tree(tracer)
    spans = {s["name"]: s for s in _spans(spans_to_otlp_json(exporter.get_finished_spans(), "svc"))}
    # OTLP SpanKind: INTERNAL=1, SERVER=2, CLIENT=3, PRODUCER=4, CONSUMER=5.
    assert spans["bundle"]["kind"] == 5
    assert spans["upload"]["kind"] == 3
    assert spans["sign"]["kind"] == 1
    # OTLP StatusCode: UNSET=0, OK=1, ERROR=2.
    assert spans["bundle"]["status"] == {"code": 0}
    assert spans["sign"]["status"] == {"code": 1}
    assert spans["upload"]["status"] == {"code": 2}
    assert spans["upload"]["attributes"] == [
        {"key": "bucket", "value": {"stringValue": "kfm"}},
        {"key": "bytes", "value": {"intValue": "42"}},
        {"key": "ok", "value": {"boolValue": True}},
        {"key": "ratio", "value": {"doubleValue": 0.5}},
    ]
    assert spans["sign"]["attributes"] == []


def test_no_spans_gives_an_empty_span_list() -> None:
    assert _spans(spans_to_otlp_json([], "svc")) == []


def test_accepts_any_readable_spans_sequence(tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    _make_tree(tracer)
    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    assert spans_to_otlp_json(spans, "svc") == spans_to_otlp_json(list(spans), "svc")


def test_sequence_attributes_are_otlp_arrays() -> None:
    assert _attr("k", ("a", 1)) == {
        "key": "k", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}
    }
