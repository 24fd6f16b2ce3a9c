"""Which lakeFS objects go into a bundle, and where they sit inside it.

A member's path says where it came from: ``lakefs/<path>`` for an object of
the bundled commit, ``s3/<bucket>/<key>`` for a model kept in object storage.
So a restore maps every member back to exactly one source without any other
lookup, and two sources can never collide.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

__all__ = [
    "LAKEFS_ROOT",
    "S3_ROOT",
    "SnapshotRules",
    "bundle_path",
    "is_config",
    "is_stac",
    "lakefs_path_of",
    "s3_bundle_path",
    "s3_source_of",
]


@dataclass(frozen=True)
class SnapshotRules:
    """Repository conventions; each comes from a ``KFM_*`` setting."""

    stac_prefixes: tuple[str, ...] = ("stac/",)
    config_globs: tuple[str, ...] = ("configs/*", "configs/**/*")
    model_manifest: str = "models/manifest.json"


def is_config(path: str, rules: SnapshotRules) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in rules.config_globs)


def is_stac(path: str, rules: SnapshotRules) -> bool:
    """A STAC document: JSON under a STAC prefix. The bundle holds these pinned to
    the commit (rewritten), so they are compared with lakeFS, not re-hashed."""
    return path.endswith(".json") and path.startswith(rules.stac_prefixes)


LAKEFS_ROOT = "lakefs/"
S3_ROOT = "s3/"


def bundle_path(lakefs_path: str) -> str:
    return LAKEFS_ROOT + lakefs_path


def s3_bundle_path(bucket: str, key: str) -> str:
    return f"{S3_ROOT}{bucket}/{key}"


def lakefs_path_of(member_path: str) -> str | None:
    """The lakeFS path a member was taken from, or None if it came from S3."""
    return member_path[len(LAKEFS_ROOT):] if member_path.startswith(LAKEFS_ROOT) else None


def s3_source_of(member_path: str) -> tuple[str, str] | None:
    """The (bucket, key) a member was taken from, or None if it came from lakeFS."""
    if not member_path.startswith(S3_ROOT):
        return None
    bucket, _, key = member_path[len(S3_ROOT):].partition("/")
    return bucket, key
