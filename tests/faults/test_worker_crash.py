"""Fault 3: the worker SIGKILLed while bundling, while appending to the ledger, and while restoring.

The crash is exact: ``KFM_FAULT_INJECT=<point>`` makes the worker ``os._exit(137)``
at that point (``fault_point`` in worker/io): after the bundle is stored but
before its attestation (``bundle.after_artifact``), right after the ledger's
commit point and before its mirrors (the writer's ``ledger.*`` point), and after
the first restored object of a rollback (``rollback.mid_restore``). Commits keep
arriving while the crashing worker runs; then the registry's own worker is
started again and everything must converge. (tests/integration/test_ledger.py
and test_rollback.py keep their single-crash checks; this module covers the
three points with the same convergence checks as every other fault.)
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime

import pytest

from tests.faults.harness import (
    Managed,
    Outcome,
    Registry,
    assert_converged,
    commit_file,
    converge,
    ledger_rows,
    missing_rows,
    new_repo,
)
from tests.integration.helpers import ROOT, end_offsets, read_since
from worker._internal.kafka import Producer
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.constants import TOPIC_ROLLBACK_REQUESTS, TOPIC_ROLLBACK_RESULTS
from worker.rollback.request import RollbackRequest, request_key

pytestmark = pytest.mark.faults


def _ledger_point() -> str:
    """The writer's fault point after its commit point (its name follows the ledger's layout)."""
    src = (ROOT / "worker" / "io" / "ledger_writer.py").read_text(encoding="utf-8")
    points = re.findall(r'fault_point\("(ledger\.[a-z_.]+)"\)', src)
    assert points, "the ledger writer has no fault point"
    return str(points[0])


async def _wait_recorded(reg: Registry, commits: list[str], within: float = 120) -> None:
    deadline = time.monotonic() + within
    while await missing_rows(reg.settings, commits):
        assert time.monotonic() < deadline, f"not recorded: {await missing_rows(reg.settings, commits)}"
        await asyncio.sleep(1)


async def _crash_worker(reg: Registry, point: str) -> tuple[Managed, object]:
    """Stop the registry's worker; start one that dies at ``point`` (same group, same member id)."""
    reg.worker.stop()
    crash = Managed(reg.worker_factory(reg.env["KFM_TOPIC_PREFIX"] + "crash"))
    return crash, crash.start(KFM_FAULT_INJECT=point)


@pytest.mark.parametrize("where", ["bundling", "ledger append"])
async def test_worker_killed_while_bundling_or_appending(registry: Registry, lakefs: LakeFS, where: str) -> None:
    point = "bundle.after_artifact" if where == "bundling" else _ledger_point()
    repo, _ = await new_repo(registry, "wk")
    rows_before, _ = ledger_rows(registry.env)
    out = Outcome(f"worker SIGKILLed while {where} ({point})", "commits via webhooks", [], rows_before=rows_before)

    crash, proc = await _crash_worker(registry, point)
    tries = 0
    for i in range(3):  # commits arrive while the crashing worker runs
        out.commits.append(await commit_file(lakefs, repo, "main", i))
    rc = await asyncio.to_thread(proc.wait, 180)  # type: ignore[attr-defined]
    crash.stop()
    tries += 1
    assert rc == 137, f"the worker did not die at {point} (exit {rc})"
    if where == "bundling":  # the half state the crash left: a bundle without its attestation
        async with open_bucket(registry.settings) as b:
            arts = {k.rsplit("/", 1)[-1].removesuffix(".tar.zst") for k in await b.list_keys("artifacts/")}
            atts = {k.rsplit("/", 1)[-1].removesuffix(".intoto.json") for k in await b.list_keys("attestations/")}
        half = sorted((arts - atts) & set(out.commits))
        assert half, "the crash left no bundle without attestation"
        out.notes.append(f"after the crash: {len(half)} bundle(s) without attestation")
    out.tries = tries
    ended = time.monotonic()
    registry.worker.start()
    fig = await converge(registry, out, [repo], ended)
    assert_converged(fig)


def _request(repo: str, commit: str, branch: str) -> RollbackRequest:
    return RollbackRequest(
        request_id=str(uuid.uuid4()), lakefs_repo=repo, commit=commit, target_branch=branch, strategy="revert",
        requested_by="fault-test", reason="worker killed mid-restore", requested_at=datetime.now(UTC),
    )


async def _finals(reg: Registry, start: dict[int, int], request_id: str, within: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    finals: list[dict[str, object]] = []
    topic = reg.settings.topic(TOPIC_ROLLBACK_RESULTS)
    while not finals and time.monotonic() < deadline:
        recs = await read_since(reg.settings.kafka_bootstrap, topic, start, want=0, timeout=3)
        finals = [r for r in (json.loads(v) for _, v, _ in recs) if r["request_id"] == request_id and r["final"]]
        await asyncio.sleep(1)
    return finals


async def test_worker_killed_while_restoring(registry: Registry, lakefs: LakeFS) -> None:
    repo, _ = await new_repo(registry, "wr")
    a = await commit_file(lakefs, repo, "main", 0)
    m = await commit_file(lakefs, repo, "main", 1)
    b = await commit_file(lakefs, repo, "main", 3, size=200)  # changes a's file: the revert copies it back
    await _wait_recorded(registry, [a, m, b])
    await lakefs.create_branch(repo, "t-crash", b)
    rows_before, _ = ledger_rows(registry.env)
    out = Outcome("worker SIGKILLed while restoring (rollback.mid_restore)", "rollback request + commits",
                   [], rows_before=rows_before)
    req = _request(repo, a, "t-crash")
    results = await end_offsets(registry.settings.kafka_bootstrap, registry.settings.topic(TOPIC_ROLLBACK_RESULTS))
    crash, proc = await _crash_worker(registry, "rollback.mid_restore")
    async with Producer(registry.settings.kafka_bootstrap) as p:
        await p.send(registry.settings.topic(TOPIC_ROLLBACK_REQUESTS), req.to_bytes(),
                     key=request_key(repo, "t-crash"))
    for i in range(4, 6):  # commits on the watched branch while the restore crashes
        out.commits.append(await commit_file(lakefs, repo, "main", i))
    rc = await asyncio.to_thread(proc.wait, 180)  # type: ignore[attr-defined]
    crash.stop()
    assert rc == 137, f"the worker did not die mid-restore (exit {rc})"
    assert await lakefs.branch_head(repo, "t-crash") == b  # died before the rollback commit
    ended = time.monotonic()
    registry.worker.start()
    finals = await _finals(registry, results, req.request_id, 180)
    out.notes.append(f"rollback finals after restart: {[f['status'] for f in finals]}")
    assert [f["status"] for f in finals] == ["completed"], finals
    head = await lakefs.branch_head(repo, "t-crash")
    assert (await lakefs.get_commit(repo, head)).parents == (b,)  # restored exactly once
    assert await lakefs.read(repo, "t-crash", "configs/run-0.yaml", 1 << 16) == \
        await lakefs.read(repo, a, "configs/run-0.yaml", 1 << 16)
    fig = await converge(registry, out, [repo], ended)
    assert_converged(fig)
