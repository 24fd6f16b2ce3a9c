"""Metrics, probes and logs of the running receiver and worker, against real lakeFS, Kafka and S3.

Both Prometheus endpoints are scraped around an end-to-end run (a commit whose webhook was
lost and that the reconciler finds; a commit through the webhook to its row; a refused
webhook; a webhook for a commit lakeFS does not have, which the bundler gives up on; a
rollback and a refused rollback), and each counter must have moved by exactly
what the run did, measured independently where it can be (the stored bundle's size, the
ledger's checkpoint). The worker's probes answer without a signing key, and say not ready
for as long as it is not. Every line the processes write is one JSON object, aiokafka's and
Faust's included.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hooks.install import install_action
from tests.integration.fixtures_repo import populate
from tests.integration.helpers import (
    KFM,
    ROOT,
    free_port,
    hooks_server,
    isolated_registry,
    logs_dir,
    post,
    request_rollback,
    unique,
    worker_process,
)
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import Settings
from worker.constants import HOOK_TOKEN_HEADER
from worker.io.ledger_reader import LedgerReader
from worker.keys import TrustedKeys
from worker.rollback.request import RollbackRequest

pytestmark = pytest.mark.stack

PREFIX = unique("obs") + "."
BUCKET = unique("kfm-obs-test")


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX, BUCKET)


# --- scraping -----------------------------------------------------------------------------
Samples = dict[str, float]


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(url: str) -> Samples:
    """The exposition text as ``{'name{labels}': value}`` (our kfm_ series only)."""
    status, body = _get(url)
    assert status == 200, body
    out: Samples = {}
    for line in body.decode().splitlines():
        if line.startswith("kfm_"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def moved(before: Samples, after: Samples) -> Samples:
    """Every series whose value changed, by how much (a new series counts from 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _counts(d: Samples) -> Samples:
    """The counters and histogram counts (sums and buckets aside: those are checked on their own)."""
    return {k: v for k, v in d.items() if not k.partition("{")[0].endswith(("_sum", "_bucket"))}


def _wait_for(what: str, check: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _json_lines(log: Path, start: int) -> list[dict[str, object]]:
    """Every line written to ``log`` after byte ``start``, each parsed as one JSON object."""
    lines = log.read_bytes()[start:].decode().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{log.name}: a line that is not JSON: {line[:300]!r}") from None
    return parsed


@dataclass
class Running:
    hooks_url: str
    hooks_metrics: str
    worker: str  # the worker's probe and metrics listener
    worker_log: Path
    worker_log_start: int
    hooks_log: Path
    hooks_log_start: int


def _log_at_start(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@pytest.fixture(scope="module")
def lost_commit(env: dict[str, str], settings: Settings) -> dict[str, str]:
    """A repository whose action points at a receiver not running yet: its commit's webhook is lost."""

    async def go() -> dict[str, str]:
        lakefs = LakeFS(settings)
        try:
            repo = unique("obs")
            await lakefs.create_repository(repo, f"local://{repo}")
            port = free_port()
            await install_action(lakefs, repo, "main", f"http://127.0.0.1:{port}/lakefs/webhook")
            commit = await populate(lakefs, repo, message="before the receiver runs")
            return {"repo": repo, "commit": commit, "hooks_port": str(port)}
        finally:
            lakefs.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def running(env: dict[str, str], lost_commit: dict[str, str]) -> Iterator[Running]:
    hooks_port, hooks_metrics, worker_http = int(lost_commit["hooks_port"]), free_port(), free_port()
    worker_log = logs_dir(env) / f"worker-{PREFIX}.log"
    hooks_log = logs_dir(env) / f"hooks-test-{hooks_port}.log"
    starts = _log_at_start(worker_log), _log_at_start(hooks_log)
    reconcile = {
        "KFM_WATCHED_REPOS": f"{lost_commit['repo']}:main",
        "KFM_RECONCILE_SINCE": (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "KFM_RECONCILE_INTERVAL_S": "3600",  # one pass, at start
    }
    with (
        hooks_server(env, KFM_HOOKS_PORT=str(hooks_port), KFM_HOOKS_METRICS_PORT=str(hooks_metrics)) as url,
        worker_process(env, PREFIX, KFM_WORKER_HTTP_PORT=str(worker_http), **reconcile),
    ):
        yield Running(
            url,
            f"http://127.0.0.1:{hooks_metrics}/metrics",
            f"http://127.0.0.1:{worker_http}",
            worker_log,
            starts[0],
            hooks_log,
            starts[1],
        )


async def _checkpoint_size(settings: Settings) -> int:
    async with open_bucket(settings) as b:
        reader = LedgerReader(b, TrustedKeys.from_dir(Path(settings.trusted_keys_dir)), settings.checkpoint_name)
        cp, _ = await reader.checkpoint()
        return cp.size


async def _bundle_size(settings: Settings, commit: str) -> int:
    async with open_bucket(settings) as b:
        head = await b.head(f"artifacts/{commit}.tar.zst")
    assert head is not None
    return head.size


async def _roll_back(settings: Settings, req: RollbackRequest) -> dict[str, object]:
    finals = await request_rollback(settings, req, timeout=120)
    if not finals:
        raise AssertionError(f"no final result for {req.request_id}")
    return finals[0]


def _request(repo: str, commit: str, strategy: str = "branch") -> RollbackRequest:
    return RollbackRequest(
        request_id=str(uuid.uuid4()),
        lakefs_repo=repo,
        commit=commit,
        target_branch="main",
        strategy=strategy,
        requested_by="test",
        reason="metrics",
        requested_at=datetime.now(UTC),
    )


def test_counters_move_by_what_an_end_to_end_run_did(
    env: dict[str, str], settings: Settings, lost_commit: dict[str, str], running: Running
) -> None:
    repo, lost = lost_commit["repo"], lost_commit["commit"]
    _wait_for("the worker to be ready", lambda: _status(running.worker + "/readyz") == 200)
    assert json.loads(_get(running.worker + "/healthz")[1]) == {"status": "ok"}

    # 1. The reconciler's pass at start finds the three commits of the branch that have no row
    #    (the repository's first, the action's, and the one whose webhook was lost), requests
    #    them, and each becomes a row.
    _wait_for("the reconciled rows", lambda: scrape(running.worker + "/metrics").get("kfm_ledger_rows") == 3)
    passes = [
        line
        for line in _json_lines(running.worker_log, running.worker_log_start)
        if line.get("event") == "reconcile.pass"
    ]
    assert passes, "no reconcile.pass line"
    first = scrape(running.worker + "/metrics")
    assert first["kfm_reconcile_missing_commits"] == passes[0]["missing"] == 3
    lost_age = (datetime.now(UTC) - datetime.fromisoformat(str(passes[0]["timestamp"]))).total_seconds()
    assert first["kfm_reconcile_oldest_missing_age_seconds"] == pytest.approx(passes[0]["oldest_missing_age_s"])
    assert first["kfm_reconcile_oldest_missing_age_seconds"] > 0 and lost_age >= 0
    assert first['kfm_ledger_candidates_total{outcome="recorded"}'] == 3
    # The three candidates were a burst on the transactional writer topic; once they are decided
    # the lag is 0: the commit markers after them are not candidates waiting.
    assert first["kfm_ledger_writer_lag_offsets"] == 0
    assert first["kfm_bundles_built_total"] == 3
    assert asyncio.run(_checkpoint_size(settings)) == 3

    # 2. One commit through the webhook to its row, and one refused webhook.
    hooks_before, worker_before = scrape(running.hooks_metrics), scrape(running.worker + "/metrics")

    async def commit_and_refuse() -> str:
        lakefs = LakeFS(settings)
        try:
            await lakefs.upload(repo, "main", "configs/pipeline.yaml", b"threshold: 0.7\n")
            commit = await lakefs.commit(repo, "main", "through the webhook")
        finally:
            lakefs.close()
        status, _ = await post(running.hooks_url + "/lakefs/webhook", b"{}", {HOOK_TOKEN_HEADER: "not-the-token"})
        assert status == 401
        return commit

    webhook_commit = asyncio.run(commit_and_refuse())
    _wait_for("the webhook's row", lambda: scrape(running.worker + "/metrics").get("kfm_ledger_rows") == 4)
    hooks_after, worker_after = scrape(running.hooks_metrics), scrape(running.worker + "/metrics")

    hooks_moved = moved(hooks_before, hooks_after)
    assert _counts(hooks_moved) == {
        'kfm_webhooks_total{status="202"}': 1,
        'kfm_webhooks_total{status="401"}': 1,
        "kfm_webhook_publish_seconds_count": 1,
    }, hooks_moved
    assert 0 < hooks_moved["kfm_webhook_publish_seconds_sum"] < 10

    worker_moved = moved(worker_before, worker_after)
    size = asyncio.run(_bundle_size(settings, webhook_commit))
    assert _counts(worker_moved) == {
        "kfm_bundles_built_total": 1,
        "kfm_bundle_build_seconds_count": 1,
        "kfm_bundle_bytes_count": 1,
        'kfm_ledger_candidates_total{outcome="recorded"}': 1,
        "kfm_ledger_rows": 1,
        "kfm_ledger_append_seconds_count": 1,
        "kfm_ledger_writer_lag_seconds_count": 1,
    }, worker_moved
    assert worker_moved["kfm_bundle_bytes_sum"] == size  # the stored bundle's own size
    assert worker_after["kfm_ledger_rows"] == asyncio.run(_checkpoint_size(settings)) == 4
    assert worker_after["kfm_ledger_writer_lag_offsets"] == 0  # caught up: the commit marker is not lag
    for name in ("kfm_bundle_build_seconds_sum", "kfm_ledger_append_seconds_sum", "kfm_ledger_writer_lag_seconds_sum"):
        assert 0 < worker_moved[name] < 60, name

    # 3. A webhook for a commit lakeFS does not have: published, then given up on by the bundler.
    hooks_before, worker_before = hooks_after, scrape(running.worker + "/metrics")
    body = json.dumps(
        {
            "event_type": "post-commit",
            "event_time": "2026-11-26T10:00:00Z",
            "action_name": "a",
            "hook_id": "h",
            "repository_id": repo,
            "branch_id": "main",
            "commit_id": "e" * 64,
        }
    ).encode()
    token = Path(env["KFM_HOOK_TOKEN_FILE"]).read_text().strip()
    status, _ = asyncio.run(
        post(
            running.hooks_url + "/lakefs/webhook", body, {HOOK_TOKEN_HEADER: token, "Content-Type": "application/json"}
        )
    )
    assert status == 202
    _wait_for(
        "the bundler to give up",
        lambda: 'kfm_bundles_failed_total{reason="failed"}' in scrape(running.worker + "/metrics"),
    )
    assert _counts(moved(hooks_before, scrape(running.hooks_metrics))) == {
        'kfm_webhooks_total{status="202"}': 1,
        "kfm_webhook_publish_seconds_count": 1,
    }
    assert _counts(moved(worker_before, scrape(running.worker + "/metrics"))) == {
        'kfm_bundles_failed_total{reason="failed"}': 1
    }

    # 4. A rollback (a branch at the lost commit) and a refused one (a commit with no row).
    before = scrape(running.worker + "/metrics")
    done = asyncio.run(_roll_back(settings, _request(repo, lost)))
    assert done["status"] == "completed", done
    refused = asyncio.run(_roll_back(settings, _request(repo, "f" * 64)))
    assert refused["status"] == "rejected", refused
    rollback_moved = moved(before, scrape(running.worker + "/metrics"))
    assert _counts(rollback_moved) == {
        'kfm_rollbacks_total{outcome="completed"}': 1,
        'kfm_rollback_seconds_count{outcome="completed"}': 1,
        'kfm_rollbacks_total{outcome="rejected"}': 1,
        'kfm_rollback_seconds_count{outcome="rejected"}': 1,
    }, rollback_moved
    assert 0 < rollback_moved['kfm_rollback_seconds_sum{outcome="completed"}'] < 120

    # Everything both processes wrote so far is JSON lines, aiokafka's and Faust's among them.
    worker_lines = _json_lines(running.worker_log, running.worker_log_start)
    loggers = {str(line.get("logger", "")).split(".")[0] for line in worker_lines}
    assert {"aiokafka", "faust", "mode"} <= loggers, loggers
    assert _json_lines(running.hooks_log, running.hooks_log_start)
    secrets = [
        env["KFM_S3_SECRET_ACCESS_KEY"],
        env["KFM_LAKEFS_SECRET_ACCESS_KEY"],
        (Path(env["KFM_HOOK_TOKEN_FILE"]).read_text().strip()),
    ]
    for log, start in ((running.worker_log, running.worker_log_start), (running.hooks_log, running.hooks_log_start)):
        text = log.read_bytes()[start:].decode()
        # (the local stack's S3 secret is "kfm", part of every topic name: only secrets that could not occur by chance)
        assert not [s for s in secrets if len(s) >= 12 and s in text], f"a secret in {log.name}"


def test_worker_probes_answer_without_the_signing_key_and_ready_only_when_ready(env: dict[str, str]) -> None:
    """Without the signing key the worker is live but not ready (its ledger writer cannot run);
    with a bucket that does not exist it is not ready either, and says why."""
    port = free_port()
    broken = {"KFM_SIGNING_KEY": "", "KFM_S3_BUCKET": unique("no-such-bucket"), "KFM_WORKER_HTTP_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    with worker_process({**env, "KFM_TOPIC_PREFIX": PREFIX + "nokey."}, PREFIX + "nokey", **broken) as proc:
        _wait_for("the probes to listen", lambda: _listening(url) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "the worker stopped"
        assert _get(url + "/healthz") == (200, b'{"status": "ok"}')
        _wait_for("the ledger writer to have failed", lambda: "ledger_writer" in _get(url + "/readyz")[1].decode())
        status, body = _get(url + "/readyz")
        reasons = json.loads(body)["reasons"]
        assert status == 503
        assert "agent worker.app.ledger_writer crashed" in reasons, reasons
        assert any(r.startswith("bucket:") and "not found" in r for r in reasons), reasons
        assert _get(url + "/healthz")[0] == 200
        status, body = _get(url + "/metrics")
        assert status == 200 and b"kfm_bundles_built_total 0.0" in body


def _status(url: str) -> int:
    """The HTTP status, or 0 while nothing listens."""
    try:
        return _get(url, timeout=2)[0]
    except OSError:
        return 0


def _listening(url: str) -> bool:
    return _status(url + "/healthz") != 0


@pytest.mark.parametrize(
    ("args", "variable"), [(("hooks", "serve"), "KFM_HOOKS_METRICS_PORT"), (("worker",), "KFM_WORKER_HTTP_PORT")]
)
def test_a_listener_port_in_use_stops_the_start_with_one_line(
    env: dict[str, str], args: tuple[str, ...], variable: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [*KFM, *args],
            env={**os.environ, **env, "KFM_HOOKS_PORT": str(free_port()), variable: str(port)},
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    errors = [line for line in r.stderr.splitlines() if line.startswith("kfm: error: ")]
    assert r.returncode != 0
    assert errors == [f"kfm: error: {variable}: cannot listen on 127.0.0.1:{port}: in use"], r.stderr
    assert "Traceback" not in r.stderr


def test_a_broker_that_does_not_answer_is_logged_as_json(env: dict[str, str]) -> None:
    """aiokafka's own connection errors come through the JSON renderer, not as plain text."""
    dead = {**env, "KFM_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "KFM_KAFKA_TIMEOUT_S": "2"}
    port = free_port()
    proc = subprocess.Popen(
        [*KFM, "hooks", "serve"],
        env={**os.environ, **dead, "KFM_HOOKS_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        _wait_for("the receiver", lambda: _listening(f"http://127.0.0.1:{port}"), timeout=60)
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 503  # the producer tries the broker again
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in (out + err).decode().splitlines()]
    assert any(line.get("logger", "").startswith("aiokafka") and "Unable connect" in line["event"] for line in lines), (
        lines
    )

    # The worker refuses to start: aiokafka's lines are JSON, then our one-line error.
    r = subprocess.run(
        [*KFM, "worker"], env={**os.environ, **dead}, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    *logged, last = r.stderr.splitlines()
    assert r.returncode != 0 and last.startswith("kfm: error: "), r.stderr
    parsed = [json.loads(line) for line in logged + r.stdout.splitlines()]
    assert any(line.get("logger", "").startswith("aiokafka") for line in parsed), r.stderr
