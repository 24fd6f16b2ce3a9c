"""spans_to_otlp_json: finished spans as an OTLP/JSON ExportTraceServiceRequest."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from worker.canonical import canonical_bytes
from worker.evidence.otlp import _attr, spans_to_otlp_json
from worker.rollback.outcome import bundle_span

T0 = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z in ns
# Resource.create would add the SDK's version, which a pinned document must not depend on.
RESOURCE = Resource({"service.name": "kfm-worker", "deployment.environment": "test"})


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
    provider = TracerProvider(id_generator=CountingIds(), resource=RESOURCE)
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
    assert rs["resource"] == {"attributes": [
        {"key": "deployment.environment", "value": {"stringValue": "test"}},
        {"key": "service.name", "value": {"stringValue": "kfm-worker"}},
    ]}
    (ss,) = rs["scopeSpans"]
    assert ss["scope"] == {"name": "kfm-test"}
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
    assert spans["upload"]["status"] == {"code": 2, "message": "s3 down"}
    assert spans["upload"]["attributes"] == [
        {"key": "bucket", "value": {"stringValue": "kfm"}},
        {"key": "bytes", "value": {"intValue": "42"}},
        {"key": "ok", "value": {"boolValue": True}},
        {"key": "ratio", "value": {"doubleValue": 0.5}},
    ]
    assert spans["sign"]["attributes"] == []


def test_no_spans_gives_an_empty_span_list() -> None:
    doc = spans_to_otlp_json([], "svc")
    assert _spans(doc) == []
    assert doc["resourceSpans"][0]["resource"]["attributes"] == [_attr("service.name", "svc")]


def test_accepts_any_readable_spans_sequence(tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    _make_tree(tracer)
    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    assert spans_to_otlp_json(spans, "svc") == spans_to_otlp_json(list(spans), "svc")


def test_sequence_attributes_are_otlp_arrays() -> None:
    assert _attr("k", ("a", 1)) == {
        "key": "k", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}}
    }


def _pinned_tree(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """A span with an event, a link to another trace and an error status, and one
    from another scope; two resources (the second names no service)."""
    provider = TracerProvider(id_generator=CountingIds(), resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    other = TracerProvider(id_generator=CountingIds(), resource=Resource({"host.name": "h1"}))
    other.add_span_processor(SimpleSpanProcessor(exporter))
    linked = SpanContext(0xDEF, 0x77, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                         trace_state=TraceState([("kfm", "1")]))
    root = provider.get_tracer("kfm.bundler", "1.2").start_span(
        "bundle", start_time=T0, links=[Link(linked, {"kfm.link": "bundle"})])
    root.add_event("bundle.retry", {"attempt": 2}, timestamp=T0 + 3)
    root.set_status(Status(StatusCode.ERROR, "lakefs down"))
    root.end(end_time=T0 + 9)
    ledger = provider.get_tracer("kfm.ledger").start_span(
        "ledger.row", context=trace.set_span_in_context(root), start_time=T0 + 10)
    ledger.end(end_time=T0 + 11)
    elsewhere = other.get_tracer("kfm.hooks").start_span("hooks.webhook", start_time=T0 - 5)
    elsewhere.end(end_time=T0 - 1)
    provider.shutdown()
    other.shutdown()
    return list(exporter.get_finished_spans())


# The stored form of _pinned_tree, field by field: a change to it changes the bytes of every new
# bundle's otel-trace.json (the attestation binds them by digest; docs/bundles.md#run-evidence).
PINNED = {"resourceSpans": [
    {"resource": {"attributes": [
        {"key": "host.name", "value": {"stringValue": "h1"}},
        {"key": "service.name", "value": {"stringValue": "svc"}},
    ]}, "scopeSpans": [{"scope": {"name": "kfm.hooks"}, "spans": [
        {"traceId": f"{0xABC:032x}", "spanId": f"{1:016x}", "parentSpanId": "", "name": "hooks.webhook",
         "kind": 1, "startTimeUnixNano": str(T0 - 5), "endTimeUnixNano": str(T0 - 1), "attributes": [],
         "status": {"code": 0}},
    ]}]},
    {"resource": {"attributes": [
        {"key": "deployment.environment", "value": {"stringValue": "test"}},
        {"key": "service.name", "value": {"stringValue": "kfm-worker"}},
    ]}, "scopeSpans": [
        {"scope": {"name": "kfm.bundler", "version": "1.2"}, "spans": [
            {"traceId": f"{0xABC:032x}", "spanId": f"{1:016x}", "parentSpanId": "", "name": "bundle",
             "kind": 1, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 9), "attributes": [],
             "events": [{"timeUnixNano": str(T0 + 3), "name": "bundle.retry",
                         "attributes": [{"key": "attempt", "value": {"intValue": "2"}}]}],
             "links": [{"traceId": f"{0xDEF:032x}", "spanId": f"{0x77:016x}", "traceState": "kfm=1",
                        "attributes": [{"key": "kfm.link", "value": {"stringValue": "bundle"}}]}],
             "status": {"code": 2, "message": "lakefs down"}},
        ]},
        {"scope": {"name": "kfm.ledger"}, "spans": [
            {"traceId": f"{0xABC:032x}", "spanId": f"{2:016x}", "parentSpanId": f"{1:016x}", "name": "ledger.row",
             "kind": 1, "startTimeUnixNano": str(T0 + 10), "endTimeUnixNano": str(T0 + 11), "attributes": [],
             "status": {"code": 0}},
        ]},
    ]},
]}


def test_events_links_status_resource_and_scopes_are_kept(exporter: InMemorySpanExporter) -> None:
    assert spans_to_otlp_json(_pinned_tree(exporter), "svc") == PINNED


def test_the_stored_bytes_do_not_depend_on_span_order(exporter: InMemorySpanExporter) -> None:
    spans = _pinned_tree(exporter)
    assert canonical_bytes(spans_to_otlp_json(spans, "svc")) == canonical_bytes(
        spans_to_otlp_json(list(reversed(spans)), "svc"))


def test_dropped_counts_are_recorded() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, span_limits=SpanLimits(
        max_span_attributes=1, max_events=1, max_links=1))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ctx = SpanContext(0xDEF, 0x77, is_remote=True)
    span = provider.get_tracer("t").start_span("s", attributes={"a": 1, "b": 2},
                                               links=[Link(ctx), Link(ctx)])
    span.add_event("e1")
    span.add_event("e2")
    span.end()
    (out,) = _spans(spans_to_otlp_json(exporter.get_finished_spans(), "svc"))
    assert (out["droppedAttributesCount"], out["droppedEventsCount"], out["droppedLinksCount"]) == (1, 1, 1)
    assert len(out["attributes"]) == len(out["events"]) == len(out["links"]) == 1


def test_a_rollback_still_finds_the_bundle_span_in_the_new_shape(exporter: InMemorySpanExporter) -> None:
    """The bundle span is no longer in the first scope of the first resource here."""
    assert bundle_span(spans_to_otlp_json(_pinned_tree(exporter), "svc")) == (0xABC, 1)


def test_a_rollback_still_finds_the_bundle_span_in_the_old_shape() -> None:
    """Evidence stored before events, links, status messages and resources were kept."""
    old = {"resourceSpans": [{"resource": {"attributes": [_attr("service.name", "kfm-worker")]},
                              "scopeSpans": [{"scope": {"name": "kfm.worker"}, "spans": [
                                  {"traceId": "0a" * 16, "spanId": "0b" * 8, "parentSpanId": "", "name": "bundle",
                                   "kind": 1, "startTimeUnixNano": "1", "endTimeUnixNano": "2", "attributes": [],
                                   "status": {"code": 0}}]}]}]}
    assert bundle_span(old) == (int("0a" * 16, 16), int("0b" * 8, 16))
