"""The lakeFS action webhook body, validated strictly at the door.

Field names and optionality follow lakeFS's ``pkg/actions/event.go``
(``EventInfo``): many fields are ``omitempty``, so only the ones a bundle needs
are required, and only for the event types we act on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.events import CommitEvent

__all__ = ["ACTED_ON", "BadPayload", "WebhookBody", "parse_webhook"]

ACTED_ON = frozenset({"post-commit", "post-merge"})
# RFC 3339 date-time (lakeFS sends Go's time.RFC3339): no ISO 8601 basic format.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([zZ]|[+-]\d{2}:\d{2})")

Short = Annotated[str, Field(max_length=1024)]


class BadPayload(ValueError):  # noqa: N818 - public name, used by callers and tests
    """The body is not a lakeFS webhook we accept; ``str()`` names the field."""


class WebhookBody(BaseModel):
    # extra="forbid": an unexpected field means this is not the lakeFS payload
    # we were built against, and guessing is worse than a clear 422.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    event_type: Short
    event_time: Short
    action_name: Short
    hook_id: Short
    repository_id: Short
    branch_id: Short = ""
    source_ref: Short = ""
    tag_id: Short = ""
    commit_id: Short = ""
    commit_message: Annotated[str, Field(max_length=65536)] = ""
    committer: Short = ""
    commit_metadata: dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=256
    )
    merge_source: Short = ""


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{loc}: {err['msg']}"


def parse_webhook(raw: bytes) -> tuple[WebhookBody, CommitEvent | None]:
    """Validate a webhook body; return the commit event if it is one we act on.

    Raises:
        BadPayload: malformed JSON, wrong types, missing or unknown fields.
    """
    try:
        body = WebhookBody.model_validate_json(raw)
    except ValidationError as e:
        raise BadPayload(_first_error(e)) from e
    if body.event_type not in ACTED_ON:
        return body, None
    for name in ("branch_id", "commit_id"):
        if not getattr(body, name):
            raise BadPayload(f"{name}: required for {body.event_type}")
    if not _RFC3339.fullmatch(body.event_time):
        raise BadPayload("event_time: not an RFC 3339 timestamp")
    try:
        event_time = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", body.event_time))
    except ValueError as e:
        raise BadPayload("event_time: not an RFC 3339 timestamp") from e
    if event_time.tzinfo is None:
        raise BadPayload("event_time: timezone missing")
    try:
        event = CommitEvent(
            source=body.event_type,  # type: ignore[arg-type]  # checked against ACTED_ON
            repository_id=body.repository_id,
            branch_id=body.branch_id,
            commit_id=body.commit_id,
            event_time=event_time.astimezone(UTC),
            action_name=body.action_name,
            hook_id=body.hook_id,
            source_ref=body.source_ref,
            merge_source=body.merge_source,
            commit_message=body.commit_message,
            committer=body.committer,
            commit_metadata=dict(body.commit_metadata),
        )
    except ValidationError as e:
        raise BadPayload(_first_error(e)) from e
    return body, event
