"""The lakeFS action webhook body, validated strictly at the door.

Field names and optionality follow lakeFS's ``pkg/actions/event.go``
(``EventInfo``): many fields are ``omitempty``, so only the ones a bundle needs
are required, and only for the event types we act on. Every field that is present
is checked the same way whatever the event type: an ignored event with a malformed
repository id or timestamp is as much a sign of a wrong sender as an acted-on one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from worker.errors import PayloadError, describe_validation_error
from worker.events import CommitEvent
from worker.ids import check_branch, check_commit, check_repo
from worker.utc import parse_rfc3339

__all__ = ["ACTED_ON", "WebhookBody", "parse_webhook"]

ACTED_ON = frozenset({"post-commit", "post-merge"})

Short = Annotated[str, Field(max_length=1024)]
# lakeFS event types are lower-case words joined by hyphens (post-commit, pre-create-tag, ...).
EventType = Annotated[str, Field(max_length=64, pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")]


def _empty_or(check: Callable[[str], str]) -> Callable[[str], str]:
    """``check``, except that an empty string (lakeFS omitted the field) passes."""
    return lambda v: check(v) if v else v


Repo = Annotated[str, AfterValidator(check_repo)]
Branch = Annotated[Short, AfterValidator(_empty_or(check_branch))]
Commit = Annotated[Short, AfterValidator(_empty_or(check_commit))]


class WebhookBody(BaseModel):
    # extra="forbid": an unexpected field means this is not the lakeFS payload
    # we were built against, and guessing is worse than a clear 422.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    event_type: EventType
    event_time: Short
    action_name: Short
    hook_id: Short
    repository_id: Repo
    branch_id: Branch = ""
    source_ref: Short = ""
    tag_id: Short = ""
    commit_id: Commit = ""
    commit_message: Annotated[str, Field(max_length=65536)] = ""
    committer: Short = ""
    commit_metadata: dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=256
    )
    merge_source: Short = ""


def _event_time(text: str) -> datetime:
    try:
        # RFC 3339 as lakeFS sends it (Go's time.RFC3339): no ISO 8601 basic format.
        return parse_rfc3339(text)
    except ValueError as e:
        raise PayloadError("event_time: not an RFC 3339 timestamp") from e


def _refuse_repeated_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise PayloadError(f"{key}: key given more than once")
        seen.add(key)
    return dict(pairs)


def parse_webhook(raw: bytes) -> tuple[WebhookBody, CommitEvent | None]:
    """Validate a webhook body; return the commit event if it is one we act on.

    A key given twice is refused: JSON parsers disagree on which value wins, so such
    a body does not mean one thing.

    Raises:
        PayloadError: malformed JSON, wrong types, missing, repeated or unknown fields.
    """
    try:
        body = WebhookBody.model_validate_json(raw)
    except ValidationError as e:
        raise PayloadError(describe_validation_error(e, whole="body")) from e
    # The model accepted it, so it is small and two levels deep: a second parse only
    # to see repeated keys, which the model's parser silently resolves. Should the two
    # parsers ever disagree on what is JSON, that is still the body's fault, not a 500.
    try:
        json.loads(raw, object_pairs_hook=_refuse_repeated_keys)
    except (json.JSONDecodeError, RecursionError) as e:
        raise PayloadError(f"body: not JSON ({type(e).__name__})") from e
    event_time = _event_time(body.event_time)
    if body.event_type not in ACTED_ON:
        return body, None
    for name in ("branch_id", "commit_id"):
        if not getattr(body, name):
            raise PayloadError(f"{name}: required for {body.event_type}")
    try:
        event = CommitEvent(
            source=body.event_type,  # type: ignore[arg-type]  # checked against ACTED_ON
            repository_id=body.repository_id,
            branch_id=body.branch_id,
            commit_id=body.commit_id,
            event_time=event_time,
            action_name=body.action_name,
            hook_id=body.hook_id,
            source_ref=body.source_ref,
            merge_source=body.merge_source,
            commit_message=body.commit_message,
            committer=body.committer,
            commit_metadata=dict(body.commit_metadata),
        )
    except ValidationError as e:
        raise PayloadError(describe_validation_error(e, whole="body")) from e
    return body, event
