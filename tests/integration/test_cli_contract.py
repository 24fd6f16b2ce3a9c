"""The ``kfm`` contract (docs/cli.md) on the verbs that need the registry: real lakeFS, Kafka and S3.

The worker records two commits of one repository; then the verbs run as a
user runs them, piped and at a terminal: lists are tables with a header and
full ids, ``--json`` is one document (or JSON lines), ``--quiet`` prints
nothing, a commit is named by a unique 8-digit prefix everywhere, an
ambiguous prefix is refused with its candidates, global options work after
the verb, and each failure has its exit code and one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fixtures_repo import populate
from tests.integration.helpers import (
    ROOT,
    free_port,
    isolated_registry,
    ledger_jsonl,
    run_kfm,
    unique,
    worker_process,
)
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import Settings

pytestmark = pytest.mark.stack

PREFIX = unique("cli") + "."
BUCKET = unique("kfm-cli-test")


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, PREFIX, BUCKET)


@pytest.fixture(scope="module")
def recorded(env: dict[str, str], settings: Settings) -> Iterator[dict[str, str]]:
    """Two commits of a new repository, each with its ledger row under a signed checkpoint."""

    async def commits() -> tuple[str, str, str]:
        lakefs = LakeFS(settings)
        repo = unique("cli")
        try:
            await lakefs.create_repository(repo, f"local://{repo}")
            a = await populate(lakefs, repo, message="A")
            b = await populate(lakefs, repo, threshold="0.9", message="B")
        finally:
            lakefs.close()
        return repo, a, b

    async def rows(want: set[str]) -> None:
        for _ in range(180):
            got = {json.loads(x)["lakefs_commit"] for x in (await ledger_jsonl(settings)).splitlines()}
            if want <= got:
                return
            await asyncio.sleep(1)
        raise AssertionError(f"not recorded: {want - got}")

    repo, a, b = asyncio.run(commits())
    with worker_process(env, PREFIX):
        # One after the other: bundles of concurrent requests are recorded in the order they
        # finish, and the tests below rely on A's row coming before B's.
        for c in (a, b):
            run_kfm(env, "checkpoint", "--repo", f"lakefs://{repo}/{c}", "--branch", "main")
            asyncio.run(rows({c}))
        yield {"repo": repo, "A": a, "B": b}


def in_terminal(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``kfm`` with stdout on a pty (a terminal), stderr piped: exit code, stdout, stderr."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "worker._cli", *args], env={**os.environ, **env}, stdout=slave,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT)
    os.close(slave)
    out = bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    os.close(master)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=120), out.decode().replace("\r\n", "\n"), err


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_ledger_list_is_a_table_with_full_ids_at_a_terminal_and_piped(
    env: dict[str, str], recorded: dict[str, str]
) -> None:
    piped = run_kfm(env, "ledger", "list")
    code, out, _ = in_terminal(env, "ledger", "list")
    assert code == 0 and out == piped.stdout
    header, *rows, footer = piped.stdout.splitlines()
    assert header.split() == ["SEQ", "COMMIT", "REPOSITORY", "BRANCH", "CREATED"]
    assert [r.split()[1] for r in rows] == [recorded["A"], recorded["B"]]  # oldest first, full 64-hex ids
    assert footer.startswith("2 rows, root ")
    doc = json.loads(run_kfm(env, "ledger", "list", "--json").stdout)
    assert [r["lakefs_commit"] for r in doc["rows"]] == [recorded["A"], recorded["B"]] and doc["tree_size"] == 2
    quiet = run_kfm(env, "ledger", "list", "-q")
    assert (quiet.stdout, quiet.stderr) == ("", "")


def test_a_unique_prefix_names_the_commit_in_every_verb(env: dict[str, str], recorded: dict[str, str]) -> None:
    a, b = recorded["A"], recorded["B"]
    shown = json.loads(run_kfm(env, "ledger", "show", a[:8], "--json").stdout)
    assert shown["lakefs_commit"] == a
    text = run_kfm(env, "ledger", "show", a[:8].upper()).stdout
    assert f"lakefs_commit              {a}" in text or any(
        line.split() == ["lakefs_commit", a] for line in text.splitlines())
    proof = json.loads(run_kfm(env, "--json", "ledger", "prove", b[:10]).stdout)
    assert (proof["lakefs_commit"], proof["seq"]) == (b, 1)
    uri = f"s3://{BUCKET}/artifacts/{b}.tar.zst"
    ok = run_kfm(env, "verify", "--bundle", uri, "--commit", b[:8])
    assert ok.stdout.startswith("OK: bundle ") and f"commit {b}" in ok.stdout
    wrong = run_kfm(env, "verify", "--bundle", uri, "--commit", a[:8], check=False)
    assert wrong.returncode == 1 and wrong.stdout.strip() == f"FAIL: {uri} is the bundle of commit {b}, not {a}"


def test_a_dry_run_rollback_takes_a_prefix_and_a_lakefs_uri(env: dict[str, str], recorded: dict[str, str]) -> None:
    r = run_kfm(env, "rollback", "--commit", recorded["A"][:8], "--repo", f"lakefs://{recorded['repo']}/main",
                "--dry-run", "--wait", "--timeout", "120", "--json")
    result = json.loads(r.stdout[r.stdout.index("{\n"):])  # after the published line: the final result
    assert (result["commit"], result["status"]) == (recorded["A"], "dry-run")


def test_an_ambiguous_prefix_is_refused_with_its_candidates(env: dict[str, str], recorded: dict[str, str]) -> None:
    twins = ["cafe0123" + "1" * 56, "cafe0123" + "2" * 56]

    async def put(keys: list[str], delete: bool = False) -> None:
        async with open_bucket(load_env_settings(env)) as b:
            for k in keys:
                await (b.delete(k) if delete else b.put(k, b"not a row"))

    keys = [f"ledger/commits/{c}" for c in twins]
    asyncio.run(put(keys))
    try:
        r = run_kfm(env, "ledger", "show", "cafe0123", check=False)
        assert r.returncode == 2
        assert one_line(r) == (f"kfm: error: COMMIT cafe0123 is ambiguous: 2 ledger commits start with it "
                               f"({twins[0]}, {twins[1]}); give more characters")
        r = run_kfm(env, "rollback", "--commit", "cafe0123", "--branch", "main", check=False)
        assert r.returncode == 2 and "ambiguous" in one_line(r)
    finally:
        asyncio.run(put(keys, delete=True))
    none = run_kfm(env, "ledger", "show", "0123abcd", check=False)
    assert none.returncode == 1 and one_line(none).startswith("kfm: error: COMMIT 0123abcd: no ledger row")


def load_env_settings(env: dict[str, str]) -> Settings:
    from worker.config import load_settings  # noqa: PLC0415

    return load_settings({**os.environ, **env})


def test_global_options_after_the_verb(env: dict[str, str], recorded: dict[str, str]) -> None:
    without = {k: v for k, v in {**os.environ, **env}.items() if k != "KFM_S3_BUCKET"}
    args = [sys.executable, "-m", "worker._cli"]
    after = subprocess.run([*args, "ledger", "list", "--json", "--s3-bucket", BUCKET], env=without, cwd=ROOT,
                           capture_output=True, text=True, timeout=120, check=False)
    before = subprocess.run([*args, "--json", "--s3-bucket", BUCKET, "ledger", "list"], env=without, cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert after.returncode == before.returncode == 0, after.stderr + before.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)


def test_coverage_and_reconcile_show_full_ids(env: dict[str, str], recorded: dict[str, str]) -> None:
    repo = recorded["repo"]
    cov = run_kfm(env, "coverage", "--repo", f"lakefs://{repo}/main", "--grace-s", "100000")
    header, *rows, verdict = cov.stdout.splitlines()
    assert header.split() == ["COMMIT", "CREATED", "STATE", "DETAIL"]
    states = {r.split()[0]: r.split()[2] for r in rows}
    assert states[recorded["A"]] == states[recorded["B"]] == "recorded" and verdict.startswith("OK: ")
    doc = json.loads(run_kfm(env, "coverage", "--json", "--repo", repo, "--branch", "main", "--grace-s", "100000")
                     .stdout)
    assert doc["ok"] is True and doc["counts"]["recorded"] == 2
    # The bundle digest in full, as --json gives it: a table cell is something to copy, not a preview.
    digests = {c["commit"]: c["bundle_sha256"] for c in doc["commits"] if c["state"] == "recorded"}
    shown = {r.split()[0]: r.split()[r.split().index("sha256") + 1] for r in rows if "sha256" in r.split()}
    assert shown == digests and all(len(d) == 64 for d in digests.values()), cov.stdout
    lines = run_kfm(env, "reconcile", "--dry-run", "--json", "--repo", f"lakefs://{repo}/main").stdout.splitlines()
    summary = json.loads(lines[-1])
    assert summary["dry_run"] is True and summary["requested"] == len(lines) - 1
    assert all(len(json.loads(x)["commit"]) == 64 for x in lines[:-1])


def test_each_failure_has_its_exit_code_and_one_line(env: dict[str, str], recorded: dict[str, str]) -> None:
    nothing = f"127.0.0.1:{free_port()}"
    r = run_kfm(env, "ledger", "list", "--s3-bucket", "no-such-bucket-kfm", check=False)
    assert r.returncode == 4 and one_line(r).endswith("no such bucket; check KFM_S3_BUCKET (or --s3-bucket)")
    r = run_kfm(env, "checkpoint", "--repo", "lakefs://no-such-repo/main", check=False)
    assert r.returncode == 2
    assert one_line(r) == "kfm: error: lakefs://no-such-repo/main: no such repository or ref in lakeFS"
    r = run_kfm(env, "checkpoint", "--repo", f"lakefs://{recorded['repo']}/main", "--lakefs-endpoint",
                f"http://{nothing}", check=False)
    assert r.returncode == 4 and one_line(r).startswith("kfm: error: lakeFS")
    r = run_kfm(env, "ledger", "verify", "--s3-endpoint", f"http://{nothing}", check=False)
    assert r.returncode == 4 and "then retry" in one_line(r)
    r = run_kfm(env, "coverage", "--repo", "lakefs://no-such-repo/main", check=False)
    assert r.returncode == 2
    assert one_line(r) == "kfm: error: no-such-repo/main: no such repository or branch in lakeFS"
    q = run_kfm(env, "ledger", "verify", "--quiet")
    assert (q.returncode, q.stdout, q.stderr) == (0, "", "")


def test_waiting_past_the_timeout_exits_3(stack_env: dict[str, str], recorded: dict[str, str]) -> None:
    """Topics of their own and no worker: nothing ever answers the request."""
    idle = isolated_registry(stack_env, unique("cli-idle") + ".")
    r = run_kfm(idle, "rollback", "--commit", recorded["A"], "--repo", recorded["repo"], "--branch", "main",
                "--wait", "--timeout", "3", check=False)
    assert r.returncode == 3, r
    assert r.stderr.strip().splitlines()[-1].startswith("kfm: error: no final result for request ")


def test_restore_into_a_symlink_is_refused(env: dict[str, str], recorded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    r = run_kfm(env, "restore", "--bundle", f"s3://{BUCKET}/artifacts/{recorded['A']}.tar.zst", "--to",
                str(tmp_path / "link"), check=False)
    assert r.returncode == 2
    assert one_line(r) == (f"kfm: error: {tmp_path / 'link'}: is a symbolic link; give the path of a new or empty "
                           "directory (a link is not followed)")
    ok = run_kfm(env, "restore", "--bundle", f"s3://{BUCKET}/artifacts/{recorded['A']}.tar.zst", "--commit",
                 recorded["A"][:8], "--to", str(tmp_path / "out"))
    assert ok.stdout.startswith(f"OK: verified bundle of commit {recorded['A']}")
