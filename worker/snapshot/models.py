"""The model manifest a repository keeps at ``models/manifest.json``.

It names the binaries that ran in production with this data; they are copied
into the bundle. The file is repository content, so it is parsed strictly.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.errors import IntegrityError, decode_json

__all__ = ["ModelEntry", "ModelManifest", "parse_model_manifest"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str
    version: str
    # A path in the same lakeFS repository (at the same commit), or s3://bucket/key.
    path: Annotated[str, Field(min_length=1, max_length=1024)]

    @field_validator("name", "version")
    @classmethod
    def _safe(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must match [A-Za-z0-9][A-Za-z0-9._-]*")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("s3://") and (v.startswith("/") or ".." in v.split("/")):
            raise ValueError("must be a relative lakeFS path or an s3:// URI")
        return v


class ModelManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    models: tuple[ModelEntry, ...] = Field(max_length=1000)


def parse_model_manifest(raw: bytes) -> ModelManifest:
    """Raises: IntegrityError naming the bad field."""
    m = decode_json(ModelManifest, raw, "model manifest")
    names = [(x.name, x.version) for x in m.models]
    if len(set(names)) != len(names):
        raise IntegrityError("model manifest: duplicate name/version")
    return m
