"""Identifier rules (lakeFS names, SHA-256 digests, UTC instants), defined once for every boundary.

Commit events, bundle manifests, attestations, ledger rows and rollback
requests all accept exactly the same repository, branch, commit and digest
values, so whatever one of them accepted the others can carry, and such
values are safe to print in error messages and paste into commands.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

__all__ = [
    "BranchName",
    "CommitId",
    "RepoId",
    "Sha256Hex",
    "UtcDatetime",
    "check_branch",
    "check_commit",
    "check_repo",
    "check_utc",
    "s3_key_in",
    "split_s3_uri",
]

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


RepoId = Annotated[str, AfterValidator(check_repo)]
BranchName = Annotated[str, AfterValidator(check_branch)]
CommitId = Annotated[str, AfterValidator(check_commit)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A SHA-256 digest as 64 lowercase hex digits (the only spelling we write or accept)."""


def check_utc(v: datetime) -> datetime:
    """UTC only (tuf's discipline): an offset other than +00:00 is refused, not converted."""
    if v.tzinfo is None or v.utcoffset() != UTC.utcoffset(None):
        raise ValueError("must be a UTC timestamp")
    return v


UtcDatetime = Annotated[datetime, AfterValidator(check_utc)]


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``.

    Raises:
        ValueError: not an ``s3://`` URI with a bucket and a key.
    """
    bucket, sep, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not sep:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return bucket, key


def s3_key_in(uri: str, bucket: str) -> str | None:
    """The key ``uri`` names in ``bucket``; None if it is not an ``s3://`` URI there.

    Why a None and not an error: each caller refuses a URI outside the
    registry bucket in its own words (a rejected candidate, a rejected rollback).
    """
    try:
        got, key = split_s3_uri(uri)
    except ValueError:
        return None
    return key if got == bucket else None
