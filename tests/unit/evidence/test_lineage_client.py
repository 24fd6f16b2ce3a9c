"""Runs' OpenLineage events through the openlineage-python client (worker/io/lineage.py).

The HTTP cases post to the stand-in backend (tests/lineage_backend.py) served on a real
local port, through the client's own HTTP transport.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestServer
from openlineage.client import OpenLineageClient
from openlineage.client.serde import Serde

from tests.lineage_backend import app as backend_app
from tests.unit.rollback.factories import COMMIT, request, row
from tests.unit.rollback.fakes import FakeProducer
from worker.config import Settings
from worker.constants import TOPIC_LINEAGE
from worker.errors import ConfigError
from worker.evidence.lineage import bundle_events
from worker.io.lineage import (
    LineageEmitter,
    _typed,
    client_configured,
    open_lineage_emitter,
    publish_lineage,
)
from worker.metrics import LINEAGE_EVENTS
from worker.rollback.outcome import lineage_events

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2024, 5, 1, 12, 0, 2, tzinfo=UTC)
CLIENT_PRODUCER = "https://github.com/OpenLineage/OpenLineage/"
RUN_ID = "01890a5d-ac96-774b-bcce-b302099a8057"
BUNDLE_URI = f"s3://kfm-registry/artifacts/{COMMIT}.tar.zst"


def _events(run_id: str = RUN_ID) -> list[dict[str, Any]]:
    return bundle_events(
        repository="kfm-main",
        commit=COMMIT,
        artifact_uri=BUNDLE_URI,
        sha256="5" * 64,
        run_id=run_id,
        started=T0,
        finished=T1,
    )


def without_client_facets(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` less the run and job facets the client adds on its way out (its version
    tag, a source code location, environment variables): they carry the client's producer."""
    out = copy.deepcopy(event)
    for part in (out["run"], out["job"]):
        part["facets"] = {
            k: f
            for k, f in part.get("facets", {}).items()
            if not str(f.get("_producer", "")).startswith(CLIENT_PRODUCER)
        }
    return out


def _count(outcome: str) -> float:
    return LINEAGE_EVENTS.labels(outcome)._value.get()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No OpenLineage variable, and a working directory and home without openlineage.yml."""
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.parametrize(
    ("env", "files"),
    [
        ({"OPENLINEAGE_URL": "http://marquez:5000"}, ()),
        ({"OPENLINEAGE__TRANSPORT__TYPE": "http", "OPENLINEAGE__TRANSPORT__URL": "http://m:5000"}, ()),
        ({"OPENLINEAGE_CONFIG": "/etc/kfm/openlineage.yml"}, ()),
        ({"OPENLINEAGE_DISABLED": "true"}, ()),
        ({}, ("cwd/openlineage.yml",)),
        ({}, ("home/.openlineage/openlineage.yml",)),
    ],
)
def test_client_is_configured_by_each_source_it_reads(
    env: dict[str, str], files: tuple[str, ...], tmp_path: Path
) -> None:
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("transport:\n  type: console\n")
    (tmp_path / "cwd").mkdir(exist_ok=True)
    assert client_configured(env, tmp_path / "cwd", tmp_path / "home")


def test_nothing_configured_means_the_topic(tmp_path: Path) -> None:
    (tmp_path / "cwd").mkdir()
    assert not client_configured({"OPENLINEAGE_DISABLED": "false", "KFM_X": "1"}, tmp_path / "cwd", tmp_path / "home")


def test_typed_event_serialises_to_the_stored_json() -> None:
    """The backend gets the bytes stored as evidence (bundle and rollback runs, every facet)."""
    rollback = lineage_events(
        request(),
        row(artifact_uri=BUNDLE_URI, checksums={"artifact_sha256": "5" * 64}),
        restored="prod",
        run_id="11111111-2222-4333-8444-555555555555",
        started=T0,
        finished=T1,
    )
    for ev in [*_events(), *rollback]:
        assert Serde.to_dict(_typed(ev)) == ev


async def test_unconfigured_events_go_to_the_topic_in_order(clean_env: Path) -> None:
    assert open_lineage_emitter() is None

    class Rt:
        settings = Settings(topic_prefix="t.")
        producer = FakeProducer()
        lineage = None

    rt = Rt()
    events = _events()
    await publish_lineage(rt, events, RUN_ID)
    assert rt.producer.on(rt.settings.topic(TOPIC_LINEAGE)) == events


def test_a_missing_config_file_is_one_line_not_the_console(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(clean_env / "nowhere" / "openlineage.yml"))
    with pytest.raises(
        ConfigError, match=r"^OPENLINEAGE_CONFIG names .*openlineage.yml, which is not a readable file$"
    ):
        open_lineage_emitter()


def test_bad_client_configuration_is_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "carrier-pigeon")
    with pytest.raises(ConfigError) as e:
        open_lineage_emitter()
    assert "OpenLineage client configuration" in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start the stand-in backend with the given switches; returns its base URL."""
    servers: list[TestServer] = []

    async def start(**kw: Any) -> str:
        application = backend_app(tmp_path / f"events-{len(servers)}.jsonl", kw.get("api_key"), kw.get("fail_first", 0))
        server = TestServer(application, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/")).rstrip("/")

    yield start
    for s in servers:
        await s.close()


def _client(url: str, **transport: Any) -> OpenLineageClient:
    config = {
        "transport": {"type": "http", "url": url, **transport},
        "facets": {"source_code_location": {"disabled": True}},
    }
    return OpenLineageClient(config=config)


async def _taken(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/api/v1/events/lineage") as r:
        return list(reversed((await r.json())["events"]))


async def test_http_transport_delivers_start_then_complete_without_blocking_the_loop(
    clean_env: Path, backend: Callable[..., Any]
) -> None:
    url = await backend(api_key="k" * 20)
    emitter = LineageEmitter(_client(url, auth={"type": "api_key", "apiKey": "k" * 20}, compression="gzip"))
    sent = _count("sent")
    t = time.monotonic()
    emitter.submit(_events(), RUN_ID)
    assert time.monotonic() - t < 0.05  # queued, not sent, on the loop
    assert await emitter.flush(30)
    got = await _taken(url)
    assert [e["eventType"] for e in got] == ["START", "COMPLETE"]
    assert [without_client_facets(e) for e in got] == _events()
    assert _count("sent") - sent == 2
    await emitter.aclose()


async def test_a_failing_backend_is_retried_then_logged_and_counted_never_raised(
    clean_env: Path, backend: Callable[..., Any]
) -> None:
    url = await backend(fail_first=1000)
    emitter = LineageEmitter(_client(url, retry={"total": 2, "backoff_factor": 0.01}))
    failed = _count("failed")
    with structlog.testing.capture_logs() as logs:
        emitter.submit(_events(), RUN_ID)
        assert await emitter.flush(30)
    assert _count("failed") - failed == 2
    [warning] = [e for e in logs if e["event"] == "lineage.send_failed"]
    assert warning["run_id"] == RUN_ID and warning["failed"] == 2 and "503" in warning["error"]
    assert await _taken(url) == []
    async with aiohttp.ClientSession() as s, s.get(f"{url}/test/stats") as r:
        assert (await r.json())["posts"] == 2 * 3  # each event: the first try and two retries
    await emitter.aclose()


async def test_a_run_beyond_the_backlog_is_dropped_not_queued(clean_env: Path, backend: Callable[..., Any]) -> None:
    url = await backend()
    emitter = LineageEmitter(_client(url), backlog=1)
    dropped = _count("dropped")
    emitter.submit(_events(), RUN_ID)
    emitter.submit(_events("01890a5d-ac96-774b-bcce-b302099a8058"), "01890a5d-ac96-774b-bcce-b302099a8058")
    assert _count("dropped") - dropped == 2
    assert await emitter.flush(30)
    assert {e["run"]["runId"] for e in await _taken(url)} == {RUN_ID}
    await emitter.aclose()
    await asyncio.sleep(0)
