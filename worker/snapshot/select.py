"""Which lakeFS objects go into a bundle, and where they sit inside it.

A bundle member's path is ``<kind>/<lakeFS path>`` (``stac/``, ``configs/``)
or ``models/<name>/<version>/<file>``, so a restore maps every member back to
exactly one lakeFS path without any other lookup.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

__all__ = ["SnapshotRules", "bundle_path", "is_config", "lakefs_path_of"]


@dataclass(frozen=True)
class SnapshotRules:
    """Repository conventions; each comes from a ``KFM_*`` setting."""

    stac_prefixes: tuple[str, ...] = ("stac/",)
    config_globs: tuple[str, ...] = ("configs/*", "configs/**/*")
    model_manifest: str = "models/manifest.json"

    @classmethod
    def from_strings(cls, stac_prefixes: str, config_globs: str, model_manifest: str) -> SnapshotRules:
        def split(s: str) -> tuple[str, ...]:
            return tuple(p.strip() for p in s.split(",") if p.strip())

        return cls(split(stac_prefixes), split(config_globs), model_manifest)


def is_config(path: str, rules: SnapshotRules) -> bool:
    return any(fnmatch.fnmatchcase(path, g) for g in rules.config_globs)


def bundle_path(kind: str, lakefs_path: str) -> str:
    return f"{kind}/{lakefs_path}"


def lakefs_path_of(member_path: str) -> tuple[str, str]:
    """Split a member path into (kind, lakeFS path)."""
    kind, _, rest = member_path.partition("/")
    if not rest:
        raise ValueError(f"member path without a kind: {member_path!r}")
    return kind, rest
