"""How a rollback ends and what it reports: result messages, governance events, story, lineage (golden)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.unit.rollback.factories import COMMIT, HEAD, request, row
from worker.evidence.lineage import DIGEST_FACET, DIGEST_FACET_SCHEMA_URL, PRODUCER
from worker.rollback.outcome import (
    FINAL_STATUSES,
    Completed,
    DryRun,
    Failed,
    GovernanceEvent,
    Outcome,
    Rejected,
    Story,
    answer,
    bundle_span,
    describe_dry_run,
    final_answer,
    governance_event,
    lineage_events,
)
from worker.rollback.plan import Change, Plan
from worker.rollback.request import Status

AFTER = "0123456789ab" + "2" * 52
DONE = Completed(
    restored_ref="prod", head_before=HEAD, head_after=AFTER,
    changes=(Change("added", "configs/f.json"), Change("removed", "data/t.tif")),
    members_rehashed=4, trace_id="ab" * 16, bundle_trace_id="cd" * 16,
)
PLAN = Plan(head_before=HEAD, ref_movement="new commit on prod whose tree equals a1b2c3d4e5f6",
            changes=(Change("changed", "configs/p.yaml"),), changed_files=1)
BASE = {"request_id": "req-2026-000042", "lakefs_repo": "kfm-main", "commit": COMMIT, "target_branch": "prod",
        "strategy": "revert"}


def test_progress_answers_are_not_final() -> None:
    progress: tuple[Status, ...] = ("accepted", "verified", "restoring", "checking")
    for status in progress:
        assert not answer(request(), status).final
    assert {"completed", "rejected", "dry-run", "failed"} == FINAL_STATUSES
    assert answer(request(), "verified", detail={"seq": 3}).model_dump() == {
        **BASE, "status": "verified", "final": False, "reason": "", "detail": {"seq": 3}}


FINALS: list[tuple[Outcome, str, str, dict[str, Any]]] = [
    (Rejected("no ledger row"), "rejected", "no ledger row", {}),
    (Failed("restored prod lacks x"), "failed", "restored prod lacks x", {}),
    (DryRun(PLAN, "ab" * 16), "dry-run", "", {
        "head_before": HEAD, "ref_movement": "new commit on prod whose tree equals a1b2c3d4e5f6",
        "changes": [{"type": "changed", "path": "configs/p.yaml"}], "changed_files": 1, "models_written_back": [],
        "trace_id": "ab" * 16}),
    (DONE, "completed", "", {
        "restored_ref": "prod", "head_before": HEAD, "head_after": AFTER,
        "changes": [{"type": "added", "path": "configs/f.json"}, {"type": "removed", "path": "data/t.tif"}],
        "checks": {"tree_equals_commit": True, "members_rehashed": 4},
        "trace_id": "ab" * 16, "bundle_trace_id": "cd" * 16}),
]


@pytest.mark.parametrize(("outcome", "status", "reason", "detail"), FINALS, ids=[f[1] for f in FINALS])
def test_final_answer_golden(outcome: Outcome, status: str, reason: str, detail: dict[str, Any]) -> None:
    result = final_answer(request(), outcome)
    assert result.final
    # The bytes on the results topic and in result.json: field order and detail order are kept.
    assert result.to_bytes() == json.dumps(
        {"request_id": BASE["request_id"], "status": status, "final": True, "lakefs_repo": "kfm-main",
         "commit": COMMIT, "target_branch": "prod", "strategy": "revert", "reason": reason, "detail": detail},
        separators=(",", ":"),
    ).encode()


def test_governance_events() -> None:
    req = request()
    assert governance_event(req, Rejected("why not")) == GovernanceEvent(
        "rollback.rejected", {"request_id": req.request_id, "reason": "why not", "requested_by": "alice"})
    assert governance_event(req, Failed("broke")) == GovernanceEvent(
        "rollback.failed", {"request_id": req.request_id, "reason": "broke"})
    assert governance_event(req, DryRun(PLAN, "")) is None  # nothing changed, nothing to govern
    assert governance_event(req, DONE) == GovernanceEvent(
        "rollback.completed",
        {"request_id": req.request_id, "restored_ref": "prod", "head_before": HEAD, "head_after": AFTER})


def test_story_golden() -> None:
    r = row(data_snapshot=[{"stac": "s3://kfm-stac/c/collection.json", "lakefs_ref": f"lakefs://kfm-main/{COMMIT}/stac/c/"}],
            models=[{"name": "m", "version": "1", "uri": "s3://models/m/1.bin", "sha256": "9" * 64}])
    story = Story.of(request(), r, DONE, "11111111-2222-4333-8444-555555555555")
    assert story.to_dict() == {
        "kind": "kfm.rollback.story/v1",
        "request_id": "req-2026-000042",
        "why": "bad tiles",
        "requested_by": "alice",
        "requested_at": "2026-11-26T10:00:00+00:00",
        "which_commit": COMMIT,
        "strategy": "revert",
        "dependencies": {
            "upstream": [f"lakefs://kfm-main/{COMMIT}", f"lakefs://kfm-main/{COMMIT}/stac/c/"],
            "downstream": ["lakefs://kfm-main/prod", "s3://models/m/1.bin"],
            "bundle_lineage_run": r.openlineage_run_id,
            "rollback_lineage_run": "11111111-2222-4333-8444-555555555555",
        },
        "before": {"head": HEAD},
        "after": {"head": AFTER, "files_changed": 2},
        "traces": {"rollback": "ab" * 16, "bundle": r.otel_trace_id},
    }
    assert story.to_bytes().startswith(b'{"after":{"files_changed":2,"head":"')  # canonical: sorted keys


def test_lineage_events_golden() -> None:
    r = row()
    start, end = datetime(2026, 11, 26, 10, 0, tzinfo=UTC), datetime(2026, 11, 26, 10, 0, 3, 500000, tzinfo=UTC)
    run = "22222222-3333-4444-8555-666666666666"
    events = lineage_events(request(), r, restored="prod", run_id=run, started=start, finished=end)
    dataset_in = {"namespace": "s3://kfm-registry", "name": f"artifacts/{COMMIT}.tar.zst", "inputFacets": {},
                  "facets": {DIGEST_FACET: {"_producer": PRODUCER, "_schemaURL": DIGEST_FACET_SCHEMA_URL,
                                            "sha256": r.checksums.artifact_sha256}}}
    assert [(e["eventType"], e["eventTime"], e["run"]["runId"], e["job"]["name"]) for e in events] == [
        ("START", "2026-11-26T10:00:00Z", run, "rollback.kfm-main"),
        ("COMPLETE", "2026-11-26T10:00:03.500000Z", run, "rollback.kfm-main"),
    ]
    assert events[0]["inputs"] == events[1]["inputs"] == [dataset_in]
    assert events[0]["outputs"] == []
    assert events[1]["outputs"] == [{"namespace": "lakefs://kfm-main", "name": "prod", "facets": {},
                                     "outputFacets": {}}]


def _otlp(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}


def test_bundle_span_finds_the_bundle_root_span() -> None:
    doc = _otlp({"name": "stage", "traceId": "01" * 16, "spanId": "02" * 8},
                {"name": "bundle", "traceId": "0a" * 16, "spanId": "0b" * 8})
    assert bundle_span(doc) == (int("0a" * 16, 16), int("0b" * 8, 16))


@pytest.mark.parametrize(
    "doc",
    [{}, [], "x", None, _otlp({"name": "stage"}), _otlp({"name": "bundle", "traceId": "zz", "spanId": "01"}),
     _otlp({"name": "bundle"}), {"resourceSpans": [1]}],
    ids=["empty", "list", "string", "null", "no bundle span", "bad hex", "no ids", "not objects"],
)
def test_bundle_span_of_anything_else_is_none(doc: Any) -> None:
    assert bundle_span(doc) is None


def test_a_dry_run_is_described_file_by_file() -> None:
    plan = Plan(head_before=HEAD, ref_movement="new commit on prod whose tree equals a1b2c3d4e5f6",
                changes=(Change("added", "a.json"), Change("changed", "configs/p.yaml"), Change("removed", "t.tif")),
                changed_files=5)
    lines = describe_dry_run(final_answer(request(), DryRun(plan, "ab" * 16)))
    assert lines[0] == "dry run of request req-2026-000042: nothing was changed"
    assert lines[1] == (f"  roll back  lakefs://kfm-main/prod to commit {COMMIT} (strategy revert); "
                        "the bundle and its ledger row verified")
    assert lines[2:] == [
        f"  branch head now  {HEAD}",
        "  ref movement     new commit on prod whose tree equals a1b2c3d4e5f6",
        "  files            5 would change (lakeFS diff from the branch head to the commit):",
        "    add     a.json",
        "    change  configs/p.yaml",
        "    delete  t.tif",
        "    ... and 2 more (the plan lists the first 3)",
    ]
    same = describe_dry_run(final_answer(request(), DryRun(Plan(HEAD, "x", (), 0), "")))
    assert same[-1] == "  files            none differ: the branch's tree already equals the commit's"
    models = Plan(HEAD, "x", (Change("changed", "c.yaml"),), 1, models_written_back=("s3://reg/models/m.bin",))
    assert describe_dry_run(final_answer(request(), DryRun(models, "")))[-3:] == [
        "    change  c.yaml",
        "  models           1 in the registry bucket would be written back:",
        "    write   s3://reg/models/m.bin",
    ]
