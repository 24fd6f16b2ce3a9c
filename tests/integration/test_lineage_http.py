"""OpenLineage events over the openlineage-python client's HTTP transport, end to end.

A commit made in lakeFS reaches the worker through the real action webhook; the worker,
configured only by the client's standard variables, posts the bundling run's START and
COMPLETE, and then a rollback's, to an HTTP backend with Marquez's lineage API (the stand-in of
tests/lineage_backend.py, in a process of its own: Marquez itself cannot be had here, see
docs/deploy.md) and no longer to the ``kfm.openlineage`` topic. A backend that refuses
every event does not stop the commit from being bundled and recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hooks.install import install_action
from tests.integration.fixtures_repo import populate
from tests.integration.helpers import (
    ROOT,
    end_offsets,
    free_port,
    hooks_server,
    isolated_registry,
    logs_dir,
    read_since,
    request_rollback,
    unique,
    wait_for_port,
    worker_process,
)
from tests.integration.test_rollback import _request, _wait_recorded
from tests.unit.evidence.test_lineage_client import without_client_facets
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import Settings
from worker.constants import TOPIC_INDEX_CANDIDATES, TOPIC_LINEAGE

pytestmark = pytest.mark.stack

PREFIX = unique("ol") + "."
API_KEY = "lineage-test-key-0123456789"


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX)


@contextmanager
def backend(env: dict[str, str], *args: str) -> Iterator[str]:
    """The stand-in OpenLineage backend in a process of its own; yields its base URL."""
    port = free_port()
    name = f"lineage-backend-{port}"
    log = open(logs_dir(env) / f"{name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.lineage_backend",
            "--port",
            str(port),
            "--store",
            str(logs_dir(env) / f"{name}.jsonl"),
            *args,
        ],
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    try:
        wait_for_port(port, proc, f"lineage backend did not start: {log.name}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _run_events(url: str, run_id: str, want: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        events = (await _get(f"{url}/api/v1/events/lineage?limit=1000"))["events"]
        mine = [e for e in reversed(events) if e["run"]["runId"] == run_id]
        if len(mine) >= want or time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.5)


async def _bundled(settings: Settings, start: dict[int, int], commit: str) -> dict[str, Any]:
    """The index candidate of ``commit``: the bundle is stored and on its way to the ledger."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        recs = await read_since(
            settings.kafka_bootstrap,
            settings.topic(TOPIC_INDEX_CANDIDATES),
            start,
            want=1,
            timeout=deadline - time.monotonic(),
        )
        for _, v, _ in recs:
            body: dict[str, Any] = json.loads(v)["body"]
            if body["lakefs_commit"] == commit:
                return body
        await asyncio.sleep(0.5)
    raise AssertionError(f"commit {commit} was not bundled")


def _failures(log: Path, run_id: str | None) -> list[dict[str, Any]]:
    """The worker's ``lineage.send_failed`` lines (of one run, or all)."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{") and "lineage.send_failed" in x]
    return [x for x in lines if x.get("event") == "lineage.send_failed" and run_id in (None, x.get("run_id"))]


def _worker_env(**extra: str) -> dict[str, str]:
    """The worker's OpenLineage settings and nothing inherited: a developer's own
    OPENLINEAGE_* variables or ~/.openlineage must not steer the test."""
    clean = {k: "" for k in os.environ if k.startswith("OPENLINEAGE")}
    return {**clean, **extra}


async def test_bundle_and_rollback_runs_reach_an_http_backend_through_openlineage_url(
    env: dict[str, str], settings: Settings, lakefs: LakeFS
) -> None:
    with (
        backend(env, "--api-key", API_KEY, "--fail-first", "1") as url,
        hooks_server(env) as hooks,
        worker_process(env, PREFIX + "http", **_worker_env(OPENLINEAGE_URL=url, OPENLINEAGE_API_KEY=API_KEY)),
    ):
        repo = unique("lineage")
        await lakefs.create_repository(repo, f"local://{repo}")
        start = await end_offsets(settings.kafka_bootstrap, settings.topic(TOPIC_INDEX_CANDIDATES))
        topic_start = await end_offsets(settings.kafka_bootstrap, settings.topic(TOPIC_LINEAGE))
        await install_action(lakefs, repo, "main", hooks + "/lakefs/webhook")
        commit = await populate(lakefs, repo)
        body = await _bundled(settings, start, commit)
        run_id = body["openlineage_run_id"]

        got = await _run_events(url, run_id, want=2)
        assert [e["eventType"] for e in got] == ["START", "COMPLETE"], got
        complete = got[1]
        assert complete["job"] == {
            "namespace": "kfm.rollback-registry",
            "name": f"bundle.{repo}",
            "facets": complete["job"]["facets"],
        }
        assert complete["inputs"][0]["namespace"] == f"lakefs://{repo}" and complete["inputs"][0]["name"] == commit
        [out] = complete["outputs"]
        assert (out["namespace"], out["name"]) == (f"s3://{settings.s3_bucket}", f"artifacts/{commit}.tar.zst")
        assert out["facets"]["kfm_digest"]["sha256"] == body["checksums"]["artifact_sha256"]

        # The backend got the events stored beside the bundle (plus the client's own facets).
        async with open_bucket(settings) as b:
            stored, _ = await b.get(f"evidence/{commit}/{run_id}/openlineage.json", 1 << 20)
        assert [without_client_facets(e) for e in got] == json.loads(stored)
        # The first post was answered 503 and retried by the client's transport.
        assert (await _get(f"{url}/test/stats"))["posts"] >= 3

        # A rollback to that commit: its run reads, as its input, the very dataset the
        # bundling run reported writing, so the backend joins the two runs.
        await _wait_recorded(settings, {commit})
        req = _request(repo, commit, "main", "branch")
        [final] = await request_rollback(settings, req)
        assert final["status"] == "completed", final
        async with open_bucket(settings) as b:
            stored_rb = json.loads((await b.get(f"rollbacks/{req.request_id}/openlineage.json", 1 << 20))[0])
        rb_events = await _run_events(url, stored_rb[0]["run"]["runId"], want=2)
        assert [without_client_facets(e) for e in rb_events] == stored_rb
        assert rb_events[1]["job"]["name"] == f"rollback.{repo}"
        assert {(d["namespace"], d["name"]) for d in rb_events[1]["inputs"]} == {(out["namespace"], out["name"])}

        # Configured, the client replaces the topic.
        assert await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_LINEAGE), topic_start) == []


async def test_a_backend_refusing_every_event_does_not_stop_the_bundle(
    env: dict[str, str], settings: Settings, lakefs: LakeFS
) -> None:
    with backend(env, "--fail-first", "1000000") as url, hooks_server(env) as hooks:
        lineage_env = _worker_env(
            OPENLINEAGE__TRANSPORT__TYPE="http",
            OPENLINEAGE__TRANSPORT__URL=url,
            OPENLINEAGE__TRANSPORT__RETRY__TOTAL="1",
            OPENLINEAGE__TRANSPORT__RETRY__BACKOFF_FACTOR="0.01",
        )
        log = logs_dir(env) / f"worker-{PREFIX}refused.log"
        log.unlink(missing_ok=True)
        with worker_process(env, PREFIX + "refused", **lineage_env):
            repo = unique("refused")
            await lakefs.create_repository(repo, f"local://{repo}")
            start = await end_offsets(settings.kafka_bootstrap, settings.topic(TOPIC_INDEX_CANDIDATES))
            await install_action(lakefs, repo, "main", hooks + "/lakefs/webhook")
            commit = await populate(lakefs, repo)
            body = await _bundled(settings, start, commit)
            # Every event of every run (the action's own commit is bundled too) is tried
            # twice (one retry) before its run's failure is logged.
            for _ in range(60):
                posts = (await _get(f"{url}/test/stats"))["posts"]
                if _failures(log, body["openlineage_run_id"]) and posts == 4 * len(_failures(log, None)):
                    break
                await asyncio.sleep(0.5)
        assert (await _get(f"{url}/api/v1/events/lineage"))["events"] == []
    [failure] = _failures(log, body["openlineage_run_id"])
    assert failure["failed"] == 2 and "503" in failure["error"], failure
    assert posts == 4 * len(_failures(log, None))
