"""`kfm verify` and `kfm restore` as processes, against a registry the worker filled (real lakeFS, Kafka, S3).

Commits A and B are bundled by the worker and recorded. Verifying checks the
bundle, that it is the bundle of the commit it is used for, and (unless
``--offline``) that the ledger row of that commit records its digest and is
included in the latest signed checkpoint. A swapped bundle, a bundle the
registry never recorded, a bundle over a configured limit and a bundle that
would decompress to gigabytes are each refused with one line, and the
rollback agent refuses the over-limit bundle too.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time
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
    run_kfm,
    unique,
    worker_process,
)
from tests.unit.bundle.helpers import COMMIT, build_bundle_bytes, raw_tar, zstd_frame_with_zero_tail
from worker._internal.kafka import Producer
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.bundle.attest import build_statement, sign_statement
from worker.config import Settings, load_settings
from worker.constants import TOPIC_ROLLBACK_REQUESTS, TOPIC_ROLLBACK_RESULTS
from worker.keys import generate_keypair, load_private_key
from worker.rollback.request import RollbackRequest, request_key

pytestmark = pytest.mark.stack

PREFIX = unique("vf") + "."
BUCKET = unique("kfm-verify-test")
LIMIT = {"KFM_LIMIT_MEMBER_MAX_BYTES": "100000"}  # the commits' model is 200,000 bytes


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX, BUCKET)


@pytest.fixture(scope="module")
def running(env: dict[str, str]) -> Iterator[str]:
    with hooks_server(env) as url, worker_process(env, PREFIX):
        yield url + "/lakefs/webhook"


async def _recorded(settings: Settings, commits: set[str]) -> dict[str, dict]:
    """The rows of ``commits`` once a signed checkpoint covers them all (within 3 minutes)."""
    deadline = asyncio.get_running_loop().time() + 180
    while True:
        rows = {json.loads(x)["lakefs_commit"]: json.loads(x) for x in (await ledger_jsonl(settings)).splitlines()}
        if commits <= set(rows):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not recorded: {commits - set(rows)}")
        await asyncio.sleep(1)


@pytest.fixture(scope="module")
def history(settings: Settings, running: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        lakefs = LakeFS(settings)
        repo = unique("verify")
        try:
            await lakefs.create_repository(repo, f"local://{repo}")
            await install_action(lakefs, repo, "main", running)
            a = await populate(lakefs, repo, message="A")
            b = await populate(lakefs, repo, threshold="0.9", message="B")
            await _recorded(settings, {a, b})
        finally:
            lakefs.close()
        return {"repo": repo, "A": a, "B": b}

    return asyncio.run(go())


def _uri(commit: str) -> str:
    return f"s3://{BUCKET}/artifacts/{commit}.tar.zst"


def _one_line(r: object) -> str:
    """The process's verdict: exactly one line on stdout, no traceback anywhere."""
    out, err = r.stdout, r.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in out + err, err
    assert out.count("\n") == 1, out
    return str(out.strip())


async def _get(settings: Settings, key: str) -> bytes:
    async with open_bucket(settings) as b:
        return (await b.get(key, 1 << 30))[0]


async def _put(settings: Settings, key: str, data: bytes) -> None:
    async with open_bucket(settings) as b:
        await b.put(key, data)


def test_verify_checks_the_bundle_and_its_registration(env: dict[str, str], history: dict[str, str]) -> None:
    a = history["A"]
    online = _one_line(run_kfm(env, "verify", _uri(a)))
    assert online.startswith(f"OK: bundle {_uri(a)} sha256 ") and f"commit {a}" in online
    assert "included in the signed checkpoint of size" in online and "ledger row" in online

    offline = _one_line(run_kfm(env, "verify", _uri(a), "--offline"))
    assert offline.startswith("OK:") and offline.endswith("; ledger not checked (--offline)")

    # --commit agrees with the name: fine; names another commit: refused before anything is read.
    assert run_kfm(env, "verify", _uri(a), "--commit", a).returncode == 0
    r = run_kfm(env, "verify", _uri(a), "--commit", history["B"], check=False)
    assert r.returncode == 1
    assert _one_line(r) == f"FAIL: {_uri(a)} is the bundle of commit {a}, not {history['B']}"


def test_restore_verifies_as_verify_does_then_extracts(
    env: dict[str, str], history: dict[str, str], tmp_path: Path
) -> None:
    a = history["A"]
    out = tmp_path / "online"
    line = _one_line(run_kfm(env, "restore", "--bundle", _uri(a), "--to", str(out)))
    assert line.startswith(f"OK: verified bundle of commit {a}") and "included in the signed checkpoint" in line
    assert (out / "lakefs/configs/pipeline.yaml").read_bytes() == b"threshold: 0.5\n"
    line = _one_line(run_kfm(env, "restore", "--bundle", _uri(a), "--to", str(tmp_path / "off"), "--offline"))
    assert line.endswith("ledger not checked (--offline)")
    assert (tmp_path / "off/lakefs/models/focus/3.1.0.bin").stat().st_size == 200_000


async def test_a_bundle_of_another_commit_under_its_name_is_refused(
    env: dict[str, str], settings: Settings, history: dict[str, str], tmp_path: Path
) -> None:
    """B's signed and recorded bundle stored as A's: every mode refuses it, and nothing is extracted."""
    a, b = history["A"], history["B"]
    a_bundle, a_att = f"artifacts/{a}.tar.zst", f"attestations/{a}.intoto.json"
    originals = {k: await _get(settings, k) for k in (a_bundle, a_att)}
    b_bundle = await _get(settings, f"artifacts/{b}.tar.zst")
    b_att = await _get(settings, f"attestations/{b}.intoto.json")
    refusal = f"FAIL: attestation: is for commit {b}, not {a}"
    await _put(settings, a_bundle, b_bundle)
    await _put(settings, a_att, b_att)
    try:
        for extra in ([], ["--offline"]):
            r = await asyncio.to_thread(run_kfm, env, "verify", _uri(a), *extra, check=False)
            assert r.returncode == 1 and _one_line(r) == refusal
            out = tmp_path / f"out{len(extra)}"
            r = await asyncio.to_thread(run_kfm, env, "restore", "--bundle", _uri(a), "--to", str(out), *extra,
                                        check=False)
            assert r.returncode == 1 and _one_line(r) == refusal
            assert not out.exists()
    finally:
        for k, v in originals.items():
            await _put(settings, k, v)

    # The same swap in local files: the file name binds it; so does --commit under any name.
    (tmp_path / f"{a}.tar.zst").write_bytes(b_bundle)
    (tmp_path / f"{a}.intoto.json").write_bytes(b_att)
    r = await asyncio.to_thread(run_kfm, env, "verify", str(tmp_path / f"{a}.tar.zst"), "--offline", check=False)
    assert r.returncode == 1 and _one_line(r) == refusal
    (tmp_path / "bundle.tar.zst").write_bytes(b_bundle)
    (tmp_path / "bundle.intoto.json").write_bytes(b_att)
    r = await asyncio.to_thread(run_kfm, env, "verify", str(tmp_path / "bundle.tar.zst"), "--commit", a, check=False)
    assert r.returncode == 1 and _one_line(r) == refusal
    ok = await asyncio.to_thread(run_kfm, env, "verify", str(tmp_path / "bundle.tar.zst"))
    assert f"commit {b}" in _one_line(ok)  # unbound, it is B's bundle, and says so


async def test_a_signed_bundle_the_registry_did_not_record_is_refused_online_only(
    env: dict[str, str], settings: Settings, history: dict[str, str], tmp_path: Path
) -> None:
    """Signed by the registry's own key, but not the bundle the ledger records for A."""
    a = history["A"]
    recorded = await _get(settings, f"artifacts/{a}.tar.zst")
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(recorded)).read()
    other = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(tar)  # same content, other bytes
    assert other != recorded
    statement = build_statement(
        bundle_sha256=hashlib.sha256(other).hexdigest(), lakefs_repo=history["repo"], lakefs_branch="main",
        lakefs_commit=a, builder_id="https://kfm.local/test", invocation_id=str(uuid.uuid4()),
        started_on=datetime.now(UTC), finished_on=datetime.now(UTC),
    )
    (tmp_path / f"{a}.tar.zst").write_bytes(other)
    (tmp_path / f"{a}.intoto.json").write_bytes(sign_statement(statement, load_private_key(Path(settings.signing_key))))
    path = str(tmp_path / f"{a}.tar.zst")
    r = await asyncio.to_thread(run_kfm, env, "verify", path, check=False)
    assert r.returncode == 1
    assert _one_line(r) == (f"FAIL: ledger: bundle sha256 {hashlib.sha256(other).hexdigest()} is not the one "
                            f"recorded for commit {a[:12]} ({hashlib.sha256(recorded).hexdigest()})")
    assert (await asyncio.to_thread(run_kfm, env, "verify", path, "--offline")).returncode == 0


async def test_a_configured_limit_is_applied_by_verify_restore_and_the_agent(
    env: dict[str, str], settings: Settings, history: dict[str, str], tmp_path: Path
) -> None:
    repo, a = history["repo"], history["A"]
    limited = {**env, **LIMIT}
    refusal = "FAIL: member lakefs/models/focus/3.1.0.bin: size 200000 exceeds max_member_bytes 100000"
    for extra in ([], ["--offline"]):
        r = await asyncio.to_thread(run_kfm, limited, "verify", _uri(a), *extra, check=False)
        assert r.returncode == 1 and _one_line(r) == refusal
        out = tmp_path / f"out{len(extra)}"
        r = await asyncio.to_thread(run_kfm, limited, "restore", "--bundle", _uri(a), "--to", str(out), *extra,
                                    check=False)
        assert r.returncode == 1 and _one_line(r) == refusal and not out.exists()

    # The rollback agent of a worker with the same limit: a worker of its own (own topics, same registry).
    prefix = unique("vflim") + "."
    agent_env = {**limited, "KFM_TOPIC_PREFIX": prefix}
    await asyncio.to_thread(run_kfm, agent_env, "topics", "ensure")
    s2 = load_settings({**os.environ, **agent_env})
    req = RollbackRequest(request_id=str(uuid.uuid4()), lakefs_repo=repo, commit=a, target_branch="main",
                          strategy="revert", dry_run=True, requested_by="test", reason="limit",
                          requested_at=datetime.now(UTC))
    start = await end_offsets(s2.kafka_bootstrap, s2.topic(TOPIC_ROLLBACK_RESULTS))
    with worker_process(agent_env, prefix):
        async with Producer(s2.kafka_bootstrap) as p:
            await p.send(s2.topic(TOPIC_ROLLBACK_REQUESTS), req.to_bytes(), key=request_key(repo, "main"))
        finals: list[dict] = []
        deadline = time.monotonic() + 180
        while not finals and time.monotonic() < deadline:
            recs = await read_since(s2.kafka_bootstrap, s2.topic(TOPIC_ROLLBACK_RESULTS), start, want=0, timeout=3)
            finals = [r for r in (json.loads(v) for _, v, _ in recs) if r["final"]]
    assert [(f["status"], f["reason"]) for f in finals] == [("rejected", refusal.removeprefix("FAIL: "))]


def test_a_bundle_that_decompresses_to_gigabytes_stops_early(env: dict[str, str], tmp_path: Path) -> None:
    """2 MiB, validly signed, 64 GiB of zeros after the end-of-archive marker: one line, in seconds."""
    good = build_bundle_bytes(tmp_path, {"configs/a.yaml": b"a: 1\n"})
    bundle = zstd_frame_with_zero_tail(raw_tar(good), 64 * 1024**3)
    keys = generate_keypair(tmp_path, "signer")
    statement = build_statement(
        bundle_sha256=hashlib.sha256(bundle).hexdigest(), lakefs_repo="kfm-main", lakefs_branch="prod",
        lakefs_commit=COMMIT,
        builder_id="https://kfm.local/test", invocation_id=str(uuid.uuid4()),
        started_on=datetime.now(UTC), finished_on=datetime.now(UTC),
    )
    (tmp_path / "huge.tar.zst").write_bytes(bundle)
    (tmp_path / "huge.intoto.json").write_bytes(sign_statement(statement, load_private_key(keys.private_key_path)))
    started = time.monotonic()
    r = run_kfm(env, "verify", str(tmp_path / "huge.tar.zst"), "--offline", "--key", str(keys.public_key_path),
                check=False)
    elapsed = time.monotonic() - started
    assert r.returncode == 1
    assert _one_line(r) == "FAIL: tar: zero padding after the end-of-archive marker runs past its 10240-byte record"
    assert elapsed < 30, elapsed  # reading every zero took 0.67 s per GiB here: about 43 s
