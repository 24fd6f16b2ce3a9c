"""Coverage bookkeeping in the registry bucket: seen and failed markers, branch state, watch registrations.

Keys (docs/coverage.md):

- ``coverage/seen/<repo>/<commit>.json``: the bundler started on an event for
  the commit (written once, ``If-None-Match``, so it keeps the first time);
- ``coverage/failed/<repo>/<commit>.json``: the bundler gave up on the commit
  (reason, retryable, attempts, the event), until a retry clears it;
- ``coverage/state/<repo>/<branch>.json``: the reconciler's horizon (first
  watched commit) and watermark for a branch;
- ``watch/<repo>/<branch>.json``: ``kfm hooks install`` registered the branch.

Markers are small canonical JSON objects; none of them is ledger data, and
losing one costs at most one extra bundle request.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from worker._internal.s3 import Bucket
from worker.canonical import canonical_bytes
from worker.coverage import FailedMark, Floor
from worker.errors import AlreadyExistsError, IntegrityError, NotFoundError
from worker.events import CommitEvent
from worker.ids import check_branch, check_commit, check_repo
from worker.utc import format_utc, parse_rfc3339

__all__ = [
    "BranchState",
    "Registration",
    "clear_failed",
    "failed_mark",
    "failed_marks",
    "load_state",
    "mark_failed",
    "mark_seen",
    "register_watch",
    "registrations",
    "save_state",
    "seen_at",
    "touch_seen",
]

SEEN_PREFIX = "coverage/seen/"
FAILED_PREFIX = "coverage/failed/"
STATE_PREFIX = "coverage/state/"
WATCH_PREFIX = "watch/"
_MAX = 1 << 20


def _parse_ts(v: object, key: str) -> datetime:
    if not isinstance(v, str):
        raise IntegrityError(f"s3: {key}: timestamp missing")
    try:
        return parse_rfc3339(v)
    except ValueError:
        raise IntegrityError(f"s3: {key}: bad timestamp {v!r}") from None


async def _get_json(bucket: Bucket, key: str) -> dict[str, Any] | None:
    try:
        data, _ = await bucket.get(key, _MAX)
    except NotFoundError:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        raise IntegrityError(f"s3: {key}: not JSON") from None
    if not isinstance(value, dict):
        raise IntegrityError(f"s3: {key}: not a JSON object")
    return value


# --- seen -----------------------------------------------------------------------
def _seen_key(repo: str, commit: str) -> str:
    return f"{SEEN_PREFIX}{repo}/{commit}.json"


async def mark_seen(bucket: Bucket, event: CommitEvent, now: datetime | None = None) -> bool:
    """Record that the bundler started on the commit; False if it was seen before."""
    body = {
        "repository": event.repository_id,
        "branch": event.branch_id,
        "commit": event.commit_id,
        "source": event.source,
        "seen_at": format_utc(now or datetime.now(UTC)),
    }
    try:
        await bucket.put(_seen_key(event.repository_id, event.commit_id), canonical_bytes(body), if_none_match=True)
    except AlreadyExistsError:
        return False
    return True


async def touch_seen(bucket: Bucket, repo: str, branch: str, commit: str, now: datetime) -> None:
    """Restart a pending commit's clock after the reconciler asked for it again."""
    body = {"repository": repo, "branch": branch, "commit": commit, "source": "reconcile", "seen_at": format_utc(now)}
    await bucket.put(_seen_key(repo, commit), canonical_bytes(body))


async def seen_at(bucket: Bucket, repo: str, commit: str) -> datetime | None:
    key = _seen_key(repo, commit)
    body = await _get_json(bucket, key)
    return None if body is None else _parse_ts(body.get("seen_at"), key)


# --- failed ---------------------------------------------------------------------
def _failed_key(repo: str, commit: str) -> str:
    return f"{FAILED_PREFIX}{repo}/{commit}.json"


def _mark_of(body: dict[str, Any], key: str) -> FailedMark:
    try:
        event = CommitEvent.model_validate(body.get("event"), strict=False)
    except ValidationError:
        raise IntegrityError(f"s3: {key}: event is not a commit event") from None
    attempts = body.get("attempts", 1)
    return FailedMark(
        repo=event.repository_id,
        branch=event.branch_id,
        commit=event.commit_id,
        reason=str(body.get("reason", ""))[:4096],
        retryable=body.get("retryable") is True,
        failed_at=_parse_ts(body.get("failed_at"), key),
        attempts=attempts if isinstance(attempts, int) and attempts > 0 else 1,
        event=event.model_dump(mode="json"),
    )


async def mark_failed(
    bucket: Bucket, event: CommitEvent, reason: str, *, retryable: bool, now: datetime | None = None
) -> FailedMark:
    """Record that the bundler gave up on the commit; ``attempts`` counts consecutive give-ups."""
    key = _failed_key(event.repository_id, event.commit_id)
    previous = await failed_mark(bucket, event.repository_id, event.commit_id)
    body = {
        "reason": reason[:4096],
        "retryable": retryable,
        "failed_at": format_utc(now or datetime.now(UTC)),
        "attempts": (previous.attempts + 1) if previous else 1,
        "event": event.model_dump(mode="json"),
    }
    await bucket.put(key, canonical_bytes(body))
    return _mark_of(body, key)


async def failed_mark(bucket: Bucket, repo: str, commit: str) -> FailedMark | None:
    key = _failed_key(repo, commit)
    body = await _get_json(bucket, key)
    return None if body is None else _mark_of(body, key)


async def failed_marks(bucket: Bucket, repo: str) -> list[FailedMark]:
    """Every failed marker of a repository (markers are few: one per commit the bundler gave up on)."""
    out: list[FailedMark] = []
    for key in await bucket.list_keys(f"{FAILED_PREFIX}{repo}/"):
        body = await _get_json(bucket, key)
        if body is not None:
            out.append(_mark_of(body, key))
    return out


async def clear_failed(bucket: Bucket, repo: str, commit: str) -> None:
    await bucket.delete(_failed_key(repo, commit))


# --- branch state ---------------------------------------------------------------
class _FloorModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    commit: str
    created: datetime


class BranchState(BaseModel):
    """Where the reconciler's walk of one branch starts being unnecessary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon: _FloorModel  # the first watched commit: in scope, nothing older is
    watermark: _FloorModel | None = None  # this commit and everything walked below it are settled
    updated_at: datetime

    def floor(self) -> Floor:
        if self.watermark is not None:
            return Floor(self.watermark.commit, self.watermark.created.astimezone(UTC), inclusive=False)
        return self.horizon_floor()

    def horizon_floor(self) -> Floor:
        return Floor(self.horizon.commit, self.horizon.created.astimezone(UTC), inclusive=True)

    def with_watermark(self, commit: str, created: datetime, now: datetime) -> BranchState:
        return self.model_copy(update={"watermark": _FloorModel(commit=commit, created=created), "updated_at": now})

    @classmethod
    def new(cls, horizon: tuple[str, datetime], watermark: tuple[str, datetime] | None, now: datetime) -> BranchState:
        return cls(
            horizon=_FloorModel(commit=horizon[0], created=horizon[1]),
            watermark=None if watermark is None else _FloorModel(commit=watermark[0], created=watermark[1]),
            updated_at=now,
        )


def _state_key(repo: str, branch: str) -> str:
    return f"{STATE_PREFIX}{repo}/{branch}.json"


async def load_state(bucket: Bucket, repo: str, branch: str) -> BranchState | None:
    key = _state_key(repo, branch)
    body = await _get_json(bucket, key)
    if body is None:
        return None
    try:
        return BranchState.model_validate(body)
    except ValidationError:
        raise IntegrityError(f"s3: {key}: not a branch state") from None


async def save_state(bucket: Bucket, repo: str, branch: str, state: BranchState) -> None:
    await bucket.put(_state_key(repo, branch), canonical_bytes(state.model_dump(mode="json")))


# --- watch registrations --------------------------------------------------------
@dataclass(frozen=True)
class Registration:
    repo: str
    branch: str
    installed_commit: str
    installed_at: datetime


async def register_watch(bucket: Bucket, repo: str, branch: str, installed_commit: str, installed_at: datetime) -> None:
    """Watch ``repo``/``branch`` from ``installed_commit`` on (``kfm hooks install``); a re-install keeps the first."""
    body = {
        "repository": repo,
        "branch": branch,
        "installed_commit": installed_commit,
        "installed_at": format_utc(installed_at),
    }
    with contextlib.suppress(AlreadyExistsError):
        await bucket.put(f"{WATCH_PREFIX}{repo}/{branch}.json", canonical_bytes(body), if_none_match=True)


async def registrations(bucket: Bucket) -> list[Registration]:
    out: list[Registration] = []
    for key in sorted(await bucket.list_keys(WATCH_PREFIX)):
        body = await _get_json(bucket, key)
        if body is None:
            continue
        repo, branch, commit = body.get("repository"), body.get("branch"), body.get("installed_commit")
        try:
            if not (isinstance(repo, str) and isinstance(branch, str) and isinstance(commit, str)):
                raise ValueError
            check_repo(repo), check_branch(branch), check_commit(commit)
        except ValueError:
            raise IntegrityError(f"s3: {key}: not a watch registration") from None
        out.append(Registration(repo, branch, commit, _parse_ts(body.get("installed_at"), key)))
    return out
