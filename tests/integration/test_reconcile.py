"""The reconciler and the coverage report against real lakeFS, Kafka and S3.

(a) commits and a merge whose webhooks are lost (no hooks server) are recorded
by the reconciler alone, and ``kfm coverage`` goes from 1 to 0;
(b) webhooks and the reconciler racing on the same 20 commits give 20 rows;
(c) a commit whose bundle fails for good shows ``failed``, is not requested
again by later passes, and is requested again by ``kfm reconcile --retry-failed``.

Rows are counted through ``LedgerReader`` (one row per commit asked for), never
by reading the ledger's storage.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from tests.integration.helpers import (
    end_offsets,
    free_port,
    hooks_server,
    isolated_registry,
    read_since,
    run_kfm,
    unique,
    worker_process,
)
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import Settings, load_settings
from worker.constants import TOPIC_EVENTS
from worker.events import event_key
from worker.io import markers
from worker.io.ledger_reader import LedgerReader
from worker.keys import TrustedKeys
from worker.ledger.row import LedgerRow

pytestmark = pytest.mark.stack

PREFIX = unique("rc") + "."
BUCKET = unique("kfm-reconcile-test")
INTERVAL_S = 3


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX, BUCKET)


async def _rows(settings: Settings, commits: list[str]) -> dict[str, LedgerRow | None]:
    async with open_bucket(settings) as b:
        reader = LedgerReader(b)
        return {c: await reader.row_for(c) for c in commits}


async def _wait_rows(settings: Settings, commits: list[str], within: float) -> dict[str, LedgerRow | None]:
    deadline = time.monotonic() + within
    while True:
        rows = await _rows(settings, commits)
        if all(rows.values()) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.5)


async def _commit(lakefs: LakeFS, repo: str, branch: str, n: int | str) -> str:
    await lakefs.upload(repo, branch, f"configs/{branch}.yaml", f"threshold: {n}\n".encode())
    return await lakefs.commit(repo, branch, f"run {n}")


def _install(env: dict[str, str], repo: str, url: str) -> str:
    out = json.loads(run_kfm(env, "hooks", "install", "--repo", repo, "--branch", "main", "--url", url, "--json").stdout)
    assert out["watched"] is True
    return str(out["commit"])


def _coverage(env: dict[str, str], repo: str) -> tuple[int, dict]:
    r = run_kfm(env, "coverage", "--repo", repo, "--branch", "main", "--grace-s", "0", "--json", check=False)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


async def _events_for(settings: Settings, start: dict[int, int], repo: str, commit: str) -> list[dict]:
    recs = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_EVENTS), start, timeout=10)
    key = event_key(repo, commit)
    return [json.loads(v) for k, v, _ in recs if k == key]


async def test_lost_webhooks_are_recorded_by_the_reconciler_alone(
    env: dict[str, str], settings: Settings, lakefs: LakeFS
) -> None:
    repo = unique("lost")
    await lakefs.create_repository(repo, f"local://{repo}")
    dead = f"http://127.0.0.1:{free_port()}/lakefs/webhook"  # nothing listens: every webhook is lost
    main = [_install(env, repo, dead)]
    for i in range(3):
        main.append(await _commit(lakefs, repo, "main", i))
    await lakefs.create_branch(repo, "dev", "main")
    dev = [await _commit(lakefs, repo, "dev", f"dev-{i}") for i in range(2)]
    main.append(await _commit(lakefs, repo, "main", 3))
    main.append(await lakefs.merge(repo, "dev", "main", "merge dev"))

    code, before = _coverage(env, repo)
    assert code == 1
    assert [c["commit"] for c in before["commits"]] == main[::-1]  # first-parent line, newest first
    assert {c["state"] for c in before["commits"]} == {"missing"}
    assert before["commits"][0]["merge"] is True
    assert before["hook_runs_failed"]["count"] >= len(main) and before["hook_runs_failed"]["newest_run_id"]

    started = time.monotonic()
    with worker_process(env, PREFIX + "a", KFM_RECONCILE_INTERVAL_S=str(INTERVAL_S)):
        rows = await _wait_rows(settings, main, within=120)
        assert all(rows.values()), [c for c, r in rows.items() if r is None]
        backlog_s = time.monotonic() - started
        # While the worker runs: each lost webhook's commit, from the commit to its row.
        latencies = []
        for i in range(3):
            t0 = time.monotonic()
            c = await _commit(lakefs, repo, "main", f"late-{i}")
            main.append(c)
            got = await _wait_rows(settings, [c], within=60)
            assert got[c] is not None
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(i)  # land at different points of the interval
    print(f"\nreconciler alone: {len(main) - 3} commits recorded {backlog_s:.1f} s after worker start; "
          f"lost webhook -> row: {', '.join(f'{x:.1f} s' for x in latencies)} (interval {INTERVAL_S} s)")
    assert max(latencies) <= INTERVAL_S + 1 + 20, latencies  # one interval (+1 s tick) plus one bundle

    assert all(r is None for r in (await _rows(settings, dev)).values()), "dev commits belong to dev's own watch"
    code, after = _coverage(env, repo)
    assert code == 0, after
    assert [c["state"] for c in after["commits"]] == ["recorded"] * len(main)
    assert all(isinstance(c["seq"], int) and len(c["bundle_sha256"]) == 64 for c in after["commits"])


async def test_webhook_and_reconciler_racing_give_one_row_per_commit(stack_env: dict[str, str]) -> None:
    prefix = unique("rcb") + "."
    env = isolated_registry(stack_env, prefix, unique("kfm-race-test"))
    settings = load_settings({**os.environ, **env})
    lakefs = LakeFS(settings)
    try:
        repo = unique("race")
        await lakefs.create_repository(repo, f"local://{repo}")
        start = await end_offsets(settings.kafka_bootstrap, settings.topic(TOPIC_EVENTS))
        with hooks_server(env) as url, worker_process(env, prefix, KFM_RECONCILE_INTERVAL_S="1"):
            commits = [_install(env, repo, url + "/lakefs/webhook")]
            cli: list[asyncio.Task[object]] = []
            for i in range(20):
                commits.append(await _commit(lakefs, repo, "main", i))
                if i % 5 == 4:  # and a manual pass racing both
                    cli.append(asyncio.create_task(asyncio.to_thread(
                        run_kfm, env, "reconcile", "--repo", repo, "--branch", "main")))
            await asyncio.gather(*cli)
            rows = await _wait_rows(settings, commits, within=150)
            await asyncio.sleep(6)  # let every duplicate reach the writer
            rows = await _rows(settings, commits)
        recs = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_EVENTS), start, timeout=10)
        sources = [json.loads(v)["source"] for _, v, _ in recs]
        trusted = TrustedKeys.from_dir(Path(settings.trusted_keys_dir))
        async with open_bucket(settings) as b:
            size = await LedgerReader(b, trusted, settings.checkpoint_name).size()
    finally:
        lakefs.close()
    assert all(rows.values()), [c for c, r in rows.items() if r is None]
    assert size == len(commits) == 21
    assert sorted(r.seq for r in rows.values() if r) == list(range(21))
    # It was a race: the same commits were asked for by webhooks and by the reconciler.
    assert sources.count("post-commit") == 21 and sources.count("reconcile") >= 1, sources
    print(f"\nrace: {len(recs)} events ({sources.count('reconcile')} from the reconciler) -> {size} rows")


async def test_permanent_failure_is_reported_and_retried_only_when_asked(
    env: dict[str, str], settings: Settings, lakefs: LakeFS
) -> None:
    repo = unique("broken")
    await lakefs.create_repository(repo, f"local://{repo}")
    installed = _install(env, repo, f"http://127.0.0.1:{free_port()}/lakefs/webhook")
    good = [installed, await _commit(lakefs, repo, "main", 1)]
    manifest = {"models": [{"name": "ghost", "version": "1.0.0", "path": "models/ghost.bin"}]}
    await lakefs.upload(repo, "main", "models/manifest.json", json.dumps(manifest).encode())
    bad = await lakefs.commit(repo, "main", "model manifest naming a missing model")
    await lakefs.delete(repo, "main", "models/manifest.json")
    good.append(await lakefs.commit(repo, "main", "manifest removed"))
    start = await end_offsets(settings.kafka_bootstrap, settings.topic(TOPIC_EVENTS))

    async def failed_mark() -> markers.FailedMark | None:
        async with open_bucket(settings) as b:
            return await markers.failed_mark(b, repo, bad)

    async def wait_failed(within: float = 60) -> markers.FailedMark:
        deadline = time.monotonic() + within
        while (m := await failed_mark()) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert m is not None, "no failed marker"
        return m

    with worker_process(env, PREFIX + "c", KFM_RECONCILE_INTERVAL_S=str(INTERVAL_S)):
        rows = await _wait_rows(settings, good, within=120)
        assert all(rows.values())
        mark = await wait_failed()
        assert not mark.retryable and "models/ghost.bin" in mark.reason
        await asyncio.sleep(4 * INTERVAL_S)  # several more passes
        assert len(await _events_for(settings, start, repo, bad)) == 1, "a permanent failure was requested again"
        code, cov = _coverage(env, repo)
        assert code == 1
        by_commit = {c["commit"]: c for c in cov["commits"]}
        assert by_commit[bad]["state"] == "failed" and by_commit[bad]["retryable"] is False
        assert "models/ghost.bin" in by_commit[bad]["reason"]
        assert all(by_commit[c]["state"] == "recorded" for c in good)

        out = run_kfm(env, "reconcile", "--json", "--repo", repo, "--branch", "main", "--retry-failed").stdout
        asked = [json.loads(x) for x in out.splitlines() if '"commit"' in x]
        assert [(a["commit"], a["why"]) for a in asked] == [(bad, "retry-failed")]
        deadline = time.monotonic() + 30
        while len(events := await _events_for(settings, start, repo, bad)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert [e["source"] for e in events] == ["reconcile", "reconcile"]
        await wait_failed()  # failed again: reported again, still not retried on its own
        run_kfm(env, "checkpoint", "--repo", repo, "--ref", bad, "--branch", "main")
        deadline = time.monotonic() + 30
        while len(events := await _events_for(settings, start, repo, bad)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert [e["source"] for e in events] == ["reconcile", "reconcile", "checkpoint"]
        await wait_failed()
        await asyncio.sleep(2 * INTERVAL_S)
        assert len(await _events_for(settings, start, repo, bad)) == 3
    assert (await _rows(settings, [bad]))[bad] is None
