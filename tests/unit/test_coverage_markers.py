"""Coverage markers and watched targets, against an in-memory bucket (worker/io/markers.py, reconciling.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from worker._internal.s3 import Bucket
from worker.config import load_settings
from worker.errors import AlreadyExistsError, IntegrityError, NotFoundError
from worker.events import CommitEvent
from worker.io import markers
from worker.io.reconciling import Target, watched_targets
from worker.io.runtime import Runtime

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
C1, C2 = "a" * 64, "b" * 64


class MemBucket:
    """The part of :class:`Bucket` the markers use, in memory, with S3's conditional-write answer."""

    name = "mem"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        if if_none_match and key in self.objects:
            raise AlreadyExistsError(key)
        self.objects[key] = data
        return "etag"

    async def get(self, key: str, max_bytes: int) -> tuple[bytes, str]:
        if key not in self.objects:
            raise NotFoundError(key)
        return self.objects[key], "etag"

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)


def bucket() -> Bucket:
    return cast(Bucket, MemBucket())


def event(commit: str = C1, source: str = "post-commit", branch: str = "main") -> CommitEvent:
    return CommitEvent(source=source, repository_id="kfm-data", branch_id=branch, commit_id=commit,  # type: ignore[arg-type]
                       event_time=T0)


async def test_seen_keeps_the_first_time() -> None:
    b = bucket()
    assert await markers.mark_seen(b, event(), T0)
    assert not await markers.mark_seen(b, event(source="reconcile"), T0 + timedelta(minutes=5))
    assert await markers.seen_at(b, "kfm-data", C1) == T0
    await markers.touch_seen(b, "kfm-data", "main", C1, T0 + timedelta(hours=1))
    assert await markers.seen_at(b, "kfm-data", C1) == T0 + timedelta(hours=1)
    assert await markers.seen_at(b, "kfm-data", C2) is None


async def test_failed_marker_counts_attempts_keeps_the_event_and_clears() -> None:
    b = bucket()
    m = await markers.mark_failed(b, event(), "s3 down", retryable=True, now=T0)
    assert (m.attempts, m.retryable, m.branch) == (1, True, "main")
    m = await markers.mark_failed(b, event(), "s3 still down", retryable=True, now=T0 + timedelta(minutes=1))
    assert m.attempts == 2 and m.reason == "s3 still down"
    await markers.mark_failed(b, event(C2, branch="dev"), "bad STAC", retryable=False, now=T0)
    marks = await markers.failed_marks(b, "kfm-data")
    assert {(x.commit, x.branch, x.retryable) for x in marks} == {(C1, "main", True), (C2, "dev", False)}
    again = CommitEvent.model_validate(marks[0].event, strict=False)
    assert again.commit_id == marks[0].commit and again.source == "post-commit"
    await markers.clear_failed(b, "kfm-data", C1)
    assert await markers.failed_mark(b, "kfm-data", C1) is None


async def test_branch_state_round_trip_and_watermark() -> None:
    b = bucket()
    assert await markers.load_state(b, "kfm-data", "feature/x") is None
    state = markers.BranchState.new((C1, T0), None, T0)
    assert state.floor().inclusive and state.floor().commit == C1
    await markers.save_state(b, "kfm-data", "feature/x", state.with_watermark(C2, T0 + timedelta(1), T0))
    loaded = await markers.load_state(b, "kfm-data", "feature/x")
    assert loaded is not None
    assert (loaded.floor().commit, loaded.floor().inclusive) == (C2, False)
    assert loaded.horizon_floor().commit == C1


async def test_registrations_keep_the_first_install_and_refuse_junk() -> None:
    b = bucket()
    await markers.register_watch(b, "kfm-data", "main", C1, T0)
    await markers.register_watch(b, "kfm-data", "main", C2, T0 + timedelta(days=1))  # a re-install
    await markers.register_watch(b, "kfm-data", "release/2026", C2, T0)
    regs = await markers.registrations(b)
    assert [(r.repo, r.branch, r.installed_commit) for r in regs] == [
        ("kfm-data", "main", C1), ("kfm-data", "release/2026", C2)
    ]
    await b.put("watch/x/y.json", b'{"repository": "Bad Repo", "branch": "main", "installed_commit": "x"}')
    with pytest.raises(IntegrityError, match="not a watch registration"):
        await markers.registrations(b)


@dataclass
class FakeLakeFS:
    defaults: dict[str, str] = field(default_factory=dict)

    async def default_branch(self, repo: str) -> str:
        return self.defaults[repo]


def runtime(env: dict[str, str], b: Bucket, lakefs: FakeLakeFS) -> Runtime:
    @dataclass
    class Rt:
        settings: Any
        lakefs: Any
        bucket: Any

    return cast(Runtime, Rt(load_settings(env), lakefs, b))


async def test_watched_targets_merge_configuration_and_registrations() -> None:
    b = bucket()
    await markers.register_watch(b, "models", "staging", C1, T0)
    lakefs = FakeLakeFS({"kfm-data": "trunk"})
    rt = runtime({"KFM_WATCHED_REPOS": "kfm-data,models:main"}, b, lakefs)
    assert await watched_targets(rt) == [
        Target("kfm-data", "trunk"), Target("models", "main"), Target("models", "staging", (C1, T0))
    ]
    # KFM_WATCHED_BRANCHES names the default branches, and filters every target.
    rt = runtime({"KFM_WATCHED_REPOS": "kfm-data,models:main", "KFM_WATCHED_BRANCHES": "main,dev"}, b, lakefs)
    assert await watched_targets(rt) == [
        Target("kfm-data", "dev"), Target("kfm-data", "main"), Target("models", "main")
    ]
    # Asked for by name: one repository (its watched branches), or one branch even if unwatched.
    rt = runtime({"KFM_WATCHED_REPOS": "kfm-data,models:main"}, b, lakefs)
    assert await watched_targets(rt, ("models", None)) == [Target("models", "main"),
                                                             Target("models", "staging", (C1, T0))]
    assert await watched_targets(rt, ("models", "staging")) == [Target("models", "staging", (C1, T0))]
    assert await watched_targets(rt, ("other-repo", "main")) == [Target("other-repo", "main")]
