"""The bundle manifest: what a rollback bundle holds, with sizes and digests.

The manifest is ``manifest.json``, the first member of every bundle. It is
parsed from untrusted bytes, so the models are frozen, strict and refuse
unknown keys; and it is hashed (as part of the bundle), so it has exactly one
encoding: RFC 8785 via :func:`worker.canonical.canonical_bytes`.
:meth:`BundleManifest.from_bytes` refuses anything that is not already in
that form, so the same content can never produce two different bundles.

Member paths are checked here, once, with the rules a safe extractor needs
(relative POSIX, no ``..``, no empty components), so a manifest that parses
can be written to disk without further path checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.bundle._json import strict_json_loads
from worker.canonical import canonical_bytes
from worker.errors import VerificationError, describe_validation_error
from worker.ids import BranchName, CommitId, RepoId, Sha256Hex
from worker.utc import format_utc, parse_utc

__all__ = [
    "LEGACY_ZSTD_LEVEL",
    "MANIFEST_FORMAT",
    "MANIFEST_FORMAT_V1",
    "MANIFEST_NAME",
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
    "BundleManifest",
    "BundleMember",
    "MemberKind",
    "check_member_path",
    "show_path",
]

#: The format of new bundles: v1 plus ``zstd_level``, the level the bundle was compressed at.
MANIFEST_FORMAT: Literal["kfm-rollback-bundle/v2"] = "kfm-rollback-bundle/v2"
#: Bundles made before the level was recorded (and the golden bundle): no ``zstd_level``.
MANIFEST_FORMAT_V1: Literal["kfm-rollback-bundle/v1"] = "kfm-rollback-bundle/v1"
#: The level every v1 bundle the bundler made was compressed at (it was fixed then).
LEGACY_ZSTD_LEVEL = 10
#: The reserved name of the first tar member.
MANIFEST_NAME = "manifest.json"
#: PATH_MAX is 4096 on Linux; a quarter leaves room for the restore directory.
MAX_PATH_BYTES = 1024
#: NAME_MAX on every filesystem we restore to.
MAX_COMPONENT_BYTES = 255

MemberKind = Literal["stac", "config", "model", "lineage", "trace", "energy", "meta"]


def show_path(path: str) -> str:
    """A member path safe to put in an error or log line.

    Why: paths come from untrusted tar headers; escaping control characters
    keeps a crafted name from forging log lines, and truncation bounds it.
    """
    shown = path.encode("unicode_escape", errors="backslashreplace").decode("ascii")
    return shown if len(shown) <= 200 else shown[:200] + "..."


def check_member_path(path: str) -> str:
    """Return ``path`` if it is safe to extract under any directory.

    Rules: relative POSIX path; no leading ``/``; no backslash; no empty,
    ``.`` or ``..`` component; no control characters; valid UTF-8; at most
    :data:`MAX_PATH_BYTES` bytes with components of at most
    :data:`MAX_COMPONENT_BYTES` bytes.

    Raises:
        ValueError: naming the rule that ``path`` breaks.
    """
    if not path:
        raise ValueError("empty path")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError("path is not valid UTF-8") from e
    if len(encoded) > MAX_PATH_BYTES:
        raise ValueError(f"path longer than {MAX_PATH_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise ValueError("path contains a control character")
    if "\\" in path:
        raise ValueError("path contains a backslash")
    if path.startswith("/"):
        raise ValueError("absolute path")
    for part in path.split("/"):
        if part == "":
            raise ValueError("path has an empty component")
        if part in (".", ".."):
            raise ValueError(f"path contains {part!r}")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise ValueError(f"path component longer than {MAX_COMPONENT_BYTES} bytes")
    return path


class BundleMember(BaseModel):
    """One file in the bundle.

    Attributes:
        path: where the file sits in the tar (and under a restore directory).
        size: exact size in bytes.
        sha256: lowercase hex SHA-256 of the content.
        kind: what the file is; restores and attestations select on it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    path: str
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256Hex
    kind: MemberKind

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        check_member_path(v)
        if v == MANIFEST_NAME:
            raise ValueError(f"{MANIFEST_NAME!r} is reserved for the manifest itself")
        return v


class BundleManifest(BaseModel):
    """Everything a bundle holds, pinned to one lakeFS commit.

    Attributes:
        format: the bundle format; bumped on any incompatible change.
        lakefs_repo: lakeFS repository id.
        lakefs_branch: the branch the commit was taken from.
        lakefs_commit: 64-hex lakeFS commit id; names the bundle.
        commit_created_at: the commit's creation time, canonical UTC RFC 3339.
            Also every tar member's mtime, so rebuilds are byte-identical.
        members: sorted by path, paths unique; no path is a directory of another.
        zstd_level: the zstd level the bundle was compressed at (format v2 only;
            v1 has none and means :data:`LEGACY_ZSTD_LEVEL`). A zstd frame does
            not record its level, and the level is part of the bundle's bytes, so
            a rebuild needs it to reproduce them (the bundler's redelivery check).
            Verification does not depend on it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    format: Literal["kfm-rollback-bundle/v1", "kfm-rollback-bundle/v2"]
    lakefs_repo: RepoId
    lakefs_branch: BranchName
    lakefs_commit: CommitId
    commit_created_at: str
    members: tuple[BundleMember, ...]
    zstd_level: Annotated[int, Field(ge=1, le=22)] | None = None

    @field_validator("commit_created_at")
    @classmethod
    def _created(cls, v: str) -> str:
        parse_utc(v)
        return v

    @model_validator(mode="after")
    def _level_matches_format(self) -> Self:
        if self.format == MANIFEST_FORMAT_V1 and self.zstd_level is not None:
            raise ValueError(f"zstd_level is not part of format {MANIFEST_FORMAT_V1}")
        if self.format == MANIFEST_FORMAT and self.zstd_level is None:
            raise ValueError(f"format {MANIFEST_FORMAT} requires zstd_level")
        return self

    @model_validator(mode="after")
    def _members_sorted_unique(self) -> Self:
        # Sorted and unique so the tar order, and therefore the bundle bytes,
        # follow from the content alone.
        paths = [m.path for m in self.members]
        for prev, cur in itertools.pairwise(paths):
            if cur == prev:
                raise ValueError(f"duplicate member path {show_path(cur)}")
            if cur < prev:
                raise ValueError(f"members not sorted by path at {show_path(cur)}")
        # "a" and "a/b" cannot both be files on disk; refuse before extraction.
        dirs = {p.rsplit("/", i)[0] for p in paths for i in range(1, p.count("/") + 1)}
        clash = dirs.intersection(paths)
        if clash:
            raise ValueError(f"member {show_path(min(clash))} is also a directory of another")
        return self

    @classmethod
    def build(
        cls,
        *,
        lakefs_repo: str,
        lakefs_branch: str,
        lakefs_commit: str,
        commit_created_at: datetime,
        members: Iterable[BundleMember],
        zstd_level: int | None = None,
    ) -> BundleManifest:
        """Build a manifest, sorting members and formatting the timestamp.

        With ``zstd_level`` the manifest is format v2 and records it; without,
        format v1 (what bundles made before the level was recorded have), so a
        rebuild of such a bundle gives its bytes again.

        Raises:
            ValueError: any field is invalid (pydantic ``ValidationError`` is one).
        """
        return cls(
            format=MANIFEST_FORMAT if zstd_level is not None else MANIFEST_FORMAT_V1,
            lakefs_repo=lakefs_repo,
            lakefs_branch=lakefs_branch,
            lakefs_commit=lakefs_commit,
            commit_created_at=format_utc(commit_created_at),
            members=tuple(sorted(members, key=lambda m: m.path)),
            zstd_level=zstd_level,
        )

    @property
    def compression_level(self) -> int:
        """The level the bundle was compressed at: recorded (v2) or :data:`LEGACY_ZSTD_LEVEL` (v1)."""
        return LEGACY_ZSTD_LEVEL if self.zstd_level is None else self.zstd_level

    @property
    def commit_mtime(self) -> int:
        """The commit time as whole POSIX seconds: the mtime of every tar member."""
        return int(parse_utc(self.commit_created_at).timestamp())

    @property
    def total_size(self) -> int:
        """Sum of member sizes."""
        return sum(m.size for m in self.members)

    def to_bytes(self) -> bytes:
        """The canonical (RFC 8785) encoding: what is stored and hashed."""
        # exclude_none: a v1 manifest has no zstd_level key at all, as before v2 existed.
        return canonical_bytes(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_bytes(cls, data: bytes) -> BundleManifest:
        """Parse ``manifest.json`` strictly.

        Refuses invalid UTF-8, duplicate keys, unknown keys, wrong types,
        ``NaN``/``Infinity``, and any encoding other than the canonical one.

        Raises:
            VerificationError: naming what is wrong.
        """
        try:
            strict_json_loads(data)
        except ValueError as e:
            raise VerificationError(f"{MANIFEST_NAME}: not valid JSON: {e}") from e
        try:
            manifest = cls.model_validate_json(data)
        except ValidationError as e:
            raise VerificationError(f"{MANIFEST_NAME}: {describe_validation_error(e, whole='<root>')}") from e
        if manifest.to_bytes() != data:
            raise VerificationError(f"{MANIFEST_NAME}: not in canonical (RFC 8785) form")
        return manifest
