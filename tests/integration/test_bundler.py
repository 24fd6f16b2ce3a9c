"""The bundler agent against real lakeFS, Kafka and S3.

A commit made in lakeFS reaches the worker through the real action webhook;
the bundle it stores must hold exactly the commit's bytes, rebuild
byte-identically, verify, and fail verification when tampered with.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from hooks.install import install_action
from tests.integration.fixtures_repo import populate
from tests.integration.helpers import (
    ROOT,
    end_offsets,
    free_port,
    hooks_server,
    isolated_registry,
    ledger_jsonl,
    read_since,
    run_kfm,
    unique,
    worker_process,
)
from tests.lineage_schema import errors as lineage_errors
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.bundle.extract import extract_bundle
from worker.config import Settings, load_settings
from worker.constants import TOPIC_DEAD_LETTER, TOPIC_GOVERNANCE, TOPIC_INDEX_CANDIDATES
from worker.events import CommitEvent
from worker.io import bundling
from worker.io.handlers import signing_key
from worker.io.runtime import Runtime
from worker.io.staging import stage_commit

pytestmark = pytest.mark.stack

PREFIX = unique("bt") + "."


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX)


@pytest.fixture(scope="module")
def running(env: dict[str, str]) -> Iterator[str]:
    """The hooks server and one worker for the module; yields the webhook URL."""
    with hooks_server(env) as url, worker_process(env, PREFIX):
        yield url + "/lakefs/webhook"


async def _candidates(settings: Settings, start: dict[int, int], want: int, timeout: float = 90) -> list[dict]:
    recs = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_INDEX_CANDIDATES), start,
                            want=want, timeout=timeout)
    return [json.loads(v) for _, v, _ in recs]


async def _offsets(settings: Settings, topic: str) -> dict[int, int]:
    return await end_offsets(settings.kafka_bootstrap, settings.topic(topic))


def _members(path: Path) -> dict[str, bytes]:
    with path.open("rb") as f:
        reader = zstandard.ZstdDecompressor().stream_reader(f)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def _repack(members: dict[str, bytes], out: Path, mtime: int = 0) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(zstandard.ZstdCompressor(level=10).compress(buf.getvalue()))


async def _download(settings: Settings, key: str, dest: Path) -> None:
    async with open_bucket(settings) as b:
        await b.download(key, dest, 1 << 32)


async def test_commit_is_bundled_verified_and_tamper_evident(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, running: str, tmp_path: Path
) -> None:
    repo = unique("bundle")
    await lakefs.create_repository(repo, f"local://{repo}")
    start = await _offsets(settings, TOPIC_INDEX_CANDIDATES)
    await install_action(lakefs, repo, "main", running)
    commit = await populate(lakefs, repo)

    cands = await _candidates(settings, start, want=2)
    by_commit = {c["body"]["lakefs_commit"]: c for c in cands}
    assert commit in by_commit, cands
    cand = by_commit[commit]
    body = cand["body"]
    assert body["artifact_uri"] == f"s3://{settings.s3_bucket}/artifacts/{commit}.tar.zst"
    assert body["checksums"]["artifact_sha256"] == cand["bundle_sha256"]
    assert len(body["otel_trace_id"]) == 32 and body["openlineage_run_id"]
    assert body["energy_carbon"]["kwh"] >= 0 and "cpu_s" in body["energy_carbon"]["method"]

    # The stored bundle holds exactly the commit's bytes.
    bundle = tmp_path / f"{commit}.tar.zst"
    await _download(settings, f"artifacts/{commit}.tar.zst", bundle)
    extracted = extract_bundle(bundle, tmp_path / "x", settings.limits)
    for path in ("configs/pipeline.yaml", "configs/nested/features.json", "models/focus/3.1.0.bin",
                 "models/manifest.json"):
        want = await lakefs.read(repo, commit, path, 1 << 30)
        assert extracted.files[f"lakefs/{path}"].read_bytes() == want, path
    assert {c["path"] for c in body["configs"]} == {"configs/pipeline.yaml", "configs/nested/features.json"}
    assert body["models"][0]["name"] == "focus-transformer"
    item = json.loads(extracted.files["lakefs/stac/landcover/items/tile-1.json"].read_bytes())
    asset = item["assets"]["data"]
    assert asset["href"] == f"lakefs://{repo}/{commit}/data/landcover/tile-1.tif"
    assert asset["file:size"] == 50_000 and asset["kfm:lakefs_checksum"]
    assert item["assets"]["thumb"]["href"] == "https://example.org/thumb.png"
    assert {d["lakefs_ref"] for d in body["data_snapshot"]} == {
        f"lakefs://{repo}/{commit}/stac/catalog.json",
        f"lakefs://{repo}/{commit}/stac/landcover/collection.json",
    }
    # The commit is protected from garbage collection by a tag.
    assert (await lakefs.get_commit(repo, f"kfm-rollback-{commit[:20]}")).id == commit

    # kfm verify: passes on the stored bundle, by URI and as a file. Offline: the row may not be
    # in a checkpoint yet (verifying against the ledger is tests/integration/test_verify_cli.py).
    ok = run_kfm(env, "verify", body["artifact_uri"], "--offline")
    assert ok.stdout.startswith("OK:") and commit in ok.stdout
    att = tmp_path / f"{commit}.intoto.json"
    async with open_bucket(settings) as b:
        att.write_bytes((await b.get(f"attestations/{commit}.intoto.json", 1 << 20))[0])
    assert run_kfm(env, "verify", str(bundle), "--offline").returncode == 0

    # ... and fails, naming the problem, on every kind of tampering.
    flipped = tmp_path / "flipped.tar.zst"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    r = run_kfm(env, "verify", str(flipped), "--attestation", str(att), check=False)
    assert r.returncode == 1 and "FAIL" in r.stdout and "sha256" in r.stdout.lower()

    members = _members(bundle)
    removed = dict(members)
    del removed["lakefs/configs/pipeline.yaml"]
    short = tmp_path / "removed.tar.zst"
    _repack(removed, short)
    r = run_kfm(env, "verify", str(short), "--attestation", str(att), check=False)
    assert r.returncode == 1 and "FAIL" in r.stdout

    other = await populate(lakefs, repo, threshold="0.9", message="second commit")
    cands = await _candidates(settings, start, want=3)
    assert other in {c["body"]["lakefs_commit"] for c in cands}
    other_att = tmp_path / "other.intoto.json"
    async with open_bucket(settings) as b:
        other_att.write_bytes((await b.get(f"attestations/{other}.intoto.json", 1 << 20))[0])
    r = run_kfm(env, "verify", str(bundle), "--attestation", str(other_att), check=False)
    assert r.returncode == 1 and "FAIL" in r.stdout

    unknown = tmp_path / "keys"
    run_kfm(env, "keys", "init", "--dir", str(unknown), "--name", "stranger")
    r = run_kfm(env, "verify", str(bundle), "--attestation", str(att), "--key", str(unknown / "stranger.pub"),
                check=False)
    assert r.returncode == 1 and "FAIL" in r.stdout and "key" in r.stdout.lower()


async def test_same_commit_bundled_twice_is_byte_identical(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, tmp_path: Path
) -> None:
    repo = unique("repro")
    await lakefs.create_repository(repo, f"local://{repo}")
    commit = await populate(lakefs, repo)
    a, b = tmp_path / "a.tar.zst", tmp_path / "b.tar.zst"
    ra = json.loads(run_kfm(env, "bundle", "build", "--json", "--repo", repo, "--ref", commit, "--out", str(a)).stdout)
    rb = json.loads(run_kfm(env, "bundle", "build", "--json", "--repo", repo, "--ref", commit, "--out", str(b)).stdout)
    assert a.read_bytes() == b.read_bytes()
    assert ra["sha256"] == rb["sha256"] and ra["members"] == rb["members"] == 7


async def test_kfm_checkpoint_sends_its_trace_and_the_bundle_continues_it(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, running: str
) -> None:
    """`kfm checkpoint` starts a span and sends its W3C traceparent with the event; the
    bundle's spans (whose trace id the candidate carries) are in that same trace."""
    from worker.constants import TOPIC_EVENTS

    repo = unique("cptrace")
    await lakefs.create_repository(repo, f"local://{repo}")
    commit = await populate(lakefs, repo)  # no action installed: only the command asks
    start_e = await _offsets(settings, TOPIC_EVENTS)
    start_c = await _offsets(settings, TOPIC_INDEX_CANDIDATES)
    run_kfm(env, "checkpoint", "--repo", repo, "--ref", commit)
    sent = [dict(h) for _, v, h in await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_EVENTS), start_e,
                                                    want=1, timeout=30)
            if json.loads(v)["commit_id"] == commit]
    assert len(sent) == 1, sent
    version, trace_id, span_id, flags = sent[0]["traceparent"].decode().split("-")
    assert version == "00" and int(flags, 16) & 1 and int(span_id, 16) and int(trace_id, 16), sent[0]
    [cand] = [c for c in await _candidates(settings, start_c, want=1) if c["body"]["lakefs_commit"] == commit]
    assert cand["body"]["otel_trace_id"] == trace_id


async def test_failures_publish_no_candidate(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, running: str
) -> None:
    # (a) lakeFS object missing: the model manifest names a file that is not there.
    repo = unique("broken")
    await lakefs.create_repository(repo, f"local://{repo}")
    await lakefs.upload(repo, "main", "configs/a.yaml", b"a: 1\n")
    manifest = {"models": [{"name": "ghost", "version": "1.0.0", "path": "models/ghost.bin"}]}
    await lakefs.upload(repo, "main", "models/manifest.json", json.dumps(manifest).encode())
    missing = await lakefs.commit(repo, "main", "model manifest with a missing model")
    start_c = await _offsets(settings, TOPIC_INDEX_CANDIDATES)
    start_d = await _offsets(settings, TOPIC_DEAD_LETTER)
    start_g = await _offsets(settings, TOPIC_GOVERNANCE)
    run_kfm(env, "checkpoint", "--repo", repo, "--ref", missing)
    dead = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_DEAD_LETTER), start_d, want=1, timeout=60)
    assert any(dict(h)["kfm-dl-reason"] == b"failed" and b"models/ghost.bin" in dict(h)["kfm-dl-message"]
               for _, _, h in dead)
    gov = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_GOVERNANCE), start_g, want=1, timeout=10)
    failed = [json.loads(v) for _, v, _ in gov if json.loads(v)["type"] == "bundle.failed"]
    assert failed and failed[0]["lakefs_commit"] == missing and failed[0]["retryable"] is False
    assert await _candidates(settings, start_c, want=0, timeout=3) == []
    async with open_bucket(settings) as b:
        assert await b.head(f"artifacts/{missing}.tar.zst") is None

    # (b) S3 down: a worker that cannot reach the bucket retries, then reports; no candidate, no object.
    repo2 = unique("s3down")
    await lakefs.create_repository(repo2, f"local://{repo2}")
    commit2 = await populate(lakefs, repo2)
    prefix2 = unique("s3down") + "."
    env2 = {**env, "KFM_TOPIC_PREFIX": prefix2, "KFM_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "KFM_BUNDLE_RETRIES": "1"}
    run_kfm(env2, "topics", "ensure")
    s2 = load_settings({**os.environ, **env2})
    start_c2 = await _offsets(s2, TOPIC_INDEX_CANDIDATES)
    start_d2 = await _offsets(s2, TOPIC_DEAD_LETTER)
    with worker_process(env2, prefix2):
        run_kfm(env2, "checkpoint", "--repo", repo2, "--ref", commit2)
        dead = await read_since(s2.kafka_bootstrap, s2.topic(TOPIC_DEAD_LETTER), start_d2, want=1, timeout=120)
    assert dead and dict(dead[0][2])["kfm-dl-reason"] == b"retries_exhausted"
    assert b"retries exhausted" in dict(dead[0][2])["kfm-dl-message"]
    assert await _candidates(s2, start_c2, want=0, timeout=3) == []
    async with open_bucket(settings) as b:
        assert await b.head(f"artifacts/{commit2}.tar.zst") is None
        assert await b.head(f"attestations/{commit2}.intoto.json") is None


async def test_one_gib_model_bundles_in_bounded_memory(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, tmp_path: Path
) -> None:
    repo = unique("big")
    await lakefs.create_repository(repo, f"local://{repo}")
    big = tmp_path / "model.bin"
    with big.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(16 << 20))
    await lakefs.upload(repo, "main", "models/big/1.0.0.bin", big)
    big.unlink()
    manifest = {"models": [{"name": "big", "version": "1.0.0", "path": "models/big/1.0.0.bin"}]}
    await lakefs.upload(repo, "main", "models/manifest.json", json.dumps(manifest).encode())
    commit = await lakefs.commit(repo, "main", "a 1 GiB model")
    out = tmp_path / "big.tar.zst"
    # A fresh parent whose only child is the build, so RUSAGE_CHILDREN is the build's peak RSS.
    probe = (
        "import resource, subprocess, sys;"
        "r = subprocess.run(sys.argv[1:]);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        "sys.exit(r.returncode)"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "worker._cli", "bundle", "build",
         "--repo", repo, "--ref", commit, "--out", str(out)],
        env={**os.environ, **env}, capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    peak_mib = int(r.stdout.strip().splitlines()[-1]) / 1024
    print(f"1 GiB model bundle: peak RSS {peak_mib:.0f} MiB, bundle {out.stat().st_size / 2**20:.0f} MiB")
    assert out.stat().st_size > 1 << 30
    assert peak_mib < 300, peak_mib
    await asyncio.sleep(0)


async def test_trace_continues_from_webhook_and_lineage_is_emitted(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, running: str
) -> None:
    """The bundle's span tree continues the webhook's W3C trace; OpenLineage START/COMPLETE
    for the run reach the lineage transport (a Kafka topic) and are stored as evidence."""
    from tests.integration.helpers import post
    from worker.constants import HOOK_TOKEN_HEADER, TOPIC_LINEAGE

    repo = unique("traced")
    await lakefs.create_repository(repo, f"local://{repo}")
    commit = await populate(lakefs, repo)  # no action installed: we deliver the webhook ourselves
    start = await _offsets(settings, TOPIC_INDEX_CANDIDATES)
    start_l = await _offsets(settings, TOPIC_LINEAGE)
    trace_id = os.urandom(16).hex()
    body = json.dumps({
        "event_type": "post-commit", "event_time": "2026-11-26T10:00:00Z", "action_name": "a", "hook_id": "h",
        "repository_id": repo, "branch_id": "main", "commit_id": commit,
    }).encode()
    token = Path(env["KFM_HOOK_TOKEN_FILE"]).read_text().strip()
    status, _ = await post(running, body, {HOOK_TOKEN_HEADER: token, "Content-Type": "application/json",
                                           "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"})
    assert status == 202
    [cand] = [c for c in await _candidates(settings, start, want=1) if c["body"]["lakefs_commit"] == commit]
    assert cand["body"]["otel_trace_id"] == trace_id
    run_id = cand["body"]["openlineage_run_id"]
    recs = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_LINEAGE), start_l, want=2, timeout=30)
    events = [json.loads(v) for _, v, _ in recs if json.loads(v)["run"]["runId"] == run_id]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    # OpenLineage's S3 naming for the bundle, and events valid against the OpenLineage schema.
    assert [(d["namespace"], d["name"]) for d in events[1]["outputs"]] == [
        (f"s3://{settings.s3_bucket}", f"artifacts/{commit}.tar.zst")
    ]
    assert [lineage_errors(e) for e in events] == [[], []]
    async with open_bucket(settings) as b:
        trace_doc = json.loads((await b.get(f"evidence/{commit}/{run_id}/otel-trace.json", 1 << 20))[0])
        stored = json.loads((await b.get(f"evidence/{commit}/{run_id}/openlineage.json", 1 << 20))[0])
    assert stored == events
    spans = trace_doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {s["traceId"] for s in spans} == {trace_id}
    assert {"bundle", "bundle.freeze", "bundle.stac", "bundle.configs", "bundle.models", "bundle.package"} <= {
        s["name"] for s in spans
    }


async def _bundle_as_before_v2(
    settings: Settings, repo: str, commit: str, monkeypatch: pytest.MonkeyPatch, *, attest: bool
) -> str:
    """Store the commit's bundle as the bundler did before the level was recorded: manifest
    format v1 at zstd level 10 (its bytes are pinned by the golden bundle's tests). With
    ``attest``, the whole run (bundle, evidence, attestation); without, the bundle alone, as a
    crash after its upload left it. Returns the stored bundle's SHA-256."""
    event = CommitEvent(source="checkpoint", repository_id=repo, branch_id="main", commit_id=commit,
                        event_time=datetime.now(UTC))

    async def build_v1(rt: Runtime, event: CommitEvent, work: Path, steps: object = None) -> bundling.BuiltBundle:
        staged = await stage_commit(rt, event, work / "staging")
        return await bundling.package(event, staged, None, work / f"{event.commit_id}.tar.zst")

    async with await Runtime.open(settings) as rt:
        if attest:
            with monkeypatch.context() as m:
                m.setattr(bundling, "build_bundle", build_v1)
                published = await bundling.bundle_and_upload(rt, event, signing_key(rt))
            return published.bundle_sha256
        built = await build_v1(rt, event, rt.work_dir / f"v1-{commit[:12]}")
        await rt.bucket.upload_file(f"artifacts/{commit}.tar.zst", built.path)
        return built.sha256


def _manifest_of(path: Path) -> dict[str, object]:
    return json.loads(_members(path)["manifest.json"])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("stored_as", "attested"), [("v1", True), ("v1", False), ("v2-level-10", True)],
                         ids=["v1-whole-run", "v1-bundle-only", "v2-level-10"])
async def test_commit_bundled_at_level_10_before_the_level_was_recorded_is_recognised_on_redelivery(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, running: str, tmp_path: Path, stored_as: str,
    attested: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit bundled by the earlier bundler (format v1, level 10), or by this one while
    KFM_BUNDLE_ZSTD_LEVEL was 10, redelivered to a worker at the default level 3: the stored
    bundle is the bundle (same digest, untouched), the candidate and the ledger row name it,
    nothing is dead-lettered, and it verifies."""
    assert settings.bundle_zstd_level == 3
    repo = unique("v1level")
    await lakefs.create_repository(repo, f"local://{repo}")
    commit = await populate(lakefs, repo)
    if stored_as == "v1":
        stored_sha = await _bundle_as_before_v2(settings, repo, commit, monkeypatch, attest=attested)
    else:
        async with await Runtime.open(replace(settings, bundle_zstd_level=10)) as rt:
            event = CommitEvent(source="checkpoint", repository_id=repo, branch_id="main", commit_id=commit,
                                event_time=datetime.now(UTC))
            stored_sha = (await bundling.bundle_and_upload(rt, event, signing_key(rt))).bundle_sha256
    before = tmp_path / "before.tar.zst"
    await _download(settings, f"artifacts/{commit}.tar.zst", before)
    manifest = _manifest_of(before)
    if stored_as == "v1":
        assert manifest["format"] == "kfm-rollback-bundle/v1" and "zstd_level" not in manifest
    else:
        assert manifest["format"] == "kfm-rollback-bundle/v2" and manifest["zstd_level"] == 10

    start_c = await _offsets(settings, TOPIC_INDEX_CANDIDATES)
    start_d = await _offsets(settings, TOPIC_DEAD_LETTER)
    run_kfm(env, "checkpoint", "--repo", repo, "--ref", commit)  # the event, delivered (again)
    cands = [c for c in await _candidates(settings, start_c, want=1) if c["body"]["lakefs_commit"] == commit]
    assert cands and cands[0]["bundle_sha256"] == stored_sha

    after = tmp_path / f"{commit}.tar.zst"
    await _download(settings, f"artifacts/{commit}.tar.zst", after)
    assert after.read_bytes() == before.read_bytes()
    async with open_bucket(settings) as b:
        envelope = (await b.get(f"attestations/{commit}.intoto.json", 1 << 20))[0]
    statement = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    assert statement["subject"][0]["digest"]["sha256"] == stored_sha
    ok = run_kfm(env, "verify", f"s3://{settings.s3_bucket}/artifacts/{commit}.tar.zst", "--offline")
    assert ok.stdout.startswith("OK:") and stored_sha in ok.stdout

    # Once more: still the same bundle, still one ledger row for the commit.
    run_kfm(env, "checkpoint", "--repo", repo, "--ref", commit)
    cands = [c for c in await _candidates(settings, start_c, want=2) if c["body"]["lakefs_commit"] == commit]
    assert [c["bundle_sha256"] for c in cands] == [stored_sha, stored_sha]
    dead = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_DEAD_LETTER), start_d, want=1, timeout=3)
    assert not [h for _, _, h in dead if commit.encode() in dict(h).get("kfm-dl-message", b"")], dead
    uri = f"s3://{settings.s3_bucket}/artifacts/{commit}.tar.zst"
    for _ in range(60):
        online = run_kfm(env, "verify", uri, check=False)
        if online.returncode == 0:
            break
        await asyncio.sleep(1)
    assert online.returncode == 0 and "included in the signed checkpoint" in online.stdout, online.stdout
    rows = [json.loads(line) for line in (await ledger_jsonl(settings)).splitlines()]
    assert [r["checksums"]["artifact_sha256"] for r in rows if r.get("lakefs_commit") == commit] == [stored_sha]


async def test_new_bundle_records_the_configured_level_and_verifies(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, tmp_path: Path
) -> None:
    """`kfm bundle build` at the default (3) and at KFM_BUNDLE_ZSTD_LEVEL=10: each manifest says
    its level, and each rebuild at its level is byte-identical."""
    repo = unique("level")
    await lakefs.create_repository(repo, f"local://{repo}")
    commit = await populate(lakefs, repo)
    outs = {}
    for level, extra in ((3, {}), (10, {"KFM_BUNDLE_ZSTD_LEVEL": "10"})):
        for i in (1, 2):
            out = tmp_path / f"{level}-{i}.tar.zst"
            run_kfm({**env, **extra}, "bundle", "build", "--repo", repo, "--ref", commit, "--out", str(out))
            manifest = _manifest_of(out)
            assert manifest["format"] == "kfm-rollback-bundle/v2" and manifest["zstd_level"] == level
            outs[level, i] = out.read_bytes()
    assert outs[3, 1] == outs[3, 2] and outs[10, 1] == outs[10, 2] and outs[3, 1] != outs[10, 1]


async def test_a_stored_bundle_no_rebuild_gives_is_refused(
    env: dict[str, str], settings: Settings, lakefs: LakeFS, running: str
) -> None:
    """What is stored under the commit's name is not a bundle any level gives: an integrity
    incident (dead letter), no candidate, the stored object left as it is."""
    repo = unique("junk")
    await lakefs.create_repository(repo, f"local://{repo}")
    commit = await populate(lakefs, repo)
    async with open_bucket(settings) as b:
        await b.put(f"artifacts/{commit}.tar.zst", b"not a bundle")
    start_c = await _offsets(settings, TOPIC_INDEX_CANDIDATES)
    start_d = await _offsets(settings, TOPIC_DEAD_LETTER)
    run_kfm(env, "checkpoint", "--repo", repo, "--ref", commit)
    dead = await read_since(settings.kafka_bootstrap, settings.topic(TOPIC_DEAD_LETTER), start_d, want=1, timeout=90)
    msgs = [dict(h) for _, _, h in dead if commit.encode() in dict(h).get("kfm-dl-message", b"")]
    assert msgs and msgs[0]["kfm-dl-reason"] == b"failed", dead
    assert b"does not read as a bundle" in msgs[0]["kfm-dl-message"]
    assert not [c for c in await _candidates(settings, start_c, want=1, timeout=3)
                if c["body"]["lakefs_commit"] == commit]
    async with open_bucket(settings) as b:
        assert (await b.get(f"artifacts/{commit}.tar.zst", 1 << 20))[0] == b"not a bundle"
