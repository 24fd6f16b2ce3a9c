"""The local stack's settings, for the benchmark scripts."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stack_env() -> dict[str, str]:
    """os.environ, with ``.stack/env`` filled in for KFM_* names that are not set."""
    env = dict(os.environ)
    path = Path(env.get("KFM_STACK_DIR", ROOT / ".stack")) / "env"
    if path.exists():
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line.startswith("export "):
                name, _, value = line[len("export "):].partition("=")
                parts = shlex.split(value) if value else [""]
                env.setdefault(name, parts[0] if parts else "")
    return env
