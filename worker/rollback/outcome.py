"""How a rollback ends, and what it reports: result messages, governance event, story, lineage.

Pure: the handler passes in what it observed (heads, trace ids, run id,
times) and stores or publishes what these return. Every request ends in one
:data:`Outcome`; :func:`final_answer` and :func:`governance_event` turn it
into the stored result and the event, so the four endings are reported the
same way. The story is the record a person reads later to learn why, by whom
and to what a branch was rolled back; its JSON is a format
(``kind: kfm.rollback.story/v1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from worker.canonical import canonical_bytes
from worker.evidence.lineage import JOB_NAMESPACE, bundle_dataset, dataset, run_event
from worker.ledger.row import LedgerRow
from worker.rollback.plan import Change, Plan
from worker.rollback.request import RollbackRequest, RollbackResult, Status

__all__ = [
    "FINAL_STATUSES",
    "STORY_KIND",
    "Completed",
    "DryRun",
    "Failed",
    "GovernanceEvent",
    "Outcome",
    "Rejected",
    "Story",
    "answer",
    "bundle_span",
    "describe_dry_run",
    "final_answer",
    "governance_event",
    "lineage_events",
]

FINAL_STATUSES: Final[frozenset[Status]] = frozenset({"completed", "rejected", "dry-run", "failed"})
"""The statuses that end a request; the others report progress."""

STORY_KIND: Final = "kfm.rollback.story/v1"


@dataclass(frozen=True)
class Rejected:
    """Refused before anything was changed (verification, a missing or dirty branch)."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """The restore started and did not reach a checked end state; the claim lets a retry resume."""

    reason: str


@dataclass(frozen=True)
class DryRun:
    """Verified and planned, nothing changed."""

    plan: Plan
    trace_id: str


@dataclass(frozen=True)
class Completed:
    """Restored, and every check passed."""

    restored_ref: str
    head_before: str
    head_after: str
    changes: tuple[Change, ...]
    members_rehashed: int
    trace_id: str
    bundle_trace_id: str

    def detail(self) -> dict[str, Any]:
        return {
            "restored_ref": self.restored_ref,
            "head_before": self.head_before,
            "head_after": self.head_after,
            "changes": [{"type": c.type, "path": c.path} for c in self.changes],
            # A tree that differs fails the rollback, so a completed one always says True.
            "checks": {"tree_equals_commit": True, "members_rehashed": self.members_rehashed},
            "trace_id": self.trace_id,
            "bundle_trace_id": self.bundle_trace_id,
        }


Outcome = Rejected | Failed | DryRun | Completed


def answer(req: RollbackRequest, status: Status, *, reason: str = "",
           detail: Mapping[str, Any] | None = None) -> RollbackResult:
    """A result message about ``req``; it is final exactly for :data:`FINAL_STATUSES`."""
    return RollbackResult(
        request_id=req.request_id, status=status, final=status in FINAL_STATUSES,
        lakefs_repo=req.lakefs_repo, commit=req.commit, target_branch=req.target_branch,
        strategy=req.strategy, reason=reason, detail=dict(detail or {}),
    )


def final_answer(req: RollbackRequest, outcome: Outcome) -> RollbackResult:
    """The result stored once under ``rollbacks/<request>/result.json`` and published."""
    match outcome:
        case Rejected(reason):
            return answer(req, "rejected", reason=reason)
        case Failed(reason):
            return answer(req, "failed", reason=reason)
        case DryRun(plan, trace_id):
            return answer(req, "dry-run", detail={**plan.detail(), "trace_id": trace_id})
        case Completed():
            return answer(req, "completed", detail=outcome.detail())


_WOULD = {"added": "add", "changed": "change", "removed": "delete"}


def describe_dry_run(result: RollbackResult) -> list[str]:
    """A dry run's answer as `kfm rollback --dry-run` prints it for a person: the ref
    movement, then what the rollback would do to each file, one line each.

    Why from the result message, not the plan: the CLI only sees what the agent
    published (possibly another version of it), so every field is read defensively.
    """
    d = result.detail
    changes = [c for c in d.get("changes", []) if isinstance(c, dict)]
    total = d.get("changed_files", len(changes))
    head = str(d.get("head_before") or "")
    lines = [
        f"dry run of request {result.request_id}: nothing was changed",
        f"  roll back  lakefs://{result.lakefs_repo}/{result.target_branch} to commit {result.commit}"
        f" (strategy {result.strategy}); the bundle and its ledger row verified",
        f"  branch head now  {head or '(no such branch)'}",
        f"  ref movement     {d.get('ref_movement', '?')}",
    ]
    if not total:
        lines.append("  files            none differ: the branch's tree already equals the commit's")
    else:
        lines.append(f"  files            {total} would change (lakeFS diff from the branch head to the commit):")
        width = max(len(w) for w in _WOULD.values())
        for c in changes:
            kind = str(c.get("type", "?"))
            lines.append(f"    {_WOULD.get(kind, kind):<{width}}  {c.get('path', '?')}")
        if total > len(changes):
            lines.append(f"    ... and {total - len(changes)} more (the plan lists the first {len(changes)})")
    models = [str(m) for m in d.get("models_written_back", [])]
    if models:
        lines.append(f"  models           {len(models)} in the registry bucket would be written back:")
        lines.extend(f"    write   {m}" for m in models)
    return lines


@dataclass(frozen=True)
class GovernanceEvent:
    kind: str
    fields: Mapping[str, str]


def governance_event(req: RollbackRequest, outcome: Outcome) -> GovernanceEvent | None:
    """The governance event an ending reports; a dry run changes nothing and reports none."""
    match outcome:
        case Rejected(reason):
            return GovernanceEvent("rollback.rejected", {
                "request_id": req.request_id, "reason": reason, "requested_by": req.requested_by,
            })
        case Failed(reason):
            return GovernanceEvent("rollback.failed", {"request_id": req.request_id, "reason": reason})
        case DryRun():
            return None
        case Completed():
            return GovernanceEvent("rollback.completed", {
                "request_id": req.request_id, "restored_ref": outcome.restored_ref,
                "head_before": outcome.head_before, "head_after": outcome.head_after,
            })


@dataclass(frozen=True)
class Story:
    """``rollbacks/<request>/story.json``: why, who, which commit, what it touched."""

    request_id: str
    why: str
    requested_by: str
    requested_at: str
    which_commit: str
    strategy: str
    upstream: tuple[str, ...]
    downstream: tuple[str, ...]
    bundle_lineage_run: str
    rollback_lineage_run: str
    head_before: str
    head_after: str
    files_changed: int
    rollback_trace: str
    bundle_trace: str

    @classmethod
    def of(cls, req: RollbackRequest, row: LedgerRow, done: Completed, lineage_run: str) -> Story:
        """The story of ``req`` restored from ``row``'s bundle; dependencies come from the row's lineage."""
        return cls(
            request_id=req.request_id,
            why=req.reason,
            requested_by=req.requested_by,
            requested_at=req.requested_at.isoformat(),
            which_commit=req.commit,
            strategy=req.strategy,
            upstream=(f"lakefs://{row.lakefs_repo}/{row.lakefs_commit}", *(s.lakefs_ref for s in row.data_snapshot)),
            downstream=(f"lakefs://{req.lakefs_repo}/{done.restored_ref}", *(m.uri for m in row.models)),
            bundle_lineage_run=row.openlineage_run_id,
            rollback_lineage_run=lineage_run,
            head_before=done.head_before,
            head_after=done.head_after,
            files_changed=len(done.changes),
            rollback_trace=done.trace_id,
            bundle_trace=row.otel_trace_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": STORY_KIND,
            "request_id": self.request_id,
            "why": self.why,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at,
            "which_commit": self.which_commit,
            "strategy": self.strategy,
            "dependencies": {
                "upstream": list(self.upstream),
                "downstream": list(self.downstream),
                "bundle_lineage_run": self.bundle_lineage_run,
                "rollback_lineage_run": self.rollback_lineage_run,
            },
            "before": {"head": self.head_before},
            "after": {"head": self.head_after, "files_changed": self.files_changed},
            "traces": {"rollback": self.rollback_trace, "bundle": self.bundle_trace},
        }

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_dict())


def lineage_events(
    req: RollbackRequest, row: LedgerRow, *, restored: str, run_id: str,
    started: datetime, finished: datetime,
) -> list[dict[str, Any]]:
    """The rollback's OpenLineage run: START and COMPLETE, from the bundle to the restored ref.

    The input is the bundle named by the row's ``artifact_uri``, the same
    dataset its bundling run reported as output.

    Raises:
        ValueError: ``started`` or ``finished`` is not timezone-aware UTC, or
            ``run_id`` is not a UUID.
    """
    job = f"rollback.{req.lakefs_repo}"
    inputs = [bundle_dataset(row.artifact_uri, row.checksums.artifact_sha256)]
    outputs = [dataset(f"lakefs://{req.lakefs_repo}", restored)]
    return [
        run_event("START", run_id=run_id, event_time=started, inputs=inputs,
                  job_namespace=JOB_NAMESPACE, job_name=job),
        run_event("COMPLETE", run_id=run_id, event_time=finished, inputs=inputs, outputs=outputs,
                  job_namespace=JOB_NAMESPACE, job_name=job),
    ]


def bundle_span(otlp: Any) -> tuple[int, int] | None:
    """(trace id, span id) of the bundle run's root span in its stored OTLP JSON
    trace, or None; the rollback's span links to it. A trace that is not OTLP
    JSON has no such span: the link is a convenience, never a reason to fail."""
    try:
        for rs in otlp.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    if s.get("name") == "bundle":
                        return int(s["traceId"], 16), int(s["spanId"], 16)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return None
