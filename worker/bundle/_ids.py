"""lakeFS identifier rules shared by the manifest and the attestation.

The same rules as :mod:`worker.events`, so a bundle or an attestation can
only name a repository, branch and commit that a commit event could have
named, and such values are safe to print in error messages.
"""

from __future__ import annotations

import re

__all__ = ["check_branch", "check_commit", "check_repo"]

_REPO_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
_BRANCH_RE = re.compile(r"^[\w][\w.\-/]{0,255}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{64}$")


def check_repo(v: str) -> str:
    """Return ``v`` if it is a lakeFS repository id; else raise ``ValueError``."""
    if not _REPO_RE.fullmatch(v):
        raise ValueError("not a lakeFS repository id")
    return v


def check_branch(v: str) -> str:
    """Return ``v`` if it is a lakeFS branch name; else raise ``ValueError``."""
    if not _BRANCH_RE.fullmatch(v) or ".." in v:
        raise ValueError("not a lakeFS branch name")
    return v


def check_commit(v: str) -> str:
    """Return ``v`` if it is a lakeFS commit id; else raise ``ValueError``."""
    if not _COMMIT_RE.fullmatch(v):
        raise ValueError("not a lakeFS commit id (64 lowercase hex)")
    return v
