"""The rollback's decisions, with plain values: which row and bundle, the plan, the claim, the steps, the targets."""

from __future__ import annotations

import pytest

from tests.unit.rollback.factories import COMMIT, DIGEST, HEAD, request, row
from worker.errors import IntegrityError
from worker.ledger.row import LedgerRow
from worker.rollback.plan import (
    MAX_LISTED_CHANGES,
    Change,
    Claim,
    LakeFSTarget,
    Plan,
    RecordedBundle,
    RevertSteps,
    S3Target,
    check_bundle_digest,
    locate_bundle,
    make_plan,
    member_targets,
    must_be_clean,
    pre_rollback_tag,
    restored_ref,
    revert_commit,
    revert_steps,
    rollback_branch_name,
    rollback_key,
    stac_key,
)
from worker.rollback.request import RollbackRequest
from worker.snapshot.select import SnapshotRules


def test_names_and_keys() -> None:
    assert rollback_key("req-2026-000042", "claim.json") == "rollbacks/req-2026-000042/claim.json"
    assert stac_key("req-2026-000042", "stac/catalog.json") == "rollbacks/req-2026-000042/stac/stac/catalog.json"
    # lakeFS branch ids cannot hold "/": the branch is rollback-<commit12>-<request12>.
    assert rollback_branch_name(COMMIT, "req-2026-000042") == "rollback-a1b2c3d4e5f6-req-2026-000"
    assert pre_rollback_tag("req-2026-000042") == "kfm-pre-rollback-req-2026-000"
    assert restored_ref(request(strategy="branch")) == "rollback-a1b2c3d4e5f6-req-2026-000"
    assert restored_ref(request(strategy="reset")) == restored_ref(request(strategy="revert")) == "prod"


def test_locate_bundle_accepts_the_recorded_row() -> None:
    r = row()
    assert locate_bundle(request(), r, "kfm-registry") == RecordedBundle(
        r, f"artifacts/{COMMIT}.tar.zst", f"attestations/{COMMIT}.intoto.jsonl")
    named = request(bundle_uri=f"s3://kfm-registry/artifacts/{COMMIT}.tar.zst")
    assert locate_bundle(named, r, "kfm-registry").bundle_key == f"artifacts/{COMMIT}.tar.zst"


@pytest.mark.parametrize(
    ("req", "found", "message"),
    [
        (request(), None, f"no ledger row for commit {COMMIT}: it was never bundled"),
        (request(lakefs_repo="kfm-other"), row(),
         "commit a1b2c3d4e5f6 belongs to repository kfm-main, not kfm-other"),
        (request(bundle_uri="s3://kfm-registry/artifacts/x.tar.zst"), row(),
         f"bundle s3://kfm-registry/artifacts/x.tar.zst is not the recorded bundle "
         f"s3://kfm-registry/artifacts/{COMMIT}.tar.zst"),
        (request(), row(artifact_uri="s3://elsewhere/a.tar.zst"), "the recorded bundle is outside the registry bucket"),
        (request(), row(signatures={"in_toto": "s3://elsewhere/a.jsonl", "key_id": "k"}),
         "the recorded bundle is outside the registry bucket"),
        # A bucket whose name extends the registry's is another bucket.
        (request(), row(artifact_uri="s3://kfm-registry-2/a.tar.zst"), "outside the registry bucket"),
    ],
    ids=["no row", "other repo", "other bundle", "bundle elsewhere", "attestation elsewhere", "prefix bucket"],
)
def test_locate_bundle_refusals(req: RollbackRequest, found: LedgerRow | None, message: str) -> None:
    with pytest.raises(IntegrityError) as e:
        locate_bundle(req, found, "kfm-registry")
    assert message in str(e.value)


def test_the_downloaded_bundle_must_be_the_rows() -> None:
    check_bundle_digest(DIGEST, row())
    with pytest.raises(IntegrityError) as digest:
        check_bundle_digest("e" * 64, row())
    assert str(digest.value) == f"bundle sha256 {'e' * 64} does not match the ledger row ({DIGEST})"


DIFF = [("removed", "data/tile-2.tif"), ("added", "configs/nested/f.json"), ("changed", "configs/p.yaml")]


@pytest.mark.parametrize(
    ("strategy", "movement"),
    [
        ("revert", "new commit on prod whose tree equals a1b2c3d4e5f6"),
        ("reset", "tag ffeeddccbbaa as kfm-pre-rollback-*, then reset prod to a1b2c3d4e5f6"),
        ("branch", "create rollback-a1b2c3d4e5f6-req-2026-000 at a1b2c3d4e5f6"),
    ],
)
def test_plan_golden(strategy: str, movement: str) -> None:
    plan = make_plan(request(strategy=strategy), HEAD, DIFF)
    assert plan.detail() == {
        "head_before": HEAD,
        "ref_movement": movement,
        "changes": [
            {"type": "added", "path": "configs/nested/f.json"},
            {"type": "changed", "path": "configs/p.yaml"},
            {"type": "removed", "path": "data/tile-2.tif"},
        ],
        "changed_files": 3,
        "models_written_back": [],
    }


def test_plan_for_a_new_branch_needs_no_target() -> None:
    assert make_plan(request(strategy="branch", target_branch="gone"), None, []) == Plan(
        head_before="", ref_movement="create rollback-a1b2c3d4e5f6-req-2026-000 at a1b2c3d4e5f6",
        changes=(), changed_files=0)


@pytest.mark.parametrize("strategy", ["revert", "reset"])
def test_plan_refuses_a_missing_target_branch(strategy: str) -> None:
    with pytest.raises(IntegrityError) as e:
        make_plan(request(strategy=strategy, target_branch="gone"), None, [])
    assert str(e.value) == "target branch gone does not exist"


def test_plan_lists_a_bounded_number_of_changes_and_counts_all() -> None:
    diff = [("changed", f"p/{i:06d}") for i in range(MAX_LISTED_CHANGES + 5, 0, -1)]
    plan = make_plan(request(), HEAD, diff)
    assert plan.changed_files == MAX_LISTED_CHANGES + 5
    assert len(plan.changes) == MAX_LISTED_CHANGES
    assert plan.changes[0] == Change("changed", "p/000001")  # sorted by path before the cut


@pytest.mark.parametrize(
    ("strategy", "resuming", "expected"),
    [("revert", False, True), ("reset", False, True), ("branch", False, False),
     ("revert", True, False), ("reset", True, False), ("branch", True, False)],
)
def test_must_be_clean(strategy: str, resuming: bool, expected: bool) -> None:
    assert must_be_clean(request(strategy=strategy), resuming) is expected


def test_claim_bytes_golden_and_round_trip() -> None:
    claim = Claim("req-2026-000042", HEAD, "reset")
    assert claim.to_bytes() == (
        b'{"head_before":"' + HEAD.encode() + b'","request_id":"req-2026-000042","strategy":"reset"}'
    )
    assert Claim.from_bytes(claim.to_bytes()) == claim


@pytest.mark.parametrize("data", [b"", b"[]", b'{"request_id": "r"}', b"\xff"])
def test_a_malformed_claim_is_an_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError, match="stored rollback claim is malformed"):
        Claim.from_bytes(data)


def test_revert_steps() -> None:
    assert revert_steps([]) is None  # the trees are equal: no commit
    assert revert_steps(DIFF) == RevertSteps(copy=("configs/nested/f.json", "configs/p.yaml"),
                                             delete=("data/tile-2.tif",))
    # lakeFS reports only these three types for objects; anything else is neither copied nor deleted.
    assert revert_steps([("conflict", "x")]) == RevertSteps(copy=(), delete=())


def test_revert_commit() -> None:
    assert revert_commit(request()) == (
        "kfm rollback to a1b2c3d4e5f6 (request req-2026-000042)",
        {"kfm.rollback.commit": COMMIT, "kfm.rollback.request": "req-2026-000042",
         "kfm.rollback.requested_by": "alice"},
    )


def test_member_targets_golden() -> None:
    members = {
        "s3/kfm-registry/models/focus/1.0.bin": "1" * 64,
        "lakefs/stac/catalog.json": "2" * 64,
        "lakefs/configs/pipeline.yaml": "3" * 64,
        "lakefs/stac/readme.txt": "4" * 64,
        "manifest-extra/x": "5" * 64,
    }
    assert member_targets(members, "kfm-registry", SnapshotRules()) == (
        LakeFSTarget("lakefs/configs/pipeline.yaml", "configs/pipeline.yaml", stac=False, sha256="3" * 64),
        LakeFSTarget("lakefs/stac/catalog.json", "stac/catalog.json", stac=True, sha256="2" * 64),
        LakeFSTarget("lakefs/stac/readme.txt", "stac/readme.txt", stac=False, sha256="4" * 64),
        S3Target("s3/kfm-registry/models/focus/1.0.bin", "models/focus/1.0.bin", sha256="1" * 64),
    )
    catalog = member_targets(members, "kfm-registry", SnapshotRules(stac_prefixes=()))[1]
    assert isinstance(catalog, LakeFSTarget) and catalog.stac is False


def test_member_targets_refuse_another_bucket() -> None:
    members = {"s3/a-models/m.bin": "1" * 64, "s3/b-models/m.bin": "2" * 64}
    with pytest.raises(IntegrityError) as e:
        member_targets(members, "kfm-registry", SnapshotRules())
    assert str(e.value) == "cannot restore s3/a-models/m.bin: bucket a-models is not reachable"  # the first, sorted
