"""Kafka over TLS and SASL: the stack's secure listeners (deploy/local/stack).

The webhook -> bundle -> ledger row path runs with the receiver, the worker and
the CLI connected only to the SASL_SSL listener (SCRAM-SHA-512 and PLAIN); the
SSL listener requires a client certificate. A wrong password and an untrusted
certificate stop the receiver, the worker and ``kfm health`` with one line, well
within the bound documented in docs/configuration.md (twice KFM_KAFKA_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hooks.install import install_action
from tests.integration.fixtures_repo import populate
from tests.integration.helpers import (
    KFM,
    ROOT,
    free_port,
    hooks_server,
    isolated_registry,
    run_kfm,
    unique,
    worker_process,
)
from worker._internal.lakefs import LakeFS
from worker.cli_output import Exit

pytestmark = pytest.mark.stack

PREFIX = unique("sec") + "."
# The bound a refused start must stay within: KFM_KAFKA_TIMEOUT_S is 5 here, a refused
# connection is diagnosed by one more connection attempt, and the process needs a few
# seconds to import on a loaded machine.
TIMEOUT_S = 5
START_BOUND_S = 2 * TIMEOUT_S + 20


def secure(stack_env: dict[str, str]) -> dict[str, str]:
    """The KFM_KAFKA_* settings for the SASL_SSL listener (SCRAM-SHA-512), from the stack's env."""
    if "KFM_STACK_KAFKA_SECURE_BOOTSTRAP" not in stack_env:
        pytest.fail("the stack has no secure listener: bring it up without KFM_STACK_KAFKA_SECURE=0")
    return {
        "KFM_KAFKA_BOOTSTRAP": stack_env["KFM_STACK_KAFKA_SECURE_BOOTSTRAP"],
        "KFM_KAFKA_SECURITY_PROTOCOL": stack_env["KFM_STACK_KAFKA_SECURE_PROTOCOL"],
        "KFM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KFM_KAFKA_SASL_USERNAME": stack_env["KFM_STACK_KAFKA_SECURE_USERNAME"],
        "KFM_KAFKA_SASL_PASSWORD_FILE": stack_env["KFM_STACK_KAFKA_SECURE_PASSWORD_FILE"],
        "KFM_KAFKA_SSL_CAFILE": stack_env["KFM_STACK_KAFKA_SECURE_CAFILE"],
        "KFM_KAFKA_TIMEOUT_S": str(TIMEOUT_S),
    }


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    """A registry of its own (topics, bucket) reached only through the SASL_SSL listener."""
    return isolated_registry({**stack_env, **secure(stack_env)}, PREFIX, bucket=unique("sec"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not sign the broker's certificate."""
    d = tmp_path_factory.mktemp("other-ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                    "-out", "ca.crt", "-days", "2", "-subj", "/CN=someone else"], cwd=d, check=True,
                   capture_output=True)
    return d / "ca.crt"


@pytest.fixture(scope="module")
def running(env: dict[str, str]) -> Iterator[str]:
    # The receiver logs in with PLAIN, the worker with SCRAM-SHA-512: both mechanisms carry the path.
    with hooks_server(env, KFM_KAFKA_SASL_MECHANISM="PLAIN") as url, worker_process(env, PREFIX):
        yield url + "/lakefs/webhook"


async def test_a_commit_becomes_a_row_over_sasl_ssl(env: dict[str, str], lakefs: LakeFS, running: str) -> None:
    repo = unique("secure")
    await lakefs.create_repository(repo, f"local://{repo}")
    await install_action(lakefs, repo, "main", running)
    commit = await populate(lakefs, repo)

    deadline = time.monotonic() + 180
    while True:
        shown = await asyncio.to_thread(run_kfm, env, "ledger", "show", "--json", commit, check=False)
        if shown.returncode == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert shown.returncode == 0, shown.stderr
    assert f'"lakefs_commit": "{commit}"' in shown.stdout
    assert f'"lakefs_repo": "{repo}"' in shown.stdout
    # The CLI's consumers read the writer topic over the same listener.
    health = run_kfm(env, "health")
    assert "ok   kafka: " + env["KFM_KAFKA_BOOTSTRAP"] in health.stdout, health.stdout


def test_the_ssl_listener_takes_a_client_certificate(stack_env: dict[str, str], env: dict[str, str]) -> None:
    mtls = {**env, "KFM_KAFKA_BOOTSTRAP": stack_env["KFM_STACK_KAFKA_MTLS_BOOTSTRAP"],
            "KFM_KAFKA_SECURITY_PROTOCOL": "SSL", "KFM_KAFKA_SASL_USERNAME": "", "KFM_KAFKA_SASL_PASSWORD_FILE": "",
            "KFM_KAFKA_SSL_CERTFILE": stack_env["KFM_STACK_KAFKA_MTLS_CERTFILE"],
            "KFM_KAFKA_SSL_KEYFILE": stack_env["KFM_STACK_KAFKA_MTLS_KEYFILE"]}
    ok = run_kfm(mtls, "health", check=False)
    assert "ok   kafka: " + mtls["KFM_KAFKA_BOOTSTRAP"] in ok.stdout, ok.stdout + ok.stderr
    # Without the certificate the broker ends the handshake: not ready, and said so on one line.
    without = run_kfm({**mtls, "KFM_KAFKA_SSL_CERTFILE": "", "KFM_KAFKA_SSL_KEYFILE": ""}, "health", check=False)
    kafka_lines = [line for line in without.stdout.splitlines() if line.startswith("FAIL kafka")]
    assert without.returncode == 1 and len(kafka_lines) == 1 and "client certificate" in kafka_lines[0], without.stdout


def _refused_start(env: dict[str, str], *args: str) -> tuple[int, str, float]:
    """Run a kfm command that must refuse to start; its exit code, stderr and how long it took."""
    began = time.monotonic()
    r = subprocess.run([*KFM, *args], env={**os.environ, **env}, capture_output=True, text=True, cwd=ROOT,
                       timeout=START_BOUND_S + 30, check=False)
    return r.returncode, r.stderr, time.monotonic() - began


@pytest.mark.parametrize("fault", ["wrong password", "untrusted certificate"])
def test_a_refused_login_or_certificate_stops_each_process_with_one_line(
    fault: str, env: dict[str, str], other_ca: Path
) -> None:
    if fault == "wrong password":
        bad = {**env, "KFM_KAFKA_SASL_PASSWORD_FILE": "", "KFM_KAFKA_SASL_PASSWORD": "not-the-password"}
        expected = "SASL SCRAM-SHA-512 login as 'kfm' refused"
    else:
        bad = {**env, "KFM_KAFKA_SSL_CAFILE": str(other_ca)}
        expected = "TLS certificate not trusted"

    for what, args in (("receiver", ("hooks", "serve")), ("worker", ("worker",))):
        rc, stderr, took = _refused_start({**bad, "KFM_HOOKS_PORT": str(free_port())}, *args)
        errors = [line for line in stderr.splitlines() if line.startswith("kfm: error: ")]
        assert rc == Exit.UNAVAILABLE, (what, rc, stderr[-2000:])  # could not run
        assert len(errors) == 1 and expected in errors[0], (what, stderr[-2000:])
        assert "Traceback" not in stderr, (what, stderr[-2000:])
        assert took < START_BOUND_S, (what, took)

    began = time.monotonic()
    health = run_kfm(bad, "health", check=False)
    kafka_lines = [line for line in health.stdout.splitlines() if line.startswith("FAIL kafka")]
    assert health.returncode == 1 and len(kafka_lines) == 1 and expected in kafka_lines[0], health.stdout
    assert time.monotonic() - began < START_BOUND_S
