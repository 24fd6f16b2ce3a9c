"""The rollback handler driven end to end over an in-memory lakeFS, bucket, producer and ledger.

History: commit A (bundled and recorded), then C on the same line changes a
config, deletes one and adds data, and the model in the registry bucket is
overwritten. Rolling ``prod`` back to A must give A's tree and A's model,
publish the progress and final results, and leave nothing changed whenever
the request is refused. The same flows run against real servers in
tests/integration/test_rollback.py; here every branch of the handler is
reachable in milliseconds, including a crash between claim and commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.lineage_schema import errors as lineage_errors
from tests.unit.bundle.helpers import build_bundle_bytes, golden_key, sign_for
from tests.unit.ledger.factories import make_body
from tests.unit.rollback.fakes import FakeBucket, FakeLakeFS, FakeLedger, FakeProducer, FakeRuntime, sha256
from worker.config import Settings
from worker.constants import TOPIC_GOVERNANCE, TOPIC_LINEAGE, TOPIC_ROLLBACK_RESULTS
from worker.errors import IntegrityError
from worker.io.dead_letters import Refusal
from worker.io.rolling_back import roll_back
from worker.keys import TrustedKeys
from worker.ledger.chain import next_row
from worker.limits import Limits
from worker.rollback.request import RollbackRequest, RollbackResult

REPO = "kfm-main"
BUCKET = "kfm-registry"
MODEL_KEY = "models/focus/1.0.bin"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

TREE_A = {
    "configs/pipeline.yaml": b"threshold: 0.5\n",
    "configs/nested/features.json": b'{"features": ["ndvi"]}',
    "stac/catalog.json": b'{"id":"kfm","type":"Catalog"}',
    "data/tile-1.tif": b"tile-1",
}
TREE_C = {
    **{p: d for p, d in TREE_A.items() if p != "configs/nested/features.json"},
    "configs/pipeline.yaml": b"threshold: 0.99\n",
    "data/tile-2.tif": b"tile-2",
}
MODEL_A, MODEL_C = b"model-A" * 100, b"model-C" * 100
PINNED_STAC = b'{"id":"kfm","links":[],"type":"Catalog"}'  # the bundle's rewrite, pinned to A
BUNDLE_MEMBERS = {
    "lakefs/configs/pipeline.yaml": TREE_A["configs/pipeline.yaml"],
    "lakefs/configs/nested/features.json": TREE_A["configs/nested/features.json"],
    "lakefs/stac/catalog.json": PINNED_STAC,
    f"s3/{BUCKET}/{MODEL_KEY}": MODEL_A,
}


@dataclass
class World:
    rt: FakeRuntime
    ledger: FakeLedger
    trusted: TrustedKeys
    a: str
    c: str

    @property
    def lakefs(self) -> FakeLakeFS:
        return self.rt.lakefs

    def request(self, strategy: str = "revert", **changes: Any) -> RollbackRequest:
        fields: dict[str, Any] = {
            "request_id": "req-00000001", "lakefs_repo": REPO, "commit": self.a, "target_branch": "prod",
            "strategy": strategy, "requested_by": "alice", "reason": "regression in C", "requested_at": T0,
        }
        return RollbackRequest(**{**fields, **changes})

    async def roll_back(self, req: RollbackRequest | bytes) -> RollbackResult:
        value = req if isinstance(req, bytes) else req.to_bytes()
        return await roll_back(self.rt, self.ledger, self.trusted, value)

    def results(self) -> list[dict[str, Any]]:
        return self.rt.producer.on(self.rt.settings.topic(TOPIC_ROLLBACK_RESULTS))

    def events(self) -> list[dict[str, Any]]:
        return self.rt.producer.on(self.rt.settings.topic(TOPIC_GOVERNANCE))

    def stored(self, request_id: str, name: str) -> Any:
        return json.loads(self.rt.bucket.objects[f"rollbacks/{request_id}/{name}"])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    lakefs = FakeLakeFS(REPO)
    a = lakefs.make_commit("prod", TREE_A, "A")
    c = lakefs.make_commit("prod", TREE_C, "C")
    bundle = build_bundle_bytes(tmp_path, BUNDLE_MEMBERS, commit=a)
    bucket = FakeBucket(BUCKET, {
        MODEL_KEY: MODEL_C,
        f"artifacts/{a}.tar.zst": bundle,
        f"attestations/{a}.intoto.jsonl": sign_for(bundle, commit=a),
    })
    row = next_row(None, make_body(
        1, lakefs_repo=REPO, lakefs_commit=a, artifact_uri=f"s3://{BUCKET}/artifacts/{a}.tar.zst",
        checksums={"artifact_sha256": sha256(bundle)},
        signatures={"in_toto": f"s3://{BUCKET}/attestations/{a}.intoto.jsonl", "key_id": "kfm-bundler-2025"},
    ))
    work = tmp_path / "work"
    work.mkdir()
    rt = FakeRuntime(Settings(s3_bucket=BUCKET, topic_prefix="t."), lakefs, FakeProducer(), bucket, work)
    yield World(rt, FakeLedger({a: row}), TrustedKeys([golden_key().public_key()]), a, c)
    assert list(work.iterdir()) == []  # the bundle's work directory never outlives a request


@pytest.mark.parametrize("strategy", ["revert", "reset", "branch"])
async def test_each_strategy_restores_the_commit_and_reports_it(world: World, strategy: str) -> None:
    req = world.request(strategy)
    result = await world.roll_back(req)

    assert result.status == "completed" and result.final, result
    ref = result.detail["restored_ref"]
    assert ref == ("rollback-" + world.a[:12] + "-req-00000001" if strategy == "branch" else "prod")
    assert world.lakefs.tree(ref) == TREE_A
    assert world.rt.bucket.objects[MODEL_KEY] == MODEL_A
    assert world.rt.bucket.objects[f"rollbacks/{req.request_id}/stac/stac/catalog.json"] == PINNED_STAC
    assert [r["status"] for r in world.results()] == ["accepted", "verified", "restoring", "checking", "completed"]
    assert world.results()[-1] == result.model_dump()
    assert world.stored(req.request_id, "result.json") == result.model_dump()
    assert result.detail["head_before"] == world.c
    assert result.detail["head_after"] == world.lakefs.heads[ref]
    assert result.detail["checks"] == {"tree_equals_commit": True, "members_rehashed": 4}
    assert {c["path"] for c in result.detail["changes"]} == {
        "configs/pipeline.yaml", "configs/nested/features.json", "data/tile-2.tif"}

    if strategy == "revert":
        head = world.lakefs.commits[world.lakefs.heads["prod"]]
        assert head.parents == (world.c,)
        assert head.metadata == {"kfm.rollback.commit": world.a, "kfm.rollback.request": req.request_id,
                                 "kfm.rollback.requested_by": "alice"}
    elif strategy == "reset":
        assert world.lakefs.heads["prod"] == world.a
        assert world.lakefs.tags["kfm-pre-rollback-req-00000001"] == world.c
    else:
        assert world.lakefs.heads["prod"] == world.c  # the target branch is left alone

    story = world.stored(req.request_id, "story.json")
    assert story["why"] == "regression in C" and story["which_commit"] == world.a
    assert story["before"] == {"head": world.c}
    assert story["after"] == {"head": world.lakefs.heads[ref], "files_changed": 3}
    lineage = world.rt.producer.on(world.rt.settings.topic(TOPIC_LINEAGE))
    assert [e["eventType"] for e in lineage] == ["START", "COMPLETE"]
    assert world.stored(req.request_id, "openlineage.json") == lineage
    assert [lineage_errors(e) for e in lineage] == [[], []]
    assert story["dependencies"]["rollback_lineage_run"] == lineage[0]["run"]["runId"]
    [event] = world.events()
    assert event["type"] == "rollback.completed" and event["restored_ref"] == ref


async def test_dry_run_plans_and_changes_nothing(world: World) -> None:
    result = await world.roll_back(world.request("reset", dry_run=True))
    assert result.status == "dry-run" and result.final
    assert {k: v for k, v in result.detail.items() if k != "trace_id"} == {
        "head_before": world.c,
        "ref_movement": f"tag {world.c[:12]} as kfm-pre-rollback-*, then reset prod to {world.a[:12]}",
        # The diff is from the branch to the commit: what a revert adds back, changes, removes.
        "changes": [{"type": "added", "path": "configs/nested/features.json"},
                    {"type": "changed", "path": "configs/pipeline.yaml"},
                    {"type": "removed", "path": "data/tile-2.tif"}],
        "changed_files": 3,
        # Outside lakeFS, so in no diff: the model the restore would write back in the registry bucket.
        "models_written_back": [f"s3://{BUCKET}/{MODEL_KEY}"],
    }
    assert world.lakefs.mutations == []
    assert world.rt.bucket.objects[MODEL_KEY] == MODEL_C
    assert [r["status"] for r in world.results()] == ["accepted", "verified", "dry-run"]
    assert world.events() == []


async def test_a_redelivered_request_is_answered_with_its_stored_result(world: World) -> None:
    req = world.request("revert")
    first = await world.roll_back(req)
    mutations = list(world.lakefs.mutations)
    again = await world.roll_back(req)
    assert again == first
    assert world.lakefs.mutations == mutations  # nothing done twice
    assert world.results()[-1] == first.model_dump()
    assert len(world.events()) == 1


async def test_a_second_request_for_the_same_state_commits_nothing(world: World) -> None:
    await world.roll_back(world.request("revert"))
    head = world.lakefs.heads["prod"]
    second = await world.roll_back(world.request("revert", request_id="req-00000002"))
    assert second.status == "completed"
    assert world.lakefs.heads["prod"] == head


async def test_a_crash_after_the_claim_resumes_with_the_claimed_head(world: World) -> None:
    req = world.request("revert")
    # The first attempt claimed (head C), copied one file, and died before its commit.
    claim = {"head_before": world.c, "request_id": req.request_id, "strategy": "revert"}
    world.rt.bucket.objects[f"rollbacks/{req.request_id}/claim.json"] = json.dumps(claim).encode()
    await world.lakefs.copy_from(REPO, "prod", "configs/pipeline.yaml", world.a)
    result = await world.roll_back(req)
    assert result.status == "completed", result  # its own staged change does not count as someone's work
    assert result.detail["head_before"] == world.c
    assert world.lakefs.commits[world.lakefs.heads["prod"]].parents == (world.c,)
    assert world.lakefs.tree("prod") == TREE_A


def _tamper(w: World) -> None:
    key = f"artifacts/{w.a}.tar.zst"
    data = bytearray(w.rt.bucket.objects[key])
    data[len(data) // 2] ^= 0xFF
    w.rt.bucket.objects[key] = bytes(data)


def _stranger(w: World) -> None:
    w.trusted = TrustedKeys([Ed25519PrivateKey.from_private_bytes(b"\x07" * 32).public_key()])


def _over_a_configured_limit(w: World) -> None:
    w.rt.settings = Settings(s3_bucket=BUCKET, topic_prefix="t.", limits=Limits(max_member_bytes=100))


def _recorded_with_another_commits_bundle(w: World) -> None:
    """C's signed bundle under A's name, and A's row recording its digest (as a faulty writer might)."""
    work = w.rt.work_dir.parent / "swap"
    work.mkdir()
    bundle = build_bundle_bytes(work, BUNDLE_MEMBERS, commit=w.c)
    w.rt.bucket.objects[f"artifacts/{w.a}.tar.zst"] = bundle
    w.rt.bucket.objects[f"attestations/{w.a}.intoto.jsonl"] = sign_for(bundle, commit=w.c)
    row = w.ledger.rows[w.a]
    w.ledger.rows[w.a] = row.model_copy(
        update={"checksums": row.checksums.model_copy(update={"artifact_sha256": sha256(bundle)})})


# (name, setup, request changes, reason, dead-letter reason): the request's own fault (what it
# names does not verify against the ledger) is dead-lettered too; the state of the world is not.
REFUSALS: list[tuple[str, Any, dict[str, Any], str, str | None]] = [
    ("over a configured limit", _over_a_configured_limit, {},
     f"member s3/{BUCKET}/{MODEL_KEY}: size 700 exceeds max_member_bytes 100", "unverified"),
    ("another commit's bundle", _recorded_with_another_commits_bundle, {}, "attestation: is for commit ",
     "unverified"),
    ("never bundled", None, {"commit": "f" * 64}, "no ledger row for commit " + "f" * 64, None),
    ("other repository", None, {"lakefs_repo": "kfm-other"}, "belongs to repository kfm-main, not kfm-other",
     "unverified"),
    ("another bundle named", None, {"bundle_uri": f"s3://{BUCKET}/artifacts/other.tar.zst"},
     "is not the recorded bundle", "unverified"),
    ("tampered bundle", _tamper, {}, "does not match the ledger row", "unverified"),
    ("untrusted signer", _stranger, {}, "key", "unknown_key"),
    ("no inclusion proof", lambda w: w.ledger.unprovable.add(w.a), {}, "inclusion proof", "unverified"),
    ("missing branch", None, {"target_branch": "nope"}, "target branch nope does not exist", None),
    ("uncommitted work", lambda w: w.lakefs.staging["prod"].update({"configs/wip.yaml": b"wip"}), {},
     "target branch prod has uncommitted changes; commit or reset them first", None),
]


@pytest.mark.parametrize(("setup", "changes", "reason", "dead_letter"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("strategy", ["revert", "reset"])
async def test_refusals_change_nothing(world: World, setup: Any, changes: dict[str, Any], reason: str,
                                       dead_letter: str | None, strategy: str) -> None:
    if setup is not None:
        setup(world)
    heads = dict(world.lakefs.heads)
    req = world.request(strategy, **changes)
    refusals: list[Refusal] = []

    async def refused(r: Refusal) -> None:
        refusals.append(r)

    result = await roll_back(world.rt, world.ledger, world.trusted, req.to_bytes(), refused=refused)
    assert result.status == "rejected" and result.final and reason in result.reason, result
    assert "\n" not in result.reason
    assert world.lakefs.mutations == [] and world.lakefs.heads == heads
    assert world.rt.bucket.objects[MODEL_KEY] == MODEL_C
    assert world.stored(req.request_id, "result.json") == result.model_dump()
    [event] = world.events()
    assert event["type"] == "rollback.rejected" and event["reason"] == result.reason
    assert event["requested_by"] == "alice"
    assert [(str(r.reason), r.message) for r in refusals] == ([(dead_letter, result.reason)] if dead_letter else [])


async def test_branch_strategy_ignores_uncommitted_work_on_the_target(world: World) -> None:
    world.lakefs.staging["prod"]["configs/wip.yaml"] = b"wip"
    result = await world.roll_back(world.request("branch"))
    assert result.status == "completed"
    assert world.lakefs.staging["prod"]["configs/wip.yaml"] == b"wip"


class _LossyLakeFS(FakeLakeFS):
    """Copies every object but the config, as a lakeFS that silently lost a write would."""

    async def copy_from(self, repo: str, branch: str, path: str, src_ref: str) -> None:
        if path != "configs/pipeline.yaml":
            await super().copy_from(repo, branch, path, src_ref)


async def test_a_restore_that_does_not_check_out_fails_loudly(world: World) -> None:
    lossy = _LossyLakeFS(REPO)
    lossy.__dict__.update(world.lakefs.__dict__)
    world.rt.lakefs = lossy
    result = await world.roll_back(world.request("revert"))
    assert result.status == "failed" and result.final
    assert result.reason == f"restored prod still differs from {world.a[:12]} at 1 paths"
    assert [r["status"] for r in world.results()][-1] == "failed"
    [event] = world.events()
    assert event["type"] == "rollback.failed" and event["reason"] == result.reason


class _StacRefusingBucket(FakeBucket):
    """Refuses every published STAC document, as a bucket whose policy forbids the prefix would."""

    async def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        if "/stac/" in key:
            raise IntegrityError(f"s3: put {key}: AccessDenied")
        return await super().put(key, data, if_none_match=if_none_match, if_match=if_match)


async def test_a_refused_stac_publication_fails_the_rollback_before_the_check_and_records_nothing(
    world: World,
) -> None:
    """Step 4 before step 5: with the publishing refused and a tree that would not check out
    either, the reason is the publishing's, and no story is recorded."""
    lossy = _LossyLakeFS(REPO)
    lossy.__dict__.update(world.lakefs.__dict__)
    world.rt.lakefs = lossy
    world.rt.bucket = _StacRefusingBucket(BUCKET, world.rt.bucket.objects)
    req = world.request("revert")
    result = await world.roll_back(req)
    assert result.status == "failed" and result.final
    assert result.reason == f"s3: put rollbacks/{req.request_id}/stac/stac/catalog.json: AccessDenied"
    assert f"rollbacks/{req.request_id}/story.json" not in world.rt.bucket.objects
    assert world.stored(req.request_id, "result.json")["status"] == "failed"


async def test_a_model_from_an_unreachable_bucket_fails_the_rollback(world: World, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    bundle = build_bundle_bytes(tmp_path / "other", {**BUNDLE_MEMBERS, "s3/elsewhere/m.bin": b"m"}, commit=world.a)
    world.rt.bucket.objects[f"artifacts/{world.a}.tar.zst"] = bundle
    world.rt.bucket.objects[f"attestations/{world.a}.intoto.jsonl"] = sign_for(bundle, commit=world.a)
    row = world.ledger.rows[world.a]
    world.ledger.rows[world.a] = row.model_copy(
        update={"checksums": row.checksums.model_copy(update={"artifact_sha256": sha256(bundle)})})
    # A dry run says so before anything would be done: it answers what the real run would meet.
    dry = await world.roll_back(world.request("branch", dry_run=True, request_id="req-dry-0001"))
    assert dry.status == "rejected"
    assert dry.reason == "cannot restore s3/elsewhere/m.bin: bucket elsewhere is not reachable"
    result = await world.roll_back(world.request("branch"))
    assert result.status == "failed"
    assert result.reason == "cannot restore s3/elsewhere/m.bin: bucket elsewhere is not reachable"


@pytest.mark.parametrize(
    ("value", "request_id"),
    [(b'{"request_id": "req-00000009", "commit": "nope"}', "req-00000009"), (b"\xff not json", "unknown"),
     (b"[1, 2]", "unknown")],
)
async def test_an_invalid_request_is_refused_under_its_id(world: World, value: bytes, request_id: str) -> None:
    result = await world.roll_back(value)
    assert result.status == "rejected" and result.final and result.request_id == request_id
    assert result.reason.startswith("invalid rollback request: ")
    assert world.results() == [result.model_dump()]
    assert world.lakefs.mutations == [] and world.events() == []
