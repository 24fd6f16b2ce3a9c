"""Rollbacks end to end against real lakeFS, Kafka and S3.

Commit A is bundled and recorded; B and C change data, configs and the model;
rolling back to A with each strategy must give A's bytes exactly. Tampered or
unknown-key bundles and unrecorded commits are refused with nothing changed.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from hooks.install import install_action
from tests.integration.fixtures_repo import populate
from tests.integration.helpers import (
    end_offsets,
    hooks_server,
    isolated_registry,
    ledger_jsonl,
    read_since,
    request_rollback,
    run_kfm,
    unique,
    worker_process,
)
from tests.lineage_schema import errors as lineage_errors
from worker._internal.kafka import Producer
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.bundle.attest import sign_statement
from worker.config import Settings, load_settings
from worker.constants import TOPIC_DEAD_LETTER, TOPIC_ROLLBACK_REQUESTS, TOPIC_ROLLBACK_RESULTS
from worker.keys import generate_keypair, load_private_key
from worker.rollback.request import RollbackRequest, request_key

pytestmark = pytest.mark.stack

PREFIX = unique("rb") + "."
BUCKET = unique("kfm-rollback-test")


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX, BUCKET)


@pytest.fixture(scope="module")
def running(env: dict[str, str]) -> Iterator[str]:
    with hooks_server(env) as url, worker_process(env, PREFIX):
        yield url + "/lakefs/webhook"


async def _rows(settings: Settings) -> dict[str, dict]:
    data = await ledger_jsonl(settings)
    return {json.loads(x)["lakefs_commit"]: json.loads(x) for x in data.splitlines()}


async def _wait_recorded(settings: Settings, commits: set[str], timeout: float = 180) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if commits <= set(await _rows(settings)):
            return
        await asyncio.sleep(1)
    raise AssertionError(f"not recorded: {commits - set(await _rows(settings))}")


async def _tree(lakefs: LakeFS, repo: str, ref: str) -> dict[str, tuple[int, str]]:
    return {o.path: (o.size, o.checksum) for o in await lakefs.list_objects(repo, ref)
            if not o.path.startswith("_lakefs_actions/")}


def _request(repo: str, commit: str, branch: str, strategy: str, **kw: object) -> RollbackRequest:
    return RollbackRequest(
        request_id=str(kw.pop("request_id", uuid.uuid4())), lakefs_repo=repo, commit=commit, target_branch=branch,
        strategy=strategy, requested_by="test", reason="regression in run C", requested_at=datetime.now(UTC),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def history(settings: Settings, running: str) -> dict[str, str]:
    return asyncio.run(_history(settings, running))


async def _history(settings: Settings, running: str) -> dict[str, str]:
    """Commit A (bundled), then B and C that change data, configs and the model."""
    lakefs = LakeFS(settings)
    repo = unique("rollback")
    try:
        await lakefs.create_repository(repo, f"local://{repo}")
        await install_action(lakefs, repo, "main", running)
        a = await populate(lakefs, repo, threshold="0.5", model_bytes=b"model-A" * 1000, message="A")
        await lakefs.upload(repo, "main", "configs/pipeline.yaml", b"threshold: 0.9\n")
        await lakefs.upload(repo, "main", "models/focus/3.1.0.bin", b"model-B" * 1000)
        await lakefs.upload(repo, "main", "data/landcover/tile-2.tif", os.urandom(1000))
        b = await lakefs.commit(repo, "main", "B")
        await lakefs.create_branch(repo, "feature", "main")
        await lakefs.upload(repo, "feature", "configs/pipeline.yaml", b"threshold: 0.99\n")
        await lakefs.delete(repo, "feature", "configs/nested/features.json")
        await lakefs.commit(repo, "feature", "C on feature")
        c = await lakefs.merge(repo, "feature", "main", "C")
        await _wait_recorded(settings, {a, b, c})
        return {"repo": repo, "A": a, "B": b, "C": c}
    finally:
        lakefs.close()


async def test_kfm_rollback_dry_run_prints_the_plan_and_changes_nothing(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, history: dict[str, str]
) -> None:
    """`kfm rollback --dry-run` as a user types it: it waits for the agent's plan by default and
    prints the ref movement and each file that would change; the branch is left as it was."""
    repo, a, c = history["repo"], history["A"], history["C"]
    target = "t-dry-cli"
    await lakefs.create_branch(repo, target, c)
    tree_before = await _tree(lakefs, repo, target)
    rid = f"dry-{uuid.uuid4().hex[:12]}"
    r = await asyncio.to_thread(run_kfm, env, "rollback", "--commit", a[:12], "--branch", target, "--dry-run",
                                "--request-id", rid, "--timeout", "180")
    lines = r.stdout.splitlines()
    assert lines[0] == f"dry run of request {rid}: nothing was changed", r.stdout
    assert f"roll back  lakefs://{repo}/{target} to commit {a} (strategy revert)" in lines[1]
    assert lines[2].split() == ["branch", "head", "now", c]
    assert lines[3].split(None, 2)[2] == f"new commit on {target} whose tree equals {a[:12]}"
    would = {tuple(x.split()) for x in lines[5:]}
    # B changed the config and the model and added a tile; C deleted features.json on the way.
    assert {("change", "configs/pipeline.yaml"), ("change", "models/focus/3.1.0.bin"),
            ("delete", "data/landcover/tile-2.tif"), ("add", "configs/nested/features.json")} <= would, r.stdout
    assert lines[4].split()[1] == str(len(lines) - 5)  # "N would change", then N lines
    assert "[published] request" in r.stderr and "[dry-run]" in r.stderr and "Traceback" not in r.stderr
    # Nothing changed: the head, the tree, and no claim or story stored for the request.
    assert await lakefs.branch_head(repo, target) == c
    assert await _tree(lakefs, repo, target) == tree_before
    async with open_bucket(settings) as bucket:
        assert await bucket.head(f"rollbacks/{rid}/claim.json") is None
        assert await bucket.head(f"rollbacks/{rid}/story.json") is None
    # --json: the result message as one document; --no-wait: today's fire-and-forget line.
    doc = json.loads((await asyncio.to_thread(
        run_kfm, env, "rollback", "--commit", a, "--branch", target, "--dry-run", "--json", "--timeout", "180")).stdout)
    assert doc["status"] == "dry-run" and doc["detail"]["head_before"] == c
    assert doc["detail"]["models_written_back"] == []  # this commit's model is in lakeFS: it is in the diff
    assert {ch["path"] for ch in doc["detail"]["changes"]} >= {"configs/pipeline.yaml"}
    quick = await asyncio.to_thread(run_kfm, env, "rollback", "--commit", a, "--branch", target, "--dry-run",
                                    "--no-wait", "--json")
    assert json.loads(quick.stdout)["published"] is True and "[dry-run]" not in quick.stderr
    # --quiet: it still waits for the plan, and says nothing; the exit code is the answer.
    silent = await asyncio.to_thread(run_kfm, env, "rollback", "--commit", a, "--branch", target, "--dry-run", "-q",
                                     "--timeout", "180")
    assert (silent.stdout, silent.stderr) == ("", "")
    assert await lakefs.branch_head(repo, target) == c


async def test_kfm_rollback_sends_its_trace_and_the_agent_continues_it(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, history: dict[str, str]
) -> None:
    """`kfm rollback` starts a span and sends its W3C traceparent with the request; the agent's
    rollback span (whose trace id the answer reports) is in that same trace."""
    repo, a, c = history["repo"], history["A"], history["C"]
    target = "t-dry-trace"
    await lakefs.create_branch(repo, target, c)
    requests = settings.topic(TOPIC_ROLLBACK_REQUESTS)
    start = await end_offsets(settings.kafka_bootstrap, requests)
    rid = f"trace-{uuid.uuid4().hex[:12]}"
    r = await asyncio.to_thread(run_kfm, env, "rollback", "--commit", a, "--branch", target, "--dry-run",
                                "--request-id", rid, "--json", "--timeout", "180")
    answer = json.loads(r.stdout)
    assert answer["status"] == "dry-run", answer
    sent = [dict(h) for _, v, h in await read_since(settings.kafka_bootstrap, requests, start)
            if json.loads(v)["request_id"] == rid]
    assert len(sent) == 1, sent
    assert sent[0]["kfm-request-id"] == rid.encode()
    version, trace_id, span_id, flags = sent[0]["traceparent"].decode().split("-")
    assert version == "00" and int(flags, 16) & 1, sent[0]  # sampled (the SDK may set the random bit too)
    assert len(span_id) == 16 and int(span_id, 16)
    assert len(trace_id) == 32 and int(trace_id, 16), sent[0]
    assert answer["detail"]["trace_id"] == trace_id


@pytest.mark.parametrize("strategy", ["revert", "reset", "branch"])
async def test_rollback_restores_commit_a_exactly(
    settings: Settings, lakefs: LakeFS, history: dict[str, str], strategy: str
) -> None:
    repo, a, c = history["repo"], history["A"], history["C"]
    target = f"t-{strategy}"
    await lakefs.create_branch(repo, target, c)
    assert await _tree(lakefs, repo, target) != await _tree(lakefs, repo, a)

    dry = await request_rollback(settings, _request(repo, a, target, strategy, dry_run=True))
    assert dry[0]["status"] == "dry-run"
    paths = {ch["path"] for ch in dry[0]["detail"]["changes"]}
    assert {"configs/pipeline.yaml", "models/focus/3.1.0.bin", "configs/nested/features.json"} <= paths
    assert await lakefs.branch_head(repo, target) == c  # a dry run changes nothing

    req = _request(repo, a, target, strategy)
    [final] = await request_rollback(settings, req)
    assert final["status"] == "completed", final
    ref = final["detail"]["restored_ref"]
    if strategy == "branch":
        assert ref == f"rollback-{a[:12]}-{req.request_id[:12]}"
        assert await lakefs.branch_head(repo, target) == c
    else:
        assert ref == target
    # Byte for byte: every object, including configs and the model.
    assert await _tree(lakefs, repo, ref) == await _tree(lakefs, repo, a)
    for path in ("configs/pipeline.yaml", "models/focus/3.1.0.bin", "configs/nested/features.json"):
        assert await lakefs.read(repo, ref, path, 1 << 24) == await lakefs.read(repo, a, path, 1 << 24)
    assert final["detail"]["checks"]["tree_equals_commit"] is True
    if strategy == "reset":
        assert await lakefs.branch_head(repo, target) == a
        assert (await lakefs.get_commit(repo, f"kfm-pre-rollback-{req.request_id[:12]}")).id == c
    async with open_bucket(settings) as bucket:
        story = json.loads((await bucket.get(f"rollbacks/{req.request_id}/story.json", 1 << 20))[0])
        bundle_run = story["dependencies"]["bundle_lineage_run"]
        bundled = json.loads((await bucket.get(f"evidence/{a}/{bundle_run}/openlineage.json", 1 << 20))[0])
        restored = json.loads((await bucket.get(f"rollbacks/{req.request_id}/openlineage.json", 1 << 20))[0])
    assert story["why"] == "regression in run C" and story["which_commit"] == a
    assert story["before"]["head"] == c and story["dependencies"]["upstream"]
    # Both runs' OpenLineage events are valid, and the bundle the bundling run wrote is the
    # dataset the rollback read.
    assert [lineage_errors(e) for e in bundled + restored] == [[]] * 4
    [produced] = bundled[-1]["outputs"]
    assert {(d["namespace"], d["name"]) for e in restored for d in e["inputs"]} == {
        (produced["namespace"], produced["name"])
    } == {(f"s3://{settings.s3_bucket}", f"artifacts/{a}.tar.zst")}


async def test_same_request_twice_restores_once(settings: Settings, lakefs: LakeFS, history: dict[str, str]) -> None:
    repo, a, c = history["repo"], history["A"], history["C"]
    await lakefs.create_branch(repo, "t-twice", c)
    req = _request(repo, a, "t-twice", "revert")
    finals = await request_rollback(settings, req, copies=2)
    assert len(finals) == 2 and finals[0] == finals[1] and finals[0]["status"] == "completed"
    head = await lakefs.branch_head(repo, "t-twice")
    assert (await lakefs.get_commit(repo, head)).parents == (c,)  # exactly one rollback commit
    # A different request for the same state leaves the same end state (no new commit).
    [again] = await request_rollback(settings, _request(repo, a, "t-twice", "revert"))
    assert again["status"] == "completed" and await lakefs.branch_head(repo, "t-twice") == head


async def test_refusals_change_nothing_and_the_requests_faults_are_dead_lettered(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, history: dict[str, str], tmp_path: Path
) -> None:
    """Every refusal is a one-line `rejected` answer; a request whose bundle does not verify against
    the ledger (tampered, untrusted, not the recorded one) is also dead-lettered; one refused for the
    state of the world (no row, a missing or dirty branch) is not."""
    repo, a, b, c = history["repo"], history["A"], history["B"], history["C"]
    await lakefs.create_branch(repo, "t-refuse", c)
    dead_letters = settings.topic(TOPIC_DEAD_LETTER)
    dl_start = await end_offsets(settings.kafka_bootstrap, dead_letters)
    refused: dict[str, str] = {}  # request id -> the dead-letter reason it must get
    rows = await _rows(settings)
    async with open_bucket(settings) as bucket:
        bundle_key = rows[a]["artifact_uri"].split("/", 3)[3]
        att_key = rows[a]["signatures"]["in_toto"].split("/", 3)[3]
        original_bundle, _ = await bucket.get(bundle_key, 1 << 30)
        original_att, _ = await bucket.get(att_key, 1 << 20)

        # A tampered bundle (one flipped byte, overwritten behind the registry's back).
        tampered = bytearray(original_bundle)
        tampered[len(tampered) // 2] ^= 0xFF
        await bucket.put(bundle_key, bytes(tampered))
        try:
            [r] = await request_rollback(settings, _request(repo, a, "t-refuse", "reset"))
        finally:
            await bucket.put(bundle_key, original_bundle)
        assert r["status"] == "rejected" and "does not match the ledger row" in r["reason"], r
        refused[r["request_id"]] = "unverified"

        # The same bundle re-signed by a key the registry does not trust.
        keys = generate_keypair(tmp_path, "stranger")
        env_doc = json.loads(original_att)
        payload = base64.b64decode(env_doc["payload"])
        await bucket.put(att_key, sign_statement(payload, load_private_key(keys.private_key_path)))
        try:
            [r] = await request_rollback(settings, _request(repo, a, "t-refuse", "reset"))
        finally:
            await bucket.put(att_key, original_att)
        assert r["status"] == "rejected" and "key" in r["reason"].lower(), r
        refused[r["request_id"]] = "unknown_key"

    # A commit that was never bundled.
    [r] = await request_rollback(settings, _request(repo, "f" * 64, "t-refuse", "reset"))
    assert r["status"] == "rejected" and "no ledger row" in r["reason"]
    assert await lakefs.branch_head(repo, "t-refuse") == c  # nothing changed

    # Someone's uncommitted work on the target branch is never committed or discarded.
    await lakefs.upload(repo, "t-refuse", "configs/wip.yaml", b"work in progress\n")
    for strategy in ("revert", "reset"):
        [r] = await request_rollback(settings, _request(repo, a, "t-refuse", strategy))
        assert r["status"] == "rejected" and "uncommitted" in r["reason"], r
    assert await lakefs.read(repo, "t-refuse", "configs/wip.yaml", 1 << 10) == b"work in progress\n"
    await lakefs.delete(repo, "t-refuse", "configs/wip.yaml")

    # A target branch that does not exist: a final answer, not a hang.
    [r] = await request_rollback(settings, _request(repo, a, "no-such-branch", "revert"))
    assert r["status"] == "rejected" and "does not exist" in r["reason"], r

    # The bundle named must be the recorded one.
    [r] = await request_rollback(settings, _request(repo, a, "t-refuse", "reset",
                                                  bundle_uri=rows[b]["artifact_uri"]))
    assert r["status"] == "rejected" and "not the recorded bundle" in r["reason"]
    refused[r["request_id"]] = "unverified"
    # A commit of another repository.
    [r] = await request_rollback(settings, _request(repo + "-other", a, "t-refuse", "reset"))
    assert r["status"] == "rejected" and f"belongs to repository {repo}," in r["reason"], r
    refused[r["request_id"]] = "unverified"
    assert await lakefs.branch_head(repo, "t-refuse") == c

    dead = await read_since(settings.kafka_bootstrap, dead_letters, dl_start, want=len(refused), timeout=60)
    got = {}
    for _, value, headers in dead:
        h = dict(headers)
        rid = json.loads(value)["request_id"]
        assert rid not in got, f"dead-lettered twice: {rid}"
        got[rid] = h["kfm-dl-reason"].decode()
        assert h["kfm-dl-agent"] == b"rollback" and b"\n" not in h["kfm-dl-message"], h
    assert got == refused


def _crafted(members: list[tarfile.TarInfo], data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(data) if m.isreg() else None)
    return zstandard.ZstdCompressor(level=3).compress(buf.getvalue())


@pytest.mark.parametrize("evil", ["dotdot", "symlink", "absolute"])
def test_restore_refuses_crafted_bundles(env: dict[str, str], tmp_path: Path, evil: str) -> None:
    """Signed by a trusted key, but with members that would escape the target directory."""
    from worker.bundle.attest import build_statement
    from worker.canonical import sha256_hex

    manifest = tarfile.TarInfo("manifest.json")
    body = b"{}"
    manifest.size = len(body)
    m = tarfile.TarInfo({"dotdot": "../escape.txt", "symlink": "lakefs/link", "absolute": "/tmp/abs.txt"}[evil])
    if evil == "symlink":
        m.type, m.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        m.size = len(body)
    raw = _crafted([manifest, m], body)
    bundle = tmp_path / "evil.tar.zst"
    bundle.write_bytes(raw)
    keys = generate_keypair(tmp_path, "signer")
    commit = "e" * 64
    stmt = build_statement(
        bundle_sha256=sha256_hex(raw), lakefs_repo="evil-repo", lakefs_branch="main", lakefs_commit=commit,
        builder_id="https://kfm.local/test", invocation_id=str(uuid.uuid4()),
        started_on=datetime.now(UTC), finished_on=datetime.now(UTC),
    )
    att = tmp_path / "evil.intoto.json"
    att.write_bytes(sign_statement(stmt, load_private_key(keys.private_key_path)))
    out = tmp_path / "out"
    r = run_kfm(env, "restore", "--bundle", str(bundle), "--attestation", str(att), "--to", str(out),
                "--key", str(keys.public_key_path), check=False)
    assert r.returncode == 1 and r.stdout.startswith("FAIL"), r.stdout
    assert not out.exists() or not any(out.iterdir())
    assert not (tmp_path / "escape.txt").exists()


async def test_worker_killed_mid_restore_completes_once(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, history: dict[str, str], running: str
) -> None:
    repo, a, c = history["repo"], history["A"], history["C"]
    await lakefs.create_branch(repo, "t-crash", c)
    req = _request(repo, a, "t-crash", "revert")
    # A second worker in the same group would share the requests; stop-start the module's
    # worker by running a crashing one under another prefix is not the same group, so use
    # a dedicated group: same topics, crash injected after the first object was restored.
    crash_env = {**env, "KFM_FAULT_INJECT": "rollback.mid_restore"}
    prefix2 = unique("rbcrash") + "."
    crash_env["KFM_TOPIC_PREFIX"] = prefix2
    run_kfm(crash_env, "topics", "ensure")
    s2 = load_settings({**os.environ, **crash_env})
    with worker_process(crash_env, prefix2 + "1") as proc:
        async with Producer(s2.kafka_bootstrap) as p:
            await p.send(s2.topic(TOPIC_ROLLBACK_REQUESTS), req.to_bytes(), key=request_key(repo, "t-crash"))
        rc = await asyncio.to_thread(proc.wait, 180)
    assert rc == 137
    assert await lakefs.branch_head(repo, "t-crash") == c  # died before the rollback commit
    start = await end_offsets(s2.kafka_bootstrap, s2.topic(TOPIC_ROLLBACK_RESULTS))
    with worker_process({**env, "KFM_TOPIC_PREFIX": prefix2}, prefix2 + "2"):
        deadline = asyncio.get_running_loop().time() + 180
        finals: list[dict] = []
        while not finals and asyncio.get_running_loop().time() < deadline:
            recs = await read_since(s2.kafka_bootstrap, s2.topic(TOPIC_ROLLBACK_RESULTS), start, want=0, timeout=3)
            finals = [json.loads(v) for _, v, _ in recs if json.loads(v)["final"]]
    assert [f["status"] for f in finals] == ["completed"], finals
    head = await lakefs.branch_head(repo, "t-crash")
    assert (await lakefs.get_commit(repo, head)).parents == (c,)  # restored once
    assert await _tree(lakefs, repo, "t-crash") == await _tree(lakefs, repo, a)
