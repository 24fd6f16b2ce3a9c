"""Rollback request and result messages (documented in docs/rollback.md).

A request is untrusted input from any producer on the rollback-requests
topic, so it is strict and frozen. Requests are keyed by ``repo/branch``:
every request for one branch lands on one partition and is handled in order,
which is what makes two requests for the same state converge.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.errors import decode_json
from worker.ids import BranchName, CommitId, RepoId, UtcDatetime

__all__ = ["RollbackRequest", "RollbackResult", "Status", "Strategy", "decode_request", "request_id_of", "request_key"]

Strategy = Literal["revert", "reset", "branch"]
Status = Literal["accepted", "verified", "restoring", "checking", "completed", "rejected", "dry-run", "failed"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{7,127}$")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    request_id: str
    lakefs_repo: RepoId
    commit: CommitId
    target_branch: BranchName
    strategy: Strategy = "revert"
    bundle_uri: Annotated[str, Field(max_length=2048)] = ""
    dry_run: bool = False
    requested_by: Annotated[str, Field(min_length=1, max_length=256)]
    reason: Annotated[str, Field(min_length=1, max_length=4096)]
    requested_at: UtcDatetime

    @field_validator("request_id")
    @classmethod
    def _rid(cls, v: str) -> str:
        if not _REQUEST_ID.fullmatch(v):
            raise ValueError("8-128 characters of [A-Za-z0-9._-]")
        return v

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


class RollbackResult(BaseModel):
    """Progress and final answers on the rollback-results topic, keyed by request id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    status: Status
    final: bool
    lakefs_repo: str = ""
    commit: str = ""
    target_branch: str = ""
    strategy: str = ""
    reason: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def request_key(repo: str, branch: str) -> bytes:
    return f"{repo}/{branch}".encode()


def decode_request(value: bytes) -> RollbackRequest:
    """Raises: IntegrityError naming the bad field."""
    return decode_json(RollbackRequest, value, "invalid rollback request")


def request_id_of(value: bytes) -> str:
    """The request id of a message that is not a valid request, as far as it can be
    read, so that the refusal reaches whoever is waiting for that id."""
    try:
        return str(json.loads(value).get("request_id", ""))[:128] or "unknown"
    except (ValueError, AttributeError):
        return "unknown"
