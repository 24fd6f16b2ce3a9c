"""The ledger writer end to end — one row per commit, crash safety,
tamper evidence, audit replay — against real lakeFS, Kafka and S3.

The module uses its own registry bucket and topic prefix, so its ledger starts
empty and sequence numbers are predictable.
"""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hooks.install import install_action
from tests.integration.helpers import (
    STACK_DIR,
    hooks_server,
    isolated_registry,
    ledger_jsonl,
    post,
    run_kfm,
    unique,
    worker_process,
)
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import Settings
from worker.constants import HOOK_TOKEN_HEADER, LEDGER_CHECKPOINT_KEY, LEDGER_HEAD_KEY, META_PREFIX
from worker.io.ledger_reader import checkpoint_key, checkpoint_origin, commit_key
from worker.io.ledger_writer import parquet_key
from worker.keys import load_private_key
from worker.ledger import merkle
from worker.ledger.chain import verify_jsonl
from worker.ledger.checkpoint import parse_and_verify, parse_vkey, sign_checkpoint
from worker.ledger.head import Head
from worker.ledger.tiles import entries_key, tile_key

pytestmark = pytest.mark.stack

PREFIX = unique("lg") + "."
BUCKET = unique("kfm-ledger-test")
N = 50


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX, BUCKET)


async def _jsonl(settings: Settings) -> bytes:
    return await ledger_jsonl(settings)


async def _wait_rows(settings: Settings, want: int, timeout: float) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    rows: list[dict] = []
    while asyncio.get_running_loop().time() < deadline:
        data = await _jsonl(settings)
        rows = [json.loads(line) for line in data.splitlines()]
        if len(rows) >= want:
            return rows
        await asyncio.sleep(1.0)
    return rows


def _webhook_body(repo: str, commit: str, message: str) -> bytes:
    return json.dumps({
        "event_type": "post-commit", "event_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "action_name": "kfm-rollback-registry", "hook_id": "kfm_rollback_publish", "repository_id": repo,
        "branch_id": "main", "source_ref": "main", "commit_id": commit, "commit_message": message,
        "committer": "admin",
    }).encode()


async def test_fifty_commits_delivered_three_times_give_fifty_rows(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, tmp_path: Path
) -> None:
    repo = unique("ledger")
    await lakefs.create_repository(repo, f"local://{repo}")
    token = Path(env["KFM_HOOK_TOKEN_FILE"]).read_text().strip()
    headers = {HOOK_TOKEN_HEADER: token, "Content-Type": "application/json"}
    commits: list[str] = []
    with hooks_server(env) as url, worker_process(env, PREFIX + "a"):
        hook = url + "/lakefs/webhook"
        # The action install commit is bundled too; then N - 1 commits make N rows.
        commits.append(await install_action(lakefs, repo, "main", hook))
        for i in range(N - 1):
            await lakefs.upload(repo, "main", "configs/pipeline.yaml", f"threshold: {i}\n".encode())
            c = await lakefs.commit(repo, "main", f"run {i}")
            commits.append(c)
            # lakeFS delivered it once; deliver the same webhook twice more.
            for _ in range(2):
                status, _ = await post(hook, _webhook_body(repo, c, f"run {i}"), headers)
                assert status == 202
            if i % 10 == 0:
                # Two more bundles of the same commit, built concurrently.
                await asyncio.gather(*(asyncio.to_thread(run_kfm, env, "checkpoint", "--repo", repo, "--ref", c)
                                       for _ in range(2)))
        rows = await _wait_rows(settings, N, timeout=420)
        await asyncio.sleep(8)  # let every duplicate reach the writer
        rows = await _wait_rows(settings, N, timeout=5)

    assert len(rows) == N
    # A first start on an empty bucket is not reported as a recovery.
    first_log = (STACK_DIR / "logs" / f"worker-{PREFIX}a.log").read_text()
    assert "ledger.empty" in first_log and "finished_after_crash" not in first_log
    assert [r["seq"] for r in rows] == list(range(N))
    assert sorted(r["lakefs_commit"] for r in rows) == sorted(commits)
    verify_jsonl(await _jsonl(settings))
    out = run_kfm(env, "ledger", "verify")
    assert out.stdout.startswith("OK: 50 rows"), out.stdout
    # The writer signs under the origin as its key name (the checkpoint format's SHOULD).
    async with open_bucket(settings) as b:
        note = (await b.get(LEDGER_CHECKPOINT_KEY, 1 << 16))[0].decode()
    origin, signature = note.split("\n", 1)[0], note.rsplit("\n\n", 1)[1]
    assert origin == checkpoint_origin(settings.checkpoint_name, settings.s3_bucket)
    assert signature.split(" ")[1] == origin
    # `kfm ledger vkey` gives what another tool needs to check it: name and key, in one string.
    name, public_key = parse_vkey(run_kfm(env, "ledger", "vkey").stdout.strip())
    assert name == origin
    assert parse_and_verify(note.encode(), name, public_key, origin).size == N


async def _head(settings: Settings) -> Head:
    async with open_bucket(settings) as b:
        return Head.from_bytes((await b.get(LEDGER_HEAD_KEY, 1 << 26))[0])


async def test_crash_between_head_and_publication_is_finished_on_restart(
    env: dict[str, str], settings: Settings, lakefs: LakeFS
) -> None:
    repo = unique("crash")
    await lakefs.create_repository(repo, f"local://{repo}")
    before = len((await _jsonl(settings)).splitlines())
    await lakefs.upload(repo, "main", "configs/pipeline.yaml", b"threshold: crash\n")
    commit = await lakefs.commit(repo, "main", "crash me")
    with worker_process(env, PREFIX + "crash", KFM_FAULT_INJECT="ledger.after_head") as proc:
        run_kfm(env, "checkpoint", "--repo", repo, "--ref", commit)
        rc = await asyncio.to_thread(proc.wait, 180)
    assert rc == 137  # died right after the commit point
    head = await _head(settings)
    assert head.size == before + 1 and json.loads(head.lines[-1])["lakefs_commit"] == commit
    async with open_bucket(settings) as b:
        assert await b.head(f"{META_PREFIX}{commit}.yaml") is None  # publication never ran
        assert await b.head(commit_key(commit)) is None
    # Readers still see a complete ledger: the published checkpoint is the one before.
    verify = run_kfm(env, "ledger", "verify")
    assert verify.stdout.startswith(f"OK: {before} rows"), verify.stdout

    with worker_process(env, PREFIX + "restart") as proc:
        deadline = asyncio.get_running_loop().time() + 120
        while asyncio.get_running_loop().time() < deadline:
            async with open_bucket(settings) as b:
                if await b.head(f"{META_PREFIX}{commit}.yaml") is not None:
                    break
            await asyncio.sleep(1)
        await asyncio.sleep(5)  # the redelivered candidate is answered as a duplicate
    log = (STACK_DIR / "logs" / f"worker-{PREFIX}restart.log").read_text()
    assert "ledger.finished_after_crash" in log
    rows = [json.loads(x) for x in (await _jsonl(settings)).splitlines()]
    assert len(rows) == before + 1, "row lost or doubled"
    out = run_kfm(env, "ledger", "verify")
    assert out.stdout.startswith(f"OK: {before + 1} rows"), out.stdout


async def test_sigterm_finishes_the_batch_in_flight(
    env: dict[str, str], settings: Settings, lakefs: LakeFS
) -> None:
    """A stop right after the commit point still publishes the rows and the checkpoint."""
    repo = unique("stop")
    await lakefs.create_repository(repo, f"local://{repo}")
    before = (await _head(settings)).size
    await lakefs.upload(repo, "main", "configs/pipeline.yaml", b"threshold: stop\n")
    commit = await lakefs.commit(repo, "main", "stop me")
    # The pause holds the SIGTERM inside the window between the head and publication.
    with worker_process(env, PREFIX + "stop", KFM_FAULT_PAUSE="ledger.after_head:4") as proc:
        run_kfm(env, "checkpoint", "--repo", repo, "--ref", commit)
        deadline = asyncio.get_running_loop().time() + 180
        while (await _head(settings)).size == before:
            assert asyncio.get_running_loop().time() < deadline, "no append"
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 120)
    assert rc == 0
    log = (STACK_DIR / "logs" / f"worker-{PREFIX}stop.log").read_text()
    assert "ledger.stopping_after_batch" in log
    out = run_kfm(env, "ledger", "verify")
    assert out.stdout.startswith(f"OK: {before + 1} rows"), out.stdout
    async with open_bucket(settings) as b:
        assert await b.head(commit_key(commit)) is not None


@pytest.mark.parametrize(
    ("tamper", "expect"),
    [
        ("edit", "seq=7 (line 8)"),
        ("delete", "line 6"),
        ("reorder", "line 4"),
    ],
)
async def test_tampering_is_named_by_ledger_verify(
    env: dict[str, str], settings: Settings, tamper: str, expect: str
) -> None:
    size = len((await _jsonl(settings)).splitlines())
    assert 10 <= size < 256
    key = entries_key(0, size)  # every row is in the first, partial entry bundle
    async with open_bucket(settings) as b:
        original, _ = await b.get(key, 1 << 30)
        lines = original.splitlines(keepends=True)
        if tamper == "edit":
            line = bytearray(lines[7])
            i = line.index(b'"producer":"') + len(b'"producer":"')
            line[i] = ord("X") if line[i] != ord("X") else ord("Y")
            lines[7] = bytes(line)
        elif tamper == "delete":
            del lines[5]
        else:
            lines[3], lines[4] = lines[4], lines[3]
        await b.put(key, b"".join(lines))
        try:
            r = run_kfm(env, "ledger", "verify", check=False)
            assert r.returncode == 1 and r.stdout.startswith("FAIL"), r.stdout
            assert expect in r.stdout, r.stdout
        finally:
            await b.put(key, original)
    assert run_kfm(env, "ledger", "verify").returncode == 0


async def test_a_tampered_tile_is_named(env: dict[str, str], settings: Settings) -> None:
    size = len((await _jsonl(settings)).splitlines())
    key = tile_key(0, 0, size)
    async with open_bucket(settings) as b:
        original, _ = await b.get(key, 1 << 20)
        await b.put(key, bytes([original[0] ^ 1]) + original[1:])
        try:
            r = run_kfm(env, "ledger", "verify", check=False)
            assert r.returncode == 1 and key in r.stdout, r.stdout
        finally:
            await b.put(key, original)


async def test_verify_from_a_trusted_checkpoint_checks_only_newer_rows(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    lines = (await _jsonl(settings)).splitlines()
    size, old = len(lines), len(lines) // 2
    # A monitor's copy of an earlier checkpoint: the root of the first `old` rows, signed.
    key = load_private_key(Path(env["KFM_SIGNING_KEY"]))
    origin = checkpoint_origin(settings.checkpoint_name, settings.s3_bucket)
    note = sign_checkpoint(origin, old, merkle.root(lines[:old]), settings.checkpoint_name, key)
    (tmp_path / "trusted.note").write_bytes(note)
    r = run_kfm(env, "ledger", "verify", "--from", str(tmp_path / "trusted.note"))
    assert r.stdout.startswith(f"OK: rows {old}..{size}"), r.stdout
    # A checkpoint of the same size but another root (a forked history) is refused.
    forged = sign_checkpoint(checkpoint_origin(settings.checkpoint_name, settings.s3_bucket), old,
                             bytes(32), settings.checkpoint_name, key)
    (tmp_path / "forged.note").write_bytes(forged)
    r = run_kfm(env, "ledger", "verify", "--from", str(tmp_path / "forged.note"), check=False)
    assert r.returncode == 1 and "history was rewritten" in r.stdout, r.stdout
    # An archived checkpoint beyond both the published checkpoint and the writer's head
    # means rows that were vouched for are gone (truncation), not an append in progress.
    ahead = sign_checkpoint(checkpoint_origin(settings.checkpoint_name, settings.s3_bucket), size + 5,
                            bytes(32), settings.checkpoint_name, key)
    async with open_bucket(settings) as b:
        await b.put(checkpoint_key(size + 5), ahead)
        try:
            r = run_kfm(env, "ledger", "verify", check=False)
            assert r.returncode == 1 and "rows were removed" in r.stdout, r.stdout
        finally:
            await b.delete(checkpoint_key(size + 5))


async def test_mirror_disagreement_and_proofs(env: dict[str, str], settings: Settings) -> None:
    rows = [json.loads(x) for x in (await _jsonl(settings)).splitlines()]
    commit = rows[10]["lakefs_commit"]
    proof = json.loads(run_kfm(env, "ledger", "prove", "--json", commit).stdout)
    assert proof["seq"] == 10 and proof["tree_size"] == len(rows) and proof["inclusion_proof"]
    shown = json.loads(run_kfm(env, "ledger", "show", "--json", commit).stdout)
    assert shown["hash"] == rows[10]["hash"]
    listed = run_kfm(env, "ledger", "list", "--limit", "3").stdout.splitlines()
    assert [line.split()[1] for line in listed[1:4]] == [r["lakefs_commit"] for r in rows[-3:]]  # under a header
    assert run_kfm(env, "ledger", "verify", "--derived").returncode == 0
    async with open_bucket(settings) as b:
        key = f"{META_PREFIX}{commit}.yaml"
        sidecar, _ = await b.get(key, 1 << 20)
        await b.put(key, sidecar.replace(b"lakefs_branch: main", b"lakefs_branch: prod"))
        try:
            r = run_kfm(env, "ledger", "verify", "--derived", check=False)
            assert r.returncode == 1 and commit in r.stdout, r.stdout
        finally:
            await b.put(key, sidecar)
        part = parquet_key(0)
        parquet, _ = await b.get(part, 1 << 30)
        await b.delete(part)
        try:
            r = run_kfm(env, "ledger", "verify", "--derived", check=False)
            assert r.returncode == 1 and part in r.stdout, r.stdout
        finally:
            await b.put(part, parquet)
        row_object, _ = await b.get(commit_key(commit), 1 << 20)
        await b.put(commit_key(commit), row_object.replace(b'"seq":10', b'"seq":11'))
        try:
            r = run_kfm(env, "ledger", "verify", "--derived", check=False)
            assert r.returncode == 1 and commit in r.stdout, r.stdout
        finally:
            await b.put(commit_key(commit), row_object)


async def test_audit_replay_matches(env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    r = run_kfm(env, "audit", "replay", "--scratch", str(tmp_path / "replay"))
    assert r.stdout.startswith("MATCH"), r.stdout
    rebuilt = (tmp_path / "replay" / "rollback-index.jsonl").read_bytes()
    assert rebuilt == await _jsonl(settings)
