"""What a rollback does, decided without I/O.

The rollback handler (``worker/io/rolling_back.py``) reads lakeFS, the
registry bucket and the ledger, hands what it read to these functions, and
carries out what they return. Everything that decides (which row and bundle
are acceptable, how the ref moves, which paths a revert copies and deletes,
where each bundle member goes back to) lives here, so it is tested with plain
values and reads the same in every strategy; how a request ends and what it
reports is :mod:`worker.rollback.outcome`.

Names the handler and the docs share:
    * ``rollbacks/<request>/`` holds the claim, the result, the story, the
      lineage events and the published STAC of one request (:func:`rollback_key`).
    * ``rollback-<commit12>-<request12>``: the branch of strategy ``branch``.
      lakeFS branch ids are ``[A-Za-z0-9_-]``, so ``rollback/<commit>-<request>``
      cannot be one and the slash became a dash.
    * ``kfm-pre-rollback-<request12>``: the tag that keeps the head a
      ``reset`` moves away from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from worker.canonical import canonical_bytes
from worker.constants import ROLLBACKS_PREFIX
from worker.errors import IntegrityError, VerificationError
from worker.ids import s3_key_in
from worker.ledger.row import LedgerRow
from worker.rollback.request import RollbackRequest, Strategy
from worker.snapshot.select import SnapshotRules, is_stac, lakefs_path_of, s3_source_of

__all__ = [
    "MAX_LISTED_CHANGES",
    "Change",
    "Claim",
    "LakeFSTarget",
    "Plan",
    "RecordedBundle",
    "RevertSteps",
    "S3Target",
    "Target",
    "check_bundle_digest",
    "locate_bundle",
    "make_plan",
    "member_targets",
    "must_be_clean",
    "pre_rollback_tag",
    "restored_ref",
    "revert_commit",
    "revert_steps",
    "rollback_branch_name",
    "rollback_key",
    "stac_key",
]

MAX_LISTED_CHANGES: Final = 10_000
"""A plan lists at most this many changed paths (and counts all of them), so
that a result message stays small whatever the size of the diff."""

def rollback_key(request_id: str, name: str) -> str:
    """Where a request keeps ``name`` in the registry bucket."""
    return f"{ROLLBACKS_PREFIX}{request_id}/{name}"


def stac_key(request_id: str, path: str) -> str:
    """Where the pinned STAC document at lakeFS ``path`` is published with the rollback."""
    return rollback_key(request_id, "stac/" + path)


def rollback_branch_name(commit: str, request_id: str) -> str:
    return f"rollback-{commit[:12]}-{request_id[:12]}"


def pre_rollback_tag(request_id: str) -> str:
    return f"kfm-pre-rollback-{request_id[:12]}"


def restored_ref(req: RollbackRequest) -> str:
    """The lakeFS ref that holds the commit's tree once the rollback is done."""
    if req.strategy == "branch":
        return rollback_branch_name(req.commit, req.request_id)
    return req.target_branch


# Step 1: verify. Each check raises IntegrityError; the handler turns any into "rejected". A
# VerificationError is the request's own fault (it names what the ledger does not record), so the
# handler also dead-letters the request.


@dataclass(frozen=True)
class RecordedBundle:
    """The ledger row accepted for a request, and its bundle's and attestation's keys in the registry bucket."""

    row: LedgerRow
    bundle_key: str
    envelope_key: str


def locate_bundle(req: RollbackRequest, row: LedgerRow | None, bucket: str) -> RecordedBundle:
    """Accept the ledger row for ``req`` and say where its bundle and attestation are.

    Raises:
        VerificationError: the row is another repository's, or the request
            names another bundle than the row records.
        IntegrityError: no row (yet); or the bundle is outside the registry
            bucket (a restore reads only what the registry wrote).
    """
    if row is None:
        raise IntegrityError(f"no ledger row for commit {req.commit}: it was never bundled")
    if row.lakefs_repo != req.lakefs_repo:
        raise VerificationError(
            f"commit {req.commit[:12]} belongs to repository {row.lakefs_repo}, not {req.lakefs_repo}"
        )
    if req.bundle_uri and req.bundle_uri != row.artifact_uri:
        raise VerificationError(f"bundle {req.bundle_uri} is not the recorded bundle {row.artifact_uri}")
    bundle_key, attestation_key = s3_key_in(row.artifact_uri, bucket), s3_key_in(row.signatures.in_toto, bucket)
    if bundle_key is None or attestation_key is None:
        raise IntegrityError("the recorded bundle is outside the registry bucket")
    return RecordedBundle(row, bundle_key, attestation_key)


def check_bundle_digest(digest: str, row: LedgerRow) -> None:
    """Raises: VerificationError if the downloaded bundle is not the one the row records (the same
    refusal :func:`worker.io.verifying.check_bundle` would make, only before any parsing)."""
    if digest != row.checksums.artifact_sha256:
        raise VerificationError(
            f"bundle sha256 {digest} does not match the ledger row ({row.checksums.artifact_sha256})"
        )


# Step 2: plan.


@dataclass(frozen=True)
class Change:
    """One path that differs between the target branch and the commit (lakeFS two-dot diff)."""

    type: str
    path: str


@dataclass(frozen=True)
class Plan:
    """The ref movement and the files that differ: what a dry run answers."""

    head_before: str
    ref_movement: str
    changes: tuple[Change, ...]
    changed_files: int
    models_written_back: tuple[str, ...] = ()
    """``s3://`` URIs of the models kept in the registry bucket that the restore overwrites
    (:func:`with_models`); outside lakeFS, so no diff shows them."""

    def detail(self) -> dict[str, Any]:
        return {
            "head_before": self.head_before,
            "ref_movement": self.ref_movement,
            "changes": [{"type": c.type, "path": c.path} for c in self.changes],
            "changed_files": self.changed_files,
            "models_written_back": list(self.models_written_back),
        }

    def with_models(self, targets: Sequence[Target], bucket: str) -> Plan:
        """The plan naming the registry-bucket models among ``targets`` (:func:`member_targets`)."""
        uris = tuple(f"s3://{bucket}/{t.key}" for t in targets if isinstance(t, S3Target))
        return replace(self, models_written_back=uris)


def make_plan(req: RollbackRequest, head: str | None, diff: Sequence[tuple[str, str]]) -> Plan:
    """The plan for ``req``, given the target branch's head (None: no such branch)
    and its ``(type, path)`` diff to the commit (empty when there is no branch).

    Raises:
        IntegrityError: the target branch does not exist and the strategy needs it.
    """
    if head is None and req.strategy != "branch":
        raise IntegrityError(f"target branch {req.target_branch} does not exist")
    c12 = req.commit[:12]
    movements: dict[Strategy, str] = {
        "revert": f"new commit on {req.target_branch} whose tree equals {c12}",
        "reset": f"tag {head[:12] if head else '-'} as kfm-pre-rollback-*, then reset {req.target_branch} to {c12}",
        "branch": f"create {rollback_branch_name(req.commit, req.request_id)} at {c12}",
    }
    by_path = sorted(diff, key=lambda change: change[1])
    return Plan(
        head_before=head or "",
        ref_movement=movements[req.strategy],
        changes=tuple(Change(t, p) for t, p in by_path[:MAX_LISTED_CHANGES]),
        changed_files=len(diff),
    )


def must_be_clean(req: RollbackRequest, resuming: bool) -> bool:
    """Whether the target branch must have no uncommitted changes before the restore.

    A revert commits what is staged and a reset discards it: neither may touch
    someone else's work. A new branch touches nothing staged, and a request
    resuming its own claim finds its own partial restore staged.
    """
    return req.strategy != "branch" and not resuming


# Step 3: claim.


@dataclass(frozen=True)
class Claim:
    """``rollbacks/<request>/claim.json``: the head before the restore, stored once,
    so that a restart after a crash resumes with the same plan."""

    request_id: str
    head_before: str
    strategy: str

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {"request_id": self.request_id, "head_before": self.head_before, "strategy": self.strategy}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Claim:
        """Raises: IntegrityError if ``data`` is not a claim."""
        try:
            doc = json.loads(data)
            return cls(str(doc["request_id"]), str(doc["head_before"]), str(doc["strategy"]))
        except (ValueError, TypeError, KeyError) as e:
            raise IntegrityError(f"stored rollback claim is malformed: {type(e).__name__}") from e


# Step 4: restore.


@dataclass(frozen=True)
class RevertSteps:
    """Strategy ``revert``: make the branch's tree equal the commit's in one new commit."""

    copy: tuple[str, ...]
    """Added or changed paths, copied server-side from the commit, in diff order."""
    delete: tuple[str, ...]
    """Paths the commit lacks."""


def revert_steps(diff: Sequence[tuple[str, str]]) -> RevertSteps | None:
    """What a revert does given the branch's diff to the commit; None when the
    trees are already equal (a redelivered or second request commits nothing)."""
    if not diff:
        return None
    return RevertSteps(
        copy=tuple(p for t, p in diff if t in ("added", "changed")),
        delete=tuple(p for t, p in diff if t == "removed"),
    )


def revert_commit(req: RollbackRequest) -> tuple[str, dict[str, str]]:
    """The revert commit's message and metadata."""
    return (
        f"kfm rollback to {req.commit[:12]} (request {req.request_id})",
        {
            "kfm.rollback.commit": req.commit,
            "kfm.rollback.request": req.request_id,
            "kfm.rollback.requested_by": req.requested_by,
        },
    )


@dataclass(frozen=True)
class LakeFSTarget:
    """A member taken from the commit's tree; ``stac`` when the bundle holds it pinned (rewritten)."""

    member: str
    path: str
    stac: bool
    sha256: str


@dataclass(frozen=True)
class S3Target:
    """A model kept in the registry bucket, written back where production reads it."""

    member: str
    key: str
    sha256: str


Target = LakeFSTarget | S3Target


def member_targets(members: Mapping[str, str], bucket: str, rules: SnapshotRules) -> tuple[Target, ...]:
    """Where each bundle member (path -> manifest SHA-256) goes back to, in
    member order; members from neither lakeFS nor S3 have no target.

    Raises:
        IntegrityError: a model from another bucket than the registry's (the
            first such member, in member order).
    """
    targets: list[Target] = []
    for member, sha256 in sorted(members.items()):
        path = lakefs_path_of(member)
        source = s3_source_of(member)
        if path is not None:
            targets.append(LakeFSTarget(member, path, is_stac(path, rules), sha256))
        elif source is not None:
            src_bucket, key = source
            if src_bucket != bucket:
                raise IntegrityError(f"cannot restore {member}: bucket {src_bucket} is not reachable")
            targets.append(S3Target(member, key, sha256))
    return tuple(targets)
