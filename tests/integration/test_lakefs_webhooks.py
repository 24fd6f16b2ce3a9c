"""A real lakeFS commit and merge, with the action committed, reach Kafka."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hooks.install import ACTION_PATH
from tests.integration.helpers import end_offsets, hooks_server, read_since, unique
from worker._internal.lakefs import LakeFS
from worker.config import load_settings
from worker.constants import TOPIC_EVENTS
from worker.events import CommitEvent

pytestmark = pytest.mark.stack


async def test_commit_and_merge_produce_matching_events(stack_env: dict[str, str]) -> None:
    settings = load_settings({**os.environ, **stack_env})
    lakefs = LakeFS(settings)
    repo = unique("hooks")
    bootstrap = stack_env["KFM_KAFKA_BOOTSTRAP"]
    try:
        await lakefs.create_repository(repo, f"local://{repo}")
        with hooks_server(stack_env) as url:
            start = await end_offsets(bootstrap, TOPIC_EVENTS)
            # Installing the action is itself a commit; the action only fires
            # for later commits (lakeFS reads actions from the commit's parent state).
            from hooks.install import install_action

            install_commit = await install_action(lakefs, repo, "main", url + "/lakefs/webhook")
            assert install_commit
            data = await lakefs.read(repo, "main", ACTION_PATH, 1 << 16)
            assert b"X-KFM-Hook-Token" in data

            await lakefs.upload(repo, "main", "data/a.txt", b"hello")
            c1 = await lakefs.commit(repo, "main", "add a", {"pipeline": "demo"})
            await lakefs.create_branch(repo, "feature", "main")
            await lakefs.upload(repo, "feature", "data/b.txt", b"world")
            await lakefs.commit(repo, "feature", "add b")
            merge = await lakefs.merge(repo, "feature", "main", "merge feature")

            records = await read_since(bootstrap, TOPIC_EVENTS, start, want=3, timeout=30)
        events = [CommitEvent.model_validate_json(v) for _, v, _ in records]
        events = [e for e in events if e.repository_id == repo]
        by_commit = {e.commit_id: e for e in events}
        # The install commit is itself bundled: lakeFS runs actions of the new state.
        assert set(by_commit) >= {c1, merge}, events
        assert len([e for e in events if e.commit_id in (c1, merge)]) == 2

        e1 = by_commit[c1]
        info = await lakefs.get_commit(repo, c1)
        assert (e1.source, e1.branch_id, e1.commit_message, e1.committer) == (
            "post-commit", "main", info.message, info.committer,
        )
        assert e1.commit_metadata == info.metadata == {"pipeline": "demo"}

        em = by_commit[merge]
        minfo = await lakefs.get_commit(repo, merge)
        assert em.source == "post-merge" and em.branch_id == "main"
        assert em.source_ref == "feature" or em.merge_source == "feature"
        assert em.commit_message == minfo.message
        for key, value, _ in records:
            event = CommitEvent.model_validate_json(value)
            assert key == f"{event.repository_id}/{event.commit_id}".encode()
    finally:
        lakefs.close()


def test_action_template_is_committed() -> None:
    # Package data, so that an installed wheel can render it (hooks/install.py).
    text = (Path(__file__).resolve().parents[2] / "hooks" / "lakefs_action.yaml").read_text()
    assert "LAKEFSACTION_KFM_HOOK_TOKEN" in text and "post-merge" in text
