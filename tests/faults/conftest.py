"""Fault tests: real processes stopped, killed and started on a PRIVATE stack.

``make test-faults`` (or ``pytest tests/faults``) brings up its own stack with
``deploy/local/stack`` in ``.stack-faults/`` on its own ports (Kafka 19292/19293,
lakeFS 18200, S3 19300; override with ``KFM_FAULTS_STACK_*``) and takes it
down at the end (``KFM_FAULTS_KEEP_STACK=1`` keeps it for a look). The shared
``.stack/`` is never stopped or started. These tests are not part of a plain
``pytest tests`` run: they are deselected unless ``tests/faults`` (or a file in
it) is named on the command line.

One registry (topic prefix + bucket), one ``kfm worker`` and one ``kfm hooks
serve`` are shared by the whole session; a test that kills or stops one of
them starts it again before it ends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import RECORDED, FaultStack, Managed, Registry, private_stack_vars
from tests.integration.helpers import free_port, isolated_registry, unique, worker_process
from worker._internal.lakefs import LakeFS
from worker.config import load_settings

FAULTS_DIR = Path(__file__).resolve().parent

# Short enough that the fault module stays within minutes; the figures record it.
RECONCILE_INTERVAL_S = "5"
RECONCILE_PENDING_TIMEOUT_S = "30"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: stops and starts servers of a private stack (make test-faults)")


def _asked_for(config: pytest.Config) -> bool:
    for arg in config.args:
        p = Path(arg.split("::")[0]).resolve()
        if p == FAULTS_DIR or FAULTS_DIR in p.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked_for(config):
        return
    drop = [it for it in items if FAULTS_DIR in Path(str(it.path)).resolve().parents]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [it for it in items if it not in drop]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RECORDED:
        return
    terminalreporter.section("fault figures (also in .stack-faults/fault-figures.jsonl)")
    cols = ("fault", "tries", "commits_made", "rows_recorded", "rows_lost", "rows_doubled",
            "seconds_from_fault_end_to_full_coverage")
    terminalreporter.write_line(" | ".join(cols))
    for fig in RECORDED:
        terminalreporter.write_line(" | ".join(str(fig.get(c)) for c in cols))


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    fs = FaultStack(private_stack_vars())
    fs.ctl("up")
    fs.env = fs.read_env()
    try:
        yield fs
    finally:
        if not os.environ.get("KFM_FAULTS_KEEP_STACK"):
            fs.ctl("down")


@pytest.fixture(scope="session")
def registry(fault_stack: FaultStack) -> Iterator[Registry]:
    """One registry on the private stack with its worker and hooks server running.

    Each test's repository is watched the documented way: ``kfm hooks install`` registers the
    branch, and the reconciler covers it from the install commit on (docs/coverage.md).
    """
    prefix = unique("faults") + "."
    env = isolated_registry(fault_stack.env, prefix, unique("kfm-faults"))
    env.update({
        "KFM_RECONCILE_INTERVAL_S": RECONCILE_INTERVAL_S,
        # A commit seen but never recorded (its bundle run died with Kafka) is requested again after this.
        "KFM_RECONCILE_PENDING_TIMEOUT_S": RECONCILE_PENDING_TIMEOUT_S,
    })
    settings = load_settings({**os.environ, **env})
    port = free_port()
    worker = Managed(lambda **extra: worker_process(env, prefix + "worker", **extra))
    reg = Registry(env, settings, port, fault_stack, worker, Managed(Registry.hooks_factory(env, port)))
    reg.hooks.start()
    reg.worker.start()
    try:
        yield reg
    finally:
        reg.worker.stop()
        reg.hooks.stop()


@pytest.fixture(autouse=True)
def _heal(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each fault test: servers and processes it stopped are running again."""
    yield
    if "registry" in request.fixturenames:
        reg: Registry = request.getfixturevalue("registry")
        reg.stack.heal()
        if not reg.hooks.running:
            reg.hooks.start()
        if not reg.worker.running:
            reg.worker.start()


@pytest.fixture
async def lakefs(registry: Registry) -> AsyncIterator[LakeFS]:
    client = LakeFS(registry.settings)
    yield client
    client.close()
