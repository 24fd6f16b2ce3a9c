"""The commit event: what every bundle starts from.

A lakeFS post-commit/post-merge webhook, a manual ``kfm checkpoint`` and the reconciler all
become one :class:`CommitEvent` on the events topic. Kafka values are
untrusted input too, so the model is strict and frozen, and it is the only
place the shape is defined (hooks produce it, the bundler consumes it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.errors import decode_json
from worker.ids import BranchName, CommitId, RepoId, UtcDatetime

__all__ = ["CommitEvent", "EventSource", "decode_event", "event_key"]

EventSource = Literal["post-commit", "post-merge", "checkpoint", "reconcile"]


Text = Annotated[str, Field(max_length=4096)]


class CommitEvent(BaseModel):
    """A lakeFS commit that needs a rollback bundle."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    source: EventSource
    repository_id: RepoId
    branch_id: BranchName
    commit_id: CommitId
    event_time: UtcDatetime
    action_name: Text = ""
    hook_id: Text = ""
    source_ref: Text = ""
    merge_source: Text = ""
    commit_message: Annotated[str, Field(max_length=65536)] = ""
    committer: Text = ""
    commit_metadata: dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=256
    )
    request_id: Text = ""

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def event_key(repository_id: str, commit_id: str) -> bytes:
    """Kafka key: the same commit always lands on the same partition."""
    return f"{repository_id}/{commit_id}".encode()


def decode_event(value: bytes) -> CommitEvent:
    """Parse a Kafka value.

    Raises:
        IntegrityError: the value is not a valid commit event; never retried.
    """
    return decode_json(CommitEvent, value, "invalid commit event", whole="()")
