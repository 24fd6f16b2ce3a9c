"""Commit the registry's lakeFS action file into a repository.

Why through the API and not a file copy: the action only takes effect once it
is committed on the branch, and committing it is itself a commit event, which
is the first thing the registry bundles.
"""

from __future__ import annotations

import json
from importlib import resources
from string import Template

from worker.clients import LakeFS

__all__ = ["ACTION_PATH", "install_action", "render_action"]

ACTION_PATH = "_lakefs_actions/kfm-rollback-registry.yaml"
# Package data (not a file of the checkout), so an installed wheel renders it too.
_TEMPLATE = resources.files("hooks").joinpath("lakefs_action.yaml")


def render_action(hooks_url: str, branches: list[str]) -> bytes:
    """Fill the committed template; branch names are JSON-quoted (valid YAML)."""
    if not hooks_url.startswith(("http://", "https://")):
        raise ValueError(f"hooks URL must be http(s): {hooks_url!r}")
    text = Template(_TEMPLATE.read_text(encoding="utf-8")).substitute(
        HOOKS_URL=hooks_url, BRANCHES=json.dumps(branches)
    )
    return text.encode("utf-8")


async def install_action(lakefs: LakeFS, repo: str, branch: str, hooks_url: str) -> str:
    """Upload and commit the action on ``branch``; return the commit id."""
    await lakefs.upload(repo, branch, ACTION_PATH, render_action(hooks_url, [branch]))
    return await lakefs.commit(repo, branch, "kfm: install rollback-registry action")
