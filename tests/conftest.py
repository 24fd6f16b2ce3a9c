"""Shared fixtures. Stack fixtures read .stack/env written by `deploy/local/stack up`.

Tests marked ``stack`` talk to the real Kafka, lakeFS and S3 servers; they fail
(never skip) when the stack is not up, so a green run always means they ran.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def read_stack_env() -> dict[str, str]:
    env_file = Path(os.environ.get("KFM_STACK_DIR", ROOT / ".stack")) / "env"
    if not env_file.exists():
        pytest.fail(f"{env_file} missing: run `deploy/local/stack up` (make test does)")
    out: dict[str, str] = {}
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            out[k] = shlex.split(v)[0] if v else ""
    return out


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    return read_stack_env()


@pytest.fixture(scope="session", autouse=True)
def _topics(request: pytest.FixtureRequest) -> None:
    """Stack tests publish to the default topics; create them once (idempotent)."""
    if not any(item.get_closest_marker("stack") for item in request.session.items):
        return
    import subprocess
    import sys

    env = {**os.environ, **read_stack_env()}
    subprocess.run([sys.executable, "-m", "worker._cli", "topics", "ensure"], env=env, check=True,
                   cwd=ROOT, capture_output=True)
