"""worker.tracing: which exporters the standard OTEL_* variables select, the resource's
service name, and the contexts that carry a trace across Kafka."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from worker.errors import ConfigError
from worker.tracing import (
    TraceBuffer,
    _resource,
    context_from_headers,
    continuing,
    headers_with_trace,
    remote_context,
    trace_exporters,
)

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("env", "setting", "expected"),
    [
        ({}, "none", []),  # today's default: nothing leaves the process
        ({}, "console", ["console"]),
        (ENDPOINT, "none", ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "none", ["otlp"]),
        (ENDPOINT, "console", ["otlp", "console"]),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, "none", []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "none", ["otlp"]),  # the SDK's default endpoint then
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, "none", ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console", ["console"]),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, "console", []),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "none", ["otlp"]),
    ],
)
def test_exporters_follow_the_standard_variables(env: dict[str, str], setting: str, expected: list[str]) -> None:
    assert trace_exporters(setting, env) == expected


@pytest.mark.parametrize(
    ("env", "setting", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "none", "OTEL_TRACES_EXPORTER=zipkin: zipkin is not one of"),
        ({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "none", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: "),
        (
            {
                **ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
            },
            "none",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json",
        ),
        ({}, "jaeger", "KFM_OTEL_EXPORTER=jaeger: must be none or console"),
    ],
)
def test_unsupported_choices_are_one_line_config_errors(env: dict[str, str], setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        trace_exporters(setting, env)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_grpc_protocol_without_otlp_export_is_not_an_error() -> None:
    assert trace_exporters("none", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == []


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, "kfm-worker"),
        ({"OTEL_SERVICE_NAME": "registry-prod"}, "registry-prod"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,deployment.environment=prod"}, "from-attrs"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs", "OTEL_SERVICE_NAME": "wins"}, "wins"),
    ],
)
def test_the_standard_variables_name_the_service(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str
) -> None:
    for var in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _resource("kfm-worker").attributes["service.name"] == name


def test_resource_attributes_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,k8s.pod.name=w-0")
    attrs = _resource("kfm-hooks").attributes
    assert (attrs["deployment.environment"], attrs["k8s.pod.name"]) == ("prod", "w-0")


def test_remote_context_round_trips_through_a_traceparent_header() -> None:
    ctx = remote_context("0a" * 16, "0b" * 8)
    assert ctx is not None
    (header,) = headers_with_trace([], context=ctx)
    assert header == ("traceparent", f"00-{'0a' * 16}-{'0b' * 8}-01".encode())
    back = trace.get_current_span(context_from_headers([header])).get_span_context()
    assert (back.trace_id, back.span_id) == (int("0a" * 16, 16), int("0b" * 8, 16))


@pytest.mark.parametrize(("trace_id", "span_id"), [("", ""), ("0" * 32, "0b" * 8), ("zz", "01"), ("0a" * 16, "")])
def test_remote_context_of_invalid_ids_is_none(trace_id: str, span_id: str) -> None:
    assert remote_context(trace_id, span_id) is None


def test_continuing_makes_the_header_the_current_parent() -> None:
    header = ("traceparent", f"00-{'0c' * 16}-{'0d' * 8}-01".encode())
    with continuing([header]):
        current = trace.get_current_span().get_span_context()
        assert (current.trace_id, current.span_id) == (int("0c" * 16, 16), int("0d" * 8, 16))
    assert not trace.get_current_span().get_span_context().is_valid


def test_the_buffer_keeps_only_its_scopes_and_the_newest_traces() -> None:
    """Other scopes' traces (a ledger batch is a trace of its own) cannot evict a bundle's spans."""
    buffer = TraceBuffer(max_traces=2, scopes=frozenset({"kfm.bundler"}))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(buffer))
    with provider.get_tracer("kfm.bundler").start_as_current_span("bundle") as bundle:
        with provider.get_tracer("kfm.bundler").start_as_current_span("bundle.package"):
            pass
        for _ in range(5):
            with provider.get_tracer("kfm.ledger").start_as_current_span("ledger.batch", context=Context()):
                pass
    trace_id = bundle.get_span_context().trace_id
    assert sorted(s.name for s in buffer.take(trace_id)) == ["bundle", "bundle.package"]
    assert buffer.take(trace_id) == []  # taken once
    for _ in range(3):
        with provider.get_tracer("kfm.bundler").start_as_current_span("bundle") as last:
            pass
    assert [s.name for s in buffer.take(last.get_span_context().trace_id)] == ["bundle"]
    assert len(buffer._spans) == 1  # the oldest of the three was dropped
    provider.shutdown()
