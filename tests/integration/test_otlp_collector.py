"""Traces reach a real OpenTelemetry Collector, and the collector reads our stored traces.

The collector is ``tests/interop/otelcol`` (the collector's own OTLP receiver and the
contrib file exporter, built from the Go module proxy by ``deploy/local/build-otelcol.sh``).
The receiver (``kfm hooks serve``) and the worker run as processes configured only by
the standard ``OTEL_*`` variables. One lakeFS commit goes webhook -> bundle -> ledger
row, and a rollback to it follows: the spans of all three processes' work must arrive
with one trace id from the webhook to the row, every parent span present, and the
rollback linked to the bundle run. Then the OTLP JSON a bundle stores as evidence is
sent to the collector's OTLP/HTTP JSON endpoint: what its decoder reads back must be
what we stored, events, links, status and resource included.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from hooks.install import install_action
from tests.integration.fixtures_repo import populate
from tests.integration.helpers import (
    ROOT,
    _stop,
    free_port,
    hooks_server,
    isolated_registry,
    ledger_jsonl,
    logs_dir,
    request_rollback,
    unique,
    worker_process,
)
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import Settings
from worker.evidence.otlp import spans_to_otlp_json
from worker.rollback.request import RollbackRequest

pytestmark = [
    pytest.mark.stack,
    # The first test builds the collector: cold (no Go modules, no build cache) that took 4.5 to 12
    # minutes on two cores, over the suite's 300 s default.
    pytest.mark.timeout(1800),
]

BUILD = ROOT / "deploy" / "local" / "build-otelcol.sh"
PREFIX = unique("otel") + "."
BUCKET = unique("kfm-otel-test")
RUN = uuid.uuid4().hex  # tags this run's resources: the collector may see others' spans


class Collector:
    """A running collector: its OTLP/HTTP base URL and what its file exporter wrote."""

    def __init__(self, url: str, out: Path) -> None:
        self.url, self.out = url, out

    def requests(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, each with its resource's attributes as ``_resource`` (a dict)."""
        out = []
        for req in self.requests():
            for rs in req.get("resourceSpans", []):
                resource = {a["key"]: _plain(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
                for ss in rs.get("scopeSpans", []):
                    out.extend(
                        {**s, "_resource": resource, "_scope": ss.get("scope", {}).get("name")}
                        for s in ss.get("spans", [])
                    )
        return out


def _plain(value: dict[str, Any]) -> Any:
    return next(iter(value.values()))  # {"stringValue": "x"} -> "x"


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: _plain(a["value"]) for a in span.get("attributes", [])}


@pytest.fixture(scope="module")
def otelcol() -> Path:
    if shutil.which("go") is None:
        pytest.fail("the Go toolchain is needed to build tests/interop/otelcol (go 1.26+)")
    out = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1800, check=False)
    assert out.returncode == 0, f"build-otelcol.sh failed:\n{out.stderr}"
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def collector(
    otelcol: Path, stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Collector]:
    work = tmp_path_factory.mktemp("otelcol")
    port = free_port()
    out = work / "traces.jsonl"
    config = work / "config.yaml"
    # JSON is YAML: the collector's config, with its own telemetry off (no metrics port of its own).
    config.write_text(
        json.dumps(
            {
                "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
                "exporters": {"file": {"path": str(out), "flush_interval": "100ms"}},
                "service": {
                    "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
                },
            }
        )
    )
    log = open(logs_dir(stack_env) / f"otelcol-{port}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([str(otelcol), "--config", f"file:{config}"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:  # the receiver answers a GET on its traces path with 405 once it listens
                asyncio.run(_get(url + "/v1/traces"))
                break
            except aiohttp.ClientConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the collector did not start: {logs_dir(stack_env)}") from None
                time.sleep(0.2)
        yield Collector(url, out)
    finally:
        _stop(proc)
        log.close()


async def _get(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str], collector: Collector) -> dict[str, str]:
    return {
        **isolated_registry(stack_env, PREFIX, BUCKET),
        # Only the standard variables: the processes name themselves kfm-hooks and kfm-worker.
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment=test,kfm.test.run={RUN}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # the batch processor's wait (5 s by default)
    }


async def _wait_row(settings: Settings, commit: str, wait_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        rows = [json.loads(x) for x in (await ledger_jsonl(settings)).splitlines()]
        for row in rows:
            if row["lakefs_commit"] == commit:
                return row
        await asyncio.sleep(1)
    raise AssertionError(f"commit {commit} not recorded within {wait_s} s")


async def _roll_back(settings: Settings, repo: str, commit: str, wait_s: float = 180) -> dict[str, Any]:
    req = RollbackRequest(
        request_id=str(uuid.uuid4()),
        lakefs_repo=repo,
        commit=commit,
        target_branch="main",
        strategy="branch",
        requested_by="test",
        reason="trace test",
        requested_at=datetime.now(UTC),
    )
    finals = await request_rollback(settings, req, timeout=wait_s)
    if not finals:
        raise AssertionError(f"no final rollback result within {wait_s} s")
    return finals[0]


def _wait_spans(collector: Collector, ready: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """The collector's spans of this run once ``ready(spans)`` holds (exports are batched)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = [s for s in collector.spans() if s["_resource"].get("kfm.test.run") == RUN]
        if ready(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


@pytest.fixture(scope="module")
def traced(env: dict[str, str], settings: Settings, collector: Collector) -> dict[str, Any]:
    """One commit through the receiver and the worker, then a rollback to it."""
    with hooks_server(env) as url, worker_process(env, PREFIX.rstrip(".")):
        return asyncio.run(_traced(settings, url + "/lakefs/webhook"))


async def _traced(settings: Settings, webhook: str) -> dict[str, Any]:
    lakefs = LakeFS(settings)
    repo = unique("otel")
    try:
        await lakefs.create_repository(repo, f"local://{repo}")
        await install_action(lakefs, repo, "main", webhook)
        commit = await populate(lakefs, repo, message="traced")
        row = await _wait_row(settings, commit)
        result = await _roll_back(settings, repo, commit)
        async with open_bucket(settings) as bucket:
            key = f"evidence/{commit}/{row['openlineage_run_id']}/otel-trace.json"
            stored = json.loads((await bucket.get(key, 1 << 20))[0])
        return {"repo": repo, "commit": commit, "row": row, "result": result, "stored": stored}
    finally:
        lakefs.close()


def test_one_commit_is_one_trace_from_webhook_to_row_and_the_rollback_links_it(
    collector: Collector, traced: dict[str, Any]
) -> None:
    commit, trace_id = traced["commit"], traced["row"]["otel_trace_id"]
    assert traced["result"]["status"] == "completed", traced["result"]

    def named(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The commit's spans by name: those of its trace, and its rollback's root."""
        return {
            s["name"]: s
            for s in spans
            if s["traceId"] == trace_id or (s["name"] == "rollback" and _attrs(s).get("lakefs.commit") == commit)
        }

    spans = _wait_spans(
        collector, lambda spans: {"hooks.webhook", "bundle", "ledger.append", "rollback"} <= set(named(spans))
    )
    of_commit = named(spans)
    assert {"hooks.webhook", "bundle", "ledger.append", "rollback"} <= set(of_commit), sorted(of_commit)
    webhook, bundle, append, rollback = (of_commit[n] for n in ("hooks.webhook", "bundle", "ledger.append", "rollback"))
    assert _attrs(webhook)["lakefs.commit"] == _attrs(bundle)["lakefs.commit"] == _attrs(append)["lakefs.commit"]

    # Which process sent what, named by the standard variables' resource.
    assert webhook["_resource"]["service.name"] == "kfm-hooks"
    assert {bundle["_resource"]["service.name"], append["_resource"]["service.name"]} == {"kfm-worker"}
    assert {s["_resource"]["deployment.environment"] for s in spans} == {"test"}

    # One trace from the webhook to the row: receiver -> Kafka -> bundler -> Kafka -> writer.
    assert {webhook["traceId"], bundle["traceId"], append["traceId"]} == {trace_id}
    assert bundle["parentSpanId"] == webhook["spanId"]
    assert append["parentSpanId"] == bundle["spanId"]
    assert _attrs(append)["kfm.seq"] == str(traced["row"]["seq"]) and _attrs(append)["kfm.outcome"] == "recorded"
    in_trace = [s for s in spans if s["traceId"] == trace_id]
    ids = {s["spanId"] for s in in_trace}
    roots = [s for s in in_trace if not s.get("parentSpanId")]
    assert roots == [webhook], [s["name"] for s in roots]
    assert all(s["parentSpanId"] in ids for s in in_trace if s is not webhook), "a parent span is missing"
    assert {"bundle.package", "bundle.upload"} <= {s["name"] for s in in_trace}

    # The writer's batch links every candidate's bundle run; the row's span links the batch.
    (batch,) = [
        s
        for s in spans
        if s["name"] == "ledger.batch" and s["spanId"] in {lk["spanId"] for lk in append.get("links", [])}
    ]
    assert {"traceId": trace_id, "spanId": bundle["spanId"]} in [
        {"traceId": lk["traceId"], "spanId": lk["spanId"]} for lk in batch.get("links", [])
    ]

    # A rollback is its own trace (a request, maybe days later), linked to the bundle run.
    assert rollback["traceId"] != trace_id
    assert (trace_id, bundle["spanId"]) in {(lk["traceId"], lk["spanId"]) for lk in rollback.get("links", [])}
    assert traced["result"]["detail"]["trace_id"] == rollback["traceId"]
    rb_ids = {s["spanId"] for s in spans if s["traceId"] == rollback["traceId"]}
    assert {s["name"] for s in spans if s["traceId"] == rollback["traceId"]} >= {"rollback", "rollback.restore.lakefs"}
    assert all(
        s["parentSpanId"] in rb_ids for s in spans if s["traceId"] == rollback["traceId"] and s.get("parentSpanId")
    )

    # The evidence stored beside the bundle is the same span tree the collector got.
    stored = {
        s["spanId"]: s for rs in traced["stored"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
    }
    got = {s["spanId"]: s for s in in_trace}
    assert bundle["spanId"] in stored and set(stored) <= set(got)
    for span_id, s in stored.items():
        assert (s["name"], s["parentSpanId"]) == (got[span_id]["name"], got[span_id].get("parentSpanId", ""))
    (stored_resource,) = [rs["resource"] for rs in traced["stored"]["resourceSpans"]]
    assert {a["key"]: _plain(a["value"]) for a in stored_resource["attributes"]} == bundle["_resource"]


def _normal(value: Any) -> Any:
    """OTLP/JSON with the protobuf JSON mapping's defaults left out, as the collector writes it
    (a zero, an empty string, list or object is the same as an absent field)."""
    if isinstance(value, dict):
        out = {k: _normal(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ("", 0, [], {}, None)}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


async def _post_json(url: str, doc: dict[str, Any]) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/v1/traces", data=json.dumps(doc), headers={"Content-Type": "application/json"}) as r,
    ):
        return r.status


def _decoded(collector: Collector, doc: dict[str, Any], tag: str) -> dict[str, Any]:
    """Send ``doc`` to the collector's OTLP/HTTP JSON endpoint; what its decoder wrote back."""
    assert asyncio.run(_post_json(collector.url, doc)) == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for req in collector.requests():
            attrs = {
                a["key"]: _plain(a["value"])
                for rs in req["resourceSpans"]
                for a in rs.get("resource", {}).get("attributes", [])
            }
            if attrs.get("kfm.test.doc") == tag:
                return req
        time.sleep(0.2)
    raise AssertionError(f"the collector wrote nothing for {tag}")


def _tagged(doc: dict[str, Any], tag: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    for rs in doc["resourceSpans"]:
        rs["resource"]["attributes"].append({"key": "kfm.test.doc", "value": {"stringValue": tag}})
    return doc


def test_the_collector_decodes_a_stored_bundle_trace_as_stored(collector: Collector, traced: dict[str, Any]) -> None:
    doc = _tagged(traced["stored"], uuid.uuid4().hex)
    assert _normal(
        _decoded(collector, doc, doc["resourceSpans"][0]["resource"]["attributes"][-1]["value"]["stringValue"])
    ) == _normal(doc)


def test_the_collector_decodes_events_links_status_and_resources_as_stored(collector: Collector) -> None:
    """Every field spans_to_otlp_json writes, through the collector's own decoder."""
    exporter = InMemorySpanExporter()
    tag = uuid.uuid4().hex
    provider = TracerProvider(
        resource=Resource({"service.name": "kfm-worker", "kfm.test.doc": tag, "k8s.pod.name": "w-0", "kfm.replicas": 2})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("kfm.bundler", "1.0")
    other = SpanContext(0x1234, 0x56, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with tracer.start_as_current_span(
        "bundle", kind=SpanKind.CONSUMER, links=[Link(other, {"kfm.link": "bundle", "n": 1})]
    ) as root:
        root.add_event("bundle.retry", {"attempt": 2, "reason": "lakefs down", "tags": ("a", "b")})
        root.set_attribute("ratio", 0.25)
        with tracer.start_as_current_span("bundle.upload", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "s3 refused"))
    provider.shutdown()
    doc = spans_to_otlp_json(exporter.get_finished_spans(), "kfm-worker")
    back = _decoded(collector, doc, tag)
    assert _normal(back) == _normal(doc)
    (span,) = [s for s in back["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["name"] == "bundle"]
    assert span["events"][0]["name"] == "bundle.retry" and span["links"][0]["spanId"] == f"{0x56:016x}"
