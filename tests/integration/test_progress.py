"""Progress of long work, as a person and as a script see it.

In a terminal (a pseudo-terminal holding stdout and stderr) the long verbs
draw a progress bar per step on stderr (bytes, rate and time left, or a
count), and the last state of each bar ends with a newline before the
result. Piped, and in a terminal with ``--json`` or ``--quiet``, they print
exactly what they printed before: the result and nothing else.

The first test needs no servers (an offline check of the golden bundle);
the others run against the stack: `kfm bundle build` of a commit with a
16 MiB model, `kfm verify` and `kfm restore` of it from the bucket
(download, then the one verifying pass), `kfm coverage` and `kfm reconcile`
walking the branch, and `kfm audit replay` reading the writer topic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.fixtures_repo import populate
from tests.integration.helpers import isolated_registry, unique
from tests.integration.terminal import TerminalRun, run_in_terminal, run_piped
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.bundle.attest import build_statement, sign_statement
from worker.config import load_settings
from worker.keys import load_private_key

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "bundle"
VERIFY_GOLDEN = ("--offline", "--key", str(GOLDEN / "golden.pub"), "--attestation", str(GOLDEN / "golden.dsse.json"))
MODEL = 16 * 1024 * 1024
_BAR = re.compile(r"^(?P<label>[\w+ ]+): +100%\|[█ ]+\| (?P<done>\S+)/(?P<total>\S+) \[[\d:]+<[\d:]+, +\S+/s\]$")


def _finished_bars(run: TerminalRun) -> dict[str, tuple[str, str]]:
    """Each bar's label -> (done, total) as its last state stands on screen, complete at 100%."""
    return {m["label"]: (m["done"], m["total"]) for line in run.lines() if (m := _BAR.match(line))}


def _result_lines(run: TerminalRun) -> list[str]:
    """What is left once the bars are taken out: the verb's own output."""
    return [x for x in run.lines() if x and "%|" not in x and not re.match(r"^[\w+ ]+: [\d.]+\w* \[", x)]


def test_offline_verify_and_restore_draw_a_bar_only_in_a_terminal(tmp_path: Path) -> None:
    bundle = str(GOLDEN / "golden.tar.zst")
    run = run_in_terminal({}, "verify", "--bundle", bundle, *VERIFY_GOLDEN)
    assert run.returncode == 0, run.screen
    size = os.path.getsize(bundle)
    assert _finished_bars(run) == {"verify": (f"{size / 1024:.2f}k", f"{size / 1024:.2f}k")}, run.screen
    lines = run.lines()
    # The bar's last state is a line of its own, ended before the result is printed.
    assert lines[-3].startswith("verify: 100%") and lines[-2].startswith("OK: bundle ") and lines[-1] == ""
    assert "Traceback" not in run.screen

    piped = run_piped({}, "verify", "--bundle", bundle, *VERIFY_GOLDEN)
    assert piped.returncode == 0 and piped.stderr == ""
    assert piped.stdout.splitlines() == [lines[-2]]  # the same result line, nothing else

    for quiet in (("--json",), ("--quiet",)):
        run = run_in_terminal({}, "verify", "--bundle", bundle, *VERIFY_GOLDEN, *quiet)
        assert run.returncode == 0 and "%|" not in run.screen and "B/s" not in run.screen, run.screen
    assert run.screen == ""  # --quiet: only the exit code

    run = run_in_terminal({}, "restore", "--bundle", bundle, "--to", str(tmp_path / "out"), *VERIFY_GOLDEN)
    assert run.returncode == 0, run.screen
    assert set(_finished_bars(run)) == {"verify+extract"} and _result_lines(run)[-1].startswith("OK: verified bundle")
    piped = run_piped({}, "restore", "--bundle", bundle, "--to", str(tmp_path / "out2"), *VERIFY_GOLDEN)
    assert piped.stderr == "" and len(piped.stdout.splitlines()) == 1


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, unique("pg") + ".", unique("kfm-progress"))


@pytest.fixture(scope="module")
def commit(env: dict[str, str]) -> dict[str, str]:
    async def go() -> dict[str, str]:
        lakefs = LakeFS(load_settings({**os.environ, **env}))
        repo = unique("progress")
        try:
            await lakefs.create_repository(repo, f"local://{repo}")
            c = await populate(lakefs, repo, model_bytes=os.urandom(MODEL))
        finally:
            lakefs.close()
        return {"repo": repo, "commit": c}

    return asyncio.run(go())


@pytest.mark.stack
def test_bundle_build_then_download_verify_and_restore(
    env: dict[str, str], commit: dict[str, str], tmp_path: Path
) -> None:
    repo, c = commit["repo"], commit["commit"]
    out = tmp_path / f"{c}.tar.zst"
    run = run_in_terminal(env, "bundle", "build", "--repo", f"lakefs://{repo}/{c}", "--out", str(out))
    assert run.returncode == 0, run.screen
    bars = _finished_bars(run)
    # Two steps, each a bar: the objects downloaded from lakeFS, then the members compressed.
    assert set(bars) == {"download", "compress"}, run.screen
    assert bars["compress"][0] == bars["compress"][1] and bars["compress"][1].endswith("M")
    assert _result_lines(run)[-1].startswith(f"built {out}: commit {c}")
    piped = run_piped(env, "bundle", "build", "--repo", repo, "--ref", c, "--out", str(tmp_path / "again.tar.zst"))
    assert piped.returncode == 0 and piped.stderr == "" and len(piped.stdout.splitlines()) == 1
    assert (tmp_path / "again.tar.zst").read_bytes() == out.read_bytes()  # a bar never changes the bytes

    # The bundle and an attestation signed with the stack's key, in the bucket, as the worker stores them.
    data = out.read_bytes()
    statement = build_statement(
        bundle_sha256=hashlib.sha256(data).hexdigest(),
        lakefs_repo=repo,
        lakefs_branch="main",
        lakefs_commit=c,
        builder_id="https://kfm.local/test",
        invocation_id=str(uuid.uuid4()),
        started_on=datetime.now(UTC),
        finished_on=datetime.now(UTC),
    )
    settings = load_settings({**os.environ, **env})
    envelope = sign_statement(statement, load_private_key(Path(settings.signing_key)))

    async def put() -> None:
        async with open_bucket(settings) as b:
            await b.upload_file(f"artifacts/{c}.tar.zst", out)
            await b.put(f"attestations/{c}.intoto.json", envelope)

    asyncio.run(put())
    uri = f"s3://{settings.s3_bucket}/artifacts/{c}.tar.zst"
    run = run_in_terminal(env, "verify", "--bundle", uri, "--offline")
    assert run.returncode == 0, run.screen
    bars = _finished_bars(run)
    assert set(bars) == {"download", "verify"} and bars["download"] == bars["verify"], run.screen
    assert _result_lines(run)[-1].startswith(f"OK: bundle {uri}")
    piped = run_piped(env, "verify", "--bundle", uri, "--offline")
    assert piped.stderr == "" and len(piped.stdout.splitlines()) == 1

    run = run_in_terminal(env, "restore", "--bundle", uri, "--to", str(tmp_path / "restored"), "--offline")
    assert run.returncode == 0, run.screen
    assert set(_finished_bars(run)) == {"download", "verify+extract"}, run.screen
    assert (tmp_path / "restored/lakefs/models/focus/3.1.0.bin").stat().st_size == MODEL


@pytest.mark.stack
def test_coverage_reconcile_and_replay_count_in_a_terminal(env: dict[str, str], commit: dict[str, str]) -> None:
    repo = commit["repo"]
    run = run_in_terminal(env, "coverage", "--repo", repo, "--branch", "main", "--grace-s", "0")
    assert run.returncode == 1, run.screen  # nothing bundled it: missing, and the check fails
    counted = [x for x in run.lines() if x.startswith("commits walked: ")]
    # The repository's first commit and the data commit.
    assert counted and counted[-1].startswith("commits walked: 2 commits ["), run.screen
    piped = run_piped(env, "coverage", "--repo", repo, "--branch", "main", "--grace-s", "0")
    assert piped.returncode == 1 and piped.stderr == "" and "commits walked" not in piped.stdout
    run = run_in_terminal(env, "coverage", "--repo", repo, "--branch", "main", "--grace-s", "0", "--json")
    assert "commits walked" not in run.screen and json.loads(run.screen)["repository"] == repo

    run = run_in_terminal(env, "reconcile", "--dry-run")
    assert run.returncode == 0 and "commits walked: " in run.screen and "Traceback" not in run.screen, run.screen

    run = run_in_terminal(env, "audit", "replay")
    assert run.returncode == 0, run.screen
    assert any(x.startswith("replay: ") for x in run.lines()), run.screen
    assert _result_lines(run)[-1].startswith("MATCH: 0 candidates replayed")
    piped = run_piped(env, "audit", "replay")
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout.startswith("MATCH")
