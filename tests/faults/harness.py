"""The fault-test harness: a private stack, one shared registry and worker, convergence checks, figures.

Fault tests stop, kill and start real processes: the stack's servers (through
``deploy/local/stack`` with the private stack's ``KFM_STACK_*`` variables) and
the registry's own ``kfm worker`` and ``kfm hooks serve`` (through the e2e
helpers). After each fault a test calls :func:`converge`, which waits until
every commit made has its row and then checks the whole registry; its figures
go to ``<private stack>/fault-figures.jsonl``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.integration.helpers import ROOT, hooks_server, logs_dir, run_kfm, worker_process
from worker._internal.lakefs import LakeFS
from worker._internal.s3 import open_bucket
from worker.config import Settings
from worker.errors import NotFoundError
from worker.io.ledger_reader import LedgerReader

STACK_SCRIPT = ROOT / "deploy" / "local" / "stack"

# The private stack: its own state dir and ports, so the shared .stack/ (others' tests) is never touched.
PRIVATE_STACK = {
    "KFM_STACK_DIR": str(ROOT / ".stack-faults"),
    "KFM_STACK_KAFKA_PORT": "19292",
    "KFM_STACK_KAFKA_CONTROLLER_PORT": "19293",
    "KFM_STACK_LAKEFS_PORT": "18200",
    "KFM_STACK_S3_PORT": "19300",
}


def stack_supports(word: str) -> bool:
    """Whether the committed ``deploy/local/stack`` knows a variable or command (prerequisites landing
    over time; work in progress in the working tree does not count)."""
    r = subprocess.run(["git", "show", "HEAD:deploy/local/stack"], cwd=ROOT, capture_output=True, text=True,
                       check=False)
    text = r.stdout if r.returncode == 0 else STACK_SCRIPT.read_text(encoding="utf-8")
    return word in text


def private_stack_vars() -> dict[str, str]:
    out = {k: os.environ.get(f"KFM_FAULTS_{k[len('KFM_'):]}", v) for k, v in PRIVATE_STACK.items()}
    if stack_supports("KFM_STACK_S3_SERVER"):  # the persistent S3 server: data survives stop-s3/start-s3
        out["KFM_STACK_S3_SERVER"] = os.environ.get("KFM_FAULTS_STACK_S3_SERVER", "seaweedfs")
    return out


@dataclass
class FaultStack:
    """The private stack and its service controls."""

    vars: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)  # its .stack-faults/env, once up

    @property
    def dir(self) -> Path:
        return Path(self.vars["KFM_STACK_DIR"])

    @property
    def s3_server(self) -> str:
        return self.vars.get("KFM_STACK_S3_SERVER", "moto")

    def ctl(self, *command: str) -> float:
        """Run ``deploy/local/stack <command>`` on the private stack; return how long it took."""
        started = time.monotonic()
        r = subprocess.run([str(STACK_SCRIPT), *command], env={**os.environ, **self.vars}, cwd=ROOT,
                           capture_output=True, text=True, timeout=900, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"stack {' '.join(command)} exited {r.returncode}:\n{r.stderr[-4000:]}")
        return time.monotonic() - started

    def running(self) -> set[str]:
        r = subprocess.run([str(STACK_SCRIPT), "status"], env={**os.environ, **self.vars}, cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
        return {line.split(":")[0] for line in r.stdout.splitlines() if ": running" in line}

    def heal(self) -> None:
        """Start whatever a failed test left stopped (servers only; data is kept)."""
        up = self.running()
        for name in ("s3", "kafka", "lakefs"):
            if name not in up:
                self.ctl(f"start-{name}")

    def read_env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in (self.dir / "env").read_text(encoding="utf-8").splitlines():
            if line.startswith("export "):
                k, _, v = line[len("export "):].partition("=")
                out[k] = shlex.split(v)[0] if v else ""
        return out


class Managed:
    """One process run by an e2e helper context manager, started and stopped at will."""

    def __init__(self, factory: Callable[..., AbstractContextManager[Any]]) -> None:
        self._factory = factory
        self._cm: AbstractContextManager[Any] | None = None
        self.value: Any = None

    @property
    def running(self) -> bool:
        return self._cm is not None

    def start(self, **extra: str) -> Any:
        assert self._cm is None, "already running"
        cm = self._factory(**extra)
        self.value = cm.__enter__()
        self._cm = cm
        return self.value

    def stop(self) -> None:
        """SIGTERM (the helper's stop), reaped."""
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)

    def kill(self) -> int:
        """SIGKILL a worker (``value`` is its Popen); return its exit code."""
        proc: subprocess.Popen[bytes] = self.value
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        self.stop()
        return rc


@dataclass
class Registry:
    """One registry (topic prefix + bucket) on the private stack, its worker and its hooks server."""

    env: dict[str, str]
    settings: Settings
    hook_port: int
    stack: FaultStack
    worker: Managed
    hooks: Managed

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.hook_port}/lakefs/webhook"

    def worker_factory(self, name: str) -> Callable[..., AbstractContextManager[Any]]:
        return lambda **extra: worker_process(self.env, name, **extra)

    @staticmethod
    def hooks_factory(env: dict[str, str], port: int) -> Callable[..., AbstractContextManager[Any]]:
        return lambda **extra: hooks_server(env, KFM_HOOKS_PORT=str(port), **extra)


# --- lakeFS ----------------------------------------------------------------------


async def new_repo(reg: Registry, name: str) -> tuple[str, str]:
    """A repository with the registry's action installed and registered (``kfm hooks install``).

    Returns (repo, install commit) once the install commit (bundled like any other) has its row.
    """
    repo = f"{name}-{uuid.uuid4().hex[:8]}"
    lakefs = LakeFS(reg.settings)
    try:
        await lakefs.create_repository(repo, f"local://{repo}")
    finally:
        lakefs.close()
    out = run_kfm(reg.env, "hooks", "install", "--repo", repo, "--branch", "main", "--url", reg.hook_url, "--json")
    install = str(json.loads(out.stdout)["commit"])
    deadline = time.monotonic() + 120  # recorded before the test counts rows
    while await missing_rows(reg.settings, [install]):
        assert time.monotonic() < deadline, f"install commit {install} not recorded"
        await asyncio.sleep(0.5)
    return repo, install


async def commit_file(lakefs: LakeFS, repo: str, branch: str, i: int, size: int = 64) -> str:
    body = f"run: {i}\n".encode() + b"#" * max(size - 10, 0) + b"\n"
    await lakefs.upload(repo, branch, f"configs/run-{i % 3}.yaml", body)
    return await lakefs.commit(repo, branch, f"run {i}")


# --- convergence -----------------------------------------------------------------


async def missing_rows(settings: Settings, commits: list[str]) -> list[str]:
    async with open_bucket(settings) as b:
        reader = LedgerReader(b)
        return [c for c in commits if await reader.row_for(c) is None]


def ledger_rows(env: dict[str, str], settle: float = 30.0) -> tuple[int, str]:
    """(rows, output) of ``kfm ledger verify``; rows is -1 when it still fails after ``settle`` seconds.

    A verify that runs while the writer is between its commit point and the batch's checkpoint
    can fail for that moment; it is asked again until the ledger settles.
    """
    deadline = time.monotonic() + settle
    while True:
        rows, text = _verify_once(env)
        if rows >= 0 or time.monotonic() > deadline:
            return rows, text
        time.sleep(1.0)


def _verify_once(env: dict[str, str]) -> tuple[int, str]:
    if _verify_has_json(env):
        r = run_kfm(env, "ledger", "verify", "--json", check=False)
        if r.returncode == 0:
            return int(json.loads(r.stdout)["rows"]), r.stdout
        return -1, r.stdout + r.stderr
    r = run_kfm(env, "ledger", "verify", check=False)
    m = re.match(r"OK: (\d+) rows", r.stdout)
    return (int(m.group(1)) if r.returncode == 0 and m else -1), r.stdout + r.stderr


_JSON_VERIFY: dict[str, bool] = {}


def _verify_has_json(env: dict[str, str]) -> bool:
    if "v" not in _JSON_VERIFY:
        _JSON_VERIFY["v"] = "--json" in run_kfm(env, "ledger", "verify", "--help", check=False).stdout
    return _JSON_VERIFY["v"]


def coverage(env: dict[str, str], repo: str, branch: str = "main") -> tuple[int, str]:
    """``kfm coverage`` with no grace: any missing or failed commit makes it exit non-zero."""
    r = run_kfm(env, "coverage", "--repo", repo, "--branch", branch, "--grace-s", "0", check=False)
    return r.returncode, r.stdout + r.stderr


async def half_written(settings: Settings, commits: list[str]) -> list[str]:
    """Objects a crash could leave behind: a bundle without its attestation, a row without either.

    Evidence of a run that crashed before its attestation (another run id) is not
    referenced by anything and is counted separately by :func:`orphan_evidence`.
    """
    problems: list[str] = []
    async with open_bucket(settings) as b:
        artifacts = {k.split("/")[-1].removesuffix(".tar.zst") for k in await b.list_keys("artifacts/")}
        attestations = {k.split("/")[-1].removesuffix(".intoto.json") for k in await b.list_keys("attestations/")}
        problems += [f"bundle without attestation: {c}" for c in sorted(artifacts - attestations)]
        problems += [f"attestation without bundle: {c}" for c in sorted(attestations - artifacts)]
        reader = LedgerReader(b)
        for c in commits:
            row = await reader.row_for(c)
            if row is None:
                continue
            if c not in artifacts or c not in attestations:
                problems.append(f"row without bundle or attestation: {c}")
            if not await b.list_keys(f"evidence/{c}/"):
                problems.append(f"row without evidence: {c}")
    return problems


async def orphan_evidence(settings: Settings, commits: list[str]) -> int:
    """Evidence directories of runs whose bundle was never attested (a crash mid-run)."""
    count = 0
    async with open_bucket(settings) as b:
        for c in commits:
            runs = {k.split("/")[2] for k in await b.list_keys(f"evidence/{c}/")}
            try:
                env_doc = json.loads((await b.get(f"attestations/{c}.intoto.json", 1 << 20))[0])
            except NotFoundError:  # no attestation: every run is an orphan
                count += len(runs)
                continue
            stmt = json.loads(base64.b64decode(env_doc["payload"]))
            attested = stmt["predicate"]["runDetails"]["metadata"]["invocationId"]
            count += len(runs - {attested})
    return count


@dataclass
class Outcome:
    """What one fault test measured; one JSON line in fault-figures.jsonl."""

    fault: str
    input_class: str
    commits: list[str]
    tries: int = 1
    rows_before: int = 0
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


async def converge(reg: Registry, out: Outcome, repos: list[str], fault_ended: float, *,
                   within: float = 240.0, check_coverage: bool = True,
                   extra: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Wait until every commit has a row (and coverage is clean), then check the whole registry.

    Records the figures (plus ``extra()``'s) in ``out.figures`` and writes them; the caller
    asserts on them.
    """
    loop_deadline = time.monotonic() + within
    missing = list(out.commits)
    cov_rc, cov_out = -1, "kfm coverage not run"
    while time.monotonic() < loop_deadline:
        missing = await missing_rows(reg.settings, out.commits)
        if not missing:
            if not check_coverage:
                break
            results = [coverage(reg.env, r) for r in repos]
            cov_rc = max(rc for rc, _ in results)
            cov_out = "\n".join(o for _, o in results)
            if cov_rc == 0:
                break
        await asyncio.sleep(1.0)
    to_coverage = round(time.monotonic() - fault_ended, 1) if not missing else None
    await asyncio.sleep(5)  # let redeliveries and duplicates reach the writer
    rows_after, verify_out = ledger_rows(reg.env)
    replay = run_kfm(reg.env, "audit", "replay", check=False)
    problems = await half_written(reg.settings, out.commits)
    recorded = len(out.commits) - len(missing)
    added = rows_after - out.rows_before if rows_after >= 0 and out.rows_before >= 0 else None
    out.figures = {
        "fault": out.fault,
        "input_class": out.input_class,
        "tries": out.tries,
        "commits_made": len(out.commits),
        "rows_recorded": recorded,
        "rows_lost": len(missing),
        "rows_doubled": (added - recorded) if added is not None else None,
        "seconds_from_fault_end_to_full_coverage": to_coverage,
        "ledger_verify_ok": rows_after >= 0,
        "audit_replay": replay.stdout.split(":")[0] if replay.stdout else f"rc={replay.returncode}",
        "coverage_exit": cov_rc if check_coverage else None,
        "half_written": problems,
        "orphan_evidence_runs": await orphan_evidence(reg.settings, out.commits),
        "reconciler_interval_s": reg.settings.reconcile_interval_s,
        "reconciler_pending_timeout_s": reg.settings.reconcile_pending_timeout_s,
        "s3_server": reg.stack.s3_server,
        "kafka": os.environ.get("KAFKA_VERSION", "3.9.1"),
        "notes": out.notes,
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if extra is not None:
        out.figures.update(await extra())
    out.figures["_detail"] = {"missing": missing, "verify": verify_out[-2000:],
                              "replay": replay.stdout[-2000:], "coverage": cov_out[-2000:]}
    record(reg.stack, out.figures)
    return out.figures


RECORDED: list[dict[str, Any]] = []  # this session's figures, printed at the end (conftest)


def record(stack: FaultStack, figures: dict[str, Any]) -> None:
    """Append one JSON line to <private stack>/fault-figures.jsonl (runs accumulate: tries add up)."""
    public = {k: v for k, v in figures.items() if not k.startswith("_")}
    line = json.dumps(public, sort_keys=True)
    with (stack.dir / "fault-figures.jsonl").open("a", encoding="utf-8") as f:
        f.write(line + "\n")
    RECORDED.append(public)
    print(f"\nFAULT FIGURES {line}")


def assert_converged(fig: dict[str, Any], *, expect_coverage: bool = True) -> None:
    """The convergence promise: every commit one row, verify and replay clean, nothing half-written."""
    detail = fig.get("_detail", {})
    assert fig["rows_lost"] == 0, f"commits without a row: {detail.get('missing')}"
    assert fig["rows_doubled"] == 0, f"rows added {fig['rows_doubled']} more than commits recorded"
    assert fig["ledger_verify_ok"], detail.get("verify")
    assert fig["audit_replay"] == "MATCH", detail.get("replay")
    assert not fig["half_written"], fig["half_written"]
    if expect_coverage and fig["coverage_exit"] is not None:
        assert fig["coverage_exit"] == 0, detail.get("coverage")


def retried(reg: Registry, commits: list[str]) -> list[str]:
    """Commits whose bundle run hit the fault (a ``bundle.retry`` in the registry worker's log)."""
    log = logs_dir(reg.env) / f"worker-{reg.env['KFM_TOPIC_PREFIX']}worker.log"
    hit = set()
    for line in iter_lines(log):
        if line.startswith("{") and '"bundle.retry"' in line:
            hit.add(json.loads(line).get("commit_id"))
    return [c for c in commits if c in hit]


def iter_lines(path: Path) -> Iterator[str]:
    """Lines of a log file (the worker's JSON lines) that exist now."""
    if path.exists():
        yield from path.read_text(encoding="utf-8", errors="replace").splitlines()


def markdown_table(lines: list[str]) -> str:
    """The table of docs/reliability.md from fault-figures.jsonl lines (runs add up per fault)."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in lines:
        if line.strip():
            fig = json.loads(line)
            by.setdefault((fig["fault"], fig["input_class"]), []).append(fig)
    rows = ["| fault | input | tries | commits made | rows recorded | rows lost | rows doubled "
            "| end of fault to full coverage (median / max) |", "|---|---|---|---|---|---|---|---|"]
    for (fault, input_class), figs in by.items():
        times = sorted(f["seconds_from_fault_end_to_full_coverage"] for f in figs
                       if f["seconds_from_fault_end_to_full_coverage"] is not None)
        timing = f"{times[len(times) // 2]:.1f} s / {times[-1]:.1f} s" if times else "never"
        rows.append(f"| {fault} | {input_class} | {sum(f['tries'] for f in figs)} "
                    f"| {sum(f['commits_made'] for f in figs)} | {sum(f['rows_recorded'] for f in figs)} "
                    f"| {sum(f['rows_lost'] for f in figs)} | {sum(f['rows_doubled'] or 0 for f in figs)} | {timing} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m tests.faults.harness [.stack-faults/fault-figures.jsonl]
    import sys

    src = Path(sys.argv[1] if len(sys.argv) > 1 else PRIVATE_STACK["KFM_STACK_DIR"])
    src = src / "fault-figures.jsonl" if src.is_dir() else src
    print(markdown_table(src.read_text(encoding="utf-8").splitlines()))
