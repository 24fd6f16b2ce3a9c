"""The rollback agent: verify, plan, restore, check, record — once per request id.

Numbered steps (spec section 6, issue #5), referred to in the code:

1. Verify before touching anything: a ledger row exists for the commit; the
   bundle is the recorded one and its SHA-256 matches the row; the DSSE
   signature is by a trusted key and the attestation subject is this bundle;
   every member matches the manifest; the row's inclusion proof checks against
   the latest signed checkpoint. Any failure rejects the request; nothing is
   restored.
2. Plan: the lakeFS ref movement and the files that differ from the commit.
   A dry run stops here.
3. Claim: ``rollbacks/<request>/claim.json`` records the branch head before
   the restore, so a restart after a crash resumes with the same plan.
4. Restore, each step checking the end state first, so a redelivered or
   resumed request converges instead of acting twice.
5. Check: the restored tree equals the commit's tree, and every config, model
   and STAC file re-hashes to the bundle manifest.
6. Record: result (stored once, under ``If-None-Match``), governance event,
   OpenLineage run, OTel span linked to the bundle's trace, and a story record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import structlog
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags

from worker.agents.governance import emit_raw
from worker.agents.ledger_io import LedgerReader
from worker.agents.recording import fault_point
from worker.agents.runtime import Runtime
from worker.bundle.extract import extract_bundle
from worker.bundle.verify import verify_bundle
from worker.canonical import canonical_bytes
from worker.constants import TOPIC_LINEAGE, TOPIC_ROLLBACK_RESULTS
from worker.errors import AlreadyExistsError, IntegrityError, NotFoundError, VerificationError
from worker.evidence import run_event
from worker.evidence.lineage import JOB_NAMESPACE, dataset
from worker.keys import TrustedKeys
from worker.ledger.row import LedgerRow
from worker.restore.request import RollbackRequest, RollbackResult, decode_request
from worker.snapshot.select import LAKEFS_ROOT, S3_ROOT

__all__ = ["ROLLBACKS_PREFIX", "handle_rollback_request", "rollback_branch_name"]

log = structlog.get_logger("kfm.rollback")
tracer = trace.get_tracer("kfm.rollback")

ROLLBACKS_PREFIX = "rollbacks/"


def rollback_branch_name(commit: str, request_id: str) -> str:
    # lakeFS branch ids are [A-Za-z0-9_-]: the "rollback/<commit>-<request>" cannot
    # be a branch name, so the slash becomes a dash.
    return f"rollback-{commit[:12]}-{request_id[:12]}"


def _key(req: RollbackRequest, name: str) -> str:
    return f"{ROLLBACKS_PREFIX}{req.request_id}/{name}"


class _Base(TypedDict):
    """The request fields every result repeats."""

    lakefs_repo: str
    commit: str
    target_branch: str
    strategy: str


class _Rejected(Exception):  # noqa: N818 - a rejection signal caught in _handle, not an error
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


async def _publish(rt: Runtime, result: RollbackResult) -> None:
    await rt.producer.send(
        rt.settings.topic(TOPIC_ROLLBACK_RESULTS), result.to_bytes(), key=result.request_id.encode()
    )


async def handle_rollback_request(rt: Runtime, value: bytes, trusted: TrustedKeys) -> RollbackResult:
    """Handle one request message; return the final result (also published)."""
    try:
        req = decode_request(value)
    except IntegrityError as e:
        rid = _request_id_of(value)
        result = RollbackResult(request_id=rid, status="rejected", final=True, reason=str(e))
        await _publish(rt, result)
        return result
    structlog.contextvars.bind_contextvars(request_id=req.request_id, commit_id=req.commit)
    try:
        return await _handle(rt, req, trusted)
    finally:
        structlog.contextvars.unbind_contextvars("request_id", "commit_id", "trace_id")


async def _already_done(rt: Runtime, req: RollbackRequest) -> RollbackResult | None:
    """Idempotency: a request id that already has a result is answered with it."""
    try:
        stored, _ = await rt.bucket.get(_key(req, "result.json"), 1 << 20)
    except NotFoundError:
        return None
    result = RollbackResult.model_validate_json(stored)
    log.info("rollback.already_done", status=result.status)
    await _publish(rt, result)
    return result


async def _handle(rt: Runtime, req: RollbackRequest, trusted: TrustedKeys) -> RollbackResult:
    done = await _already_done(rt, req)
    if done is not None:
        return done

    base = _Base(lakefs_repo=req.lakefs_repo, commit=req.commit, target_branch=req.target_branch,
                 strategy=req.strategy)
    await _publish(rt, RollbackResult(request_id=req.request_id, status="accepted", final=False, **base))
    work = Path(tempfile.mkdtemp(prefix=f"rollback-{req.request_id[:12]}-", dir=rt.work_dir))
    try:
        try:
            row, files, links = await _verify(rt, req, trusted, work)  # 1
        except (_Rejected, VerificationError, IntegrityError) as e:
            return await _reject(rt, req, base, e.reason if isinstance(e, _Rejected) else str(e))
        await _publish(rt, RollbackResult(request_id=req.request_id, status="verified", final=False, **base,
                                          detail={"seq": row.seq, "artifact_sha256": row.checksums.artifact_sha256}))
        with tracer.start_as_current_span("rollback", links=links) as span:
            span.set_attribute("kfm.request_id", req.request_id)
            span.set_attribute("lakefs.commit", req.commit)
            trace_id = format(span.get_span_context().trace_id, "032x")
            structlog.contextvars.bind_contextvars(trace_id=trace_id)
            started = datetime.now(UTC)
            try:
                plan = await _plan(rt, req)  # 2
                await _refuse_dirty_branch(rt, req)
            except IntegrityError as e:  # e.g. the target branch does not exist: nothing was changed
                return await _reject(rt, req, base, str(e))
            if req.dry_run:
                result = RollbackResult(request_id=req.request_id, status="dry-run", final=True, **base,
                                        detail={**plan, "trace_id": trace_id})
                await _finish(rt, req, result)
                return result
            try:
                claim = await _claim(rt, req, plan)  # 3
                await _publish(rt, RollbackResult(request_id=req.request_id, status="restoring", final=False, **base))
                restored_ref = await _restore(rt, req, claim, files)  # 4
                await _publish(rt, RollbackResult(request_id=req.request_id, status="checking", final=False, **base))
                checks = await _check(rt, req, restored_ref, files)  # 5
                head_after = await rt.lakefs.branch_head(req.lakefs_repo, restored_ref)
                detail = {
                    "restored_ref": restored_ref,
                    "head_before": claim["head_before"],
                    "head_after": head_after,
                    "changes": plan["changes"],
                    "checks": checks,
                    "trace_id": trace_id,
                    "bundle_trace_id": row.otel_trace_id,
                }
                await _record(rt, req, row, detail, started)  # 6
            except IntegrityError as e:
                log.error("rollback.failed", reason=str(e))
                result = RollbackResult(request_id=req.request_id, status="failed", final=True, reason=str(e), **base)
                await _finish(rt, req, result)
                await emit_raw(rt, "rollback.failed", req.lakefs_repo, req.commit, request_id=req.request_id,
                               reason=str(e))
                return result
            result = RollbackResult(request_id=req.request_id, status="completed", final=True, **base, detail=detail)
            await _finish(rt, req, result)
            await emit_raw(rt, "rollback.completed", req.lakefs_repo, req.commit, request_id=req.request_id,
                           restored_ref=restored_ref, head_before=claim["head_before"], head_after=head_after)
            log.info("rollback.completed", restored_ref=restored_ref, head_after=head_after)
            return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _reject(rt: Runtime, req: RollbackRequest, base: _Base, reason: str) -> RollbackResult:
    """Refuse before anything was changed: store and publish the answer, report it."""
    log.warning("rollback.rejected", reason=reason)
    result = RollbackResult(request_id=req.request_id, status="rejected", final=True, reason=reason, **base)
    await _finish(rt, req, result)
    await emit_raw(rt, "rollback.rejected", req.lakefs_repo, req.commit, request_id=req.request_id,
                   reason=reason, requested_by=req.requested_by)
    return result


async def _finish(rt: Runtime, req: RollbackRequest, result: RollbackResult) -> None:
    """Store the final result once; a concurrent duplicate keeps the first."""
    try:
        await rt.bucket.put(_key(req, "result.json"), result.to_bytes(), if_none_match=True)
    except AlreadyExistsError:
        stored, _ = await rt.bucket.get(_key(req, "result.json"), 1 << 20)
        result = RollbackResult.model_validate_json(stored)
    await _publish(rt, result)


async def _verify(
    rt: Runtime, req: RollbackRequest, trusted: TrustedKeys, work: Path
) -> tuple[LedgerRow, dict[str, Path], list[Link]]:
    reader = LedgerReader(rt.bucket, trusted, rt.settings.checkpoint_name)
    row = await reader.row_for(req.commit)
    if row is None:
        raise _Rejected(f"no ledger row for commit {req.commit}: it was never bundled")
    if row.lakefs_repo != req.lakefs_repo:
        raise _Rejected(f"commit {req.commit[:12]} belongs to repository {row.lakefs_repo}, not {req.lakefs_repo}")
    if req.bundle_uri and req.bundle_uri != row.artifact_uri:
        raise _Rejected(f"bundle {req.bundle_uri} is not the recorded bundle {row.artifact_uri}")
    prefix = f"s3://{rt.bucket.name}/"
    if not row.artifact_uri.startswith(prefix) or not row.signatures.in_toto.startswith(prefix):
        raise _Rejected("the recorded bundle is outside the registry bucket")
    bundle = work / "bundle.tar.zst"
    limits = rt.settings.limits
    _, digest = await rt.bucket.download(row.artifact_uri[len(prefix):], bundle, limits.max_bundle_bytes)
    if digest != row.checksums.artifact_sha256:
        raise _Rejected(f"bundle sha256 {digest} does not match the ledger row ({row.checksums.artifact_sha256})")
    envelope, _ = await rt.bucket.get(row.signatures.in_toto[len(prefix):], limits.max_envelope_bytes)
    # Hashing and decompressing a large bundle is CPU and disk work: off the loop,
    # so Kafka heartbeats and other agents keep running meanwhile.
    verified = await asyncio.to_thread(verify_bundle, bundle, envelope, trusted, limits, expected_commit=req.commit)
    if verified.sha256 != row.checksums.artifact_sha256:
        raise _Rejected("attestation subject does not match the ledger row")
    await reader.prove(req.commit)  # inclusion proof against the signed checkpoint
    extracted = await asyncio.to_thread(
        extract_bundle, bundle, work / "x", limits, expected_sha256=row.checksums.artifact_sha256
    )
    return row, dict(extracted.files), await _bundle_trace_link(rt, row)


async def _bundle_trace_link(rt: Runtime, row: LedgerRow) -> list[Link]:
    """Link the rollback's span to the bundle run's root span (from its stored trace)."""
    key = f"evidence/{row.lakefs_commit}/{row.openlineage_run_id}/otel-trace.json"
    try:
        doc = json.loads((await rt.bucket.get(key, 16 << 20))[0])
    except (NotFoundError, ValueError):
        return []
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                if s.get("name") == "bundle":
                    ctx = SpanContext(int(s["traceId"], 16), int(s["spanId"], 16), is_remote=True,
                                      trace_flags=TraceFlags(TraceFlags.SAMPLED))
                    return [Link(ctx, {"kfm.link": "bundle"})]
    return []


async def _plan(rt: Runtime, req: RollbackRequest) -> dict[str, Any]:
    head = await rt.lakefs.branch_head_or_none(req.lakefs_repo, req.target_branch)
    if head is None and req.strategy != "branch":
        raise IntegrityError(f"target branch {req.target_branch} does not exist")
    changes = await rt.lakefs.diff(req.lakefs_repo, head, req.commit) if head else []
    movement = {
        "revert": f"new commit on {req.target_branch} whose tree equals {req.commit[:12]}",
        "reset": (
            f"tag {head[:12] if head else '-'} as kfm-pre-rollback-*, "
            f"then reset {req.target_branch} to {req.commit[:12]}"
        ),
        "branch": f"create {rollback_branch_name(req.commit, req.request_id)} at {req.commit[:12]}",
    }[req.strategy]
    return {
        "head_before": head or "",
        "ref_movement": movement,
        "changes": [{"type": t, "path": p} for t, p in sorted(changes, key=lambda x: x[1])][:10_000],
        "changed_files": len(changes),
    }


async def _refuse_dirty_branch(rt: Runtime, req: RollbackRequest) -> None:
    """A revert commits what is staged and a reset discards it: neither may touch
    someone else's uncommitted work. A request resuming its own claim is exempt
    (the staged changes are its own partial restore)."""
    if req.strategy == "branch" or await rt.bucket.head(_key(req, "claim.json")) is not None:
        return
    if await rt.lakefs.uncommitted(req.lakefs_repo, req.target_branch):
        raise IntegrityError(
            f"target branch {req.target_branch} has uncommitted changes; commit or reset them first"
        )


async def _claim(rt: Runtime, req: RollbackRequest, plan: dict[str, Any]) -> dict[str, Any]:
    claim = {"request_id": req.request_id, "head_before": plan["head_before"], "strategy": req.strategy}
    try:
        await rt.bucket.put(_key(req, "claim.json"), canonical_bytes(claim), if_none_match=True)
        return claim
    except AlreadyExistsError:
        stored = json.loads((await rt.bucket.get(_key(req, "claim.json"), 1 << 20))[0])
        log.warning("rollback.resuming", head_before=stored["head_before"])
        return dict(stored)


async def _restore(rt: Runtime, req: RollbackRequest, claim: dict[str, Any], files: dict[str, Path]) -> str:
    repo, commit, branch = req.lakefs_repo, req.commit, req.target_branch
    with tracer.start_as_current_span("rollback.restore.lakefs"):
        if req.strategy == "branch":
            target = rollback_branch_name(commit, req.request_id)
            if await rt.lakefs.branch_head_or_none(repo, target) is None:
                await rt.lakefs.create_branch(repo, target, commit)
        elif req.strategy == "reset":
            target = branch
            await rt.lakefs.ensure_tag(repo, f"kfm-pre-rollback-{req.request_id[:12]}", claim["head_before"])
            if await rt.lakefs.branch_head(repo, branch) != commit:
                await rt.lakefs.hard_reset(repo, branch, commit)
        else:
            target = branch
            await _revert(rt, req)
    await _restore_objects(rt, req, files)
    return target


async def _revert(rt: Runtime, req: RollbackRequest) -> None:
    """Strategy "revert": one new commit on the branch whose tree equals the commit's."""
    repo, commit, branch = req.lakefs_repo, req.commit, req.target_branch
    changes = await rt.lakefs.diff(repo, branch, commit)
    if not changes:
        return
    removed = [p for t, p in changes if t == "removed"]
    copied = 0
    for t, p in changes:
        if t in ("added", "changed"):
            await rt.lakefs.copy_from(repo, branch, p, commit)
            copied += 1
            if copied == 1:
                fault_point("rollback.mid_restore")
    if removed:
        await rt.lakefs.delete_paths(repo, branch, removed)
    await rt.lakefs.commit(
        repo, branch, f"kfm rollback to {commit[:12]} (request {req.request_id})",
        {"kfm.rollback.commit": commit, "kfm.rollback.request": req.request_id,
         "kfm.rollback.requested_by": req.requested_by},
    )


async def _restore_objects(rt: Runtime, req: RollbackRequest, files: dict[str, Path]) -> None:
    with tracer.start_as_current_span("rollback.restore.objects"):
        # Models kept in object storage go back where production reads them.
        for member, local in sorted(files.items()):
            if member.startswith(S3_ROOT):
                _, _, rest = member.partition("/")
                bucket, _, key = rest.partition("/")
                if bucket != rt.bucket.name:
                    raise IntegrityError(f"cannot restore {member}: bucket {bucket} is not reachable")
                await rt.bucket.upload_file(key, local, overwrite=True)
        # The frozen STAC hierarchy, pinned to the commit, is published with the rollback.
        for member, local in sorted(files.items()):
            if _is_stac(rt, member):
                await rt.bucket.put(_key(req, "stac/" + member[len(LAKEFS_ROOT):]), local.read_bytes())


def _is_stac(rt: Runtime, member: str) -> bool:
    prefixes = tuple(p.strip() for p in rt.settings.stac_prefixes.split(",") if p.strip())
    path = member[len(LAKEFS_ROOT):] if member.startswith(LAKEFS_ROOT) else ""
    return bool(path) and path.endswith(".json") and path.startswith(prefixes)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def _check(rt: Runtime, req: RollbackRequest, ref: str, files: dict[str, Path]) -> dict[str, Any]:
    """Step 5: re-hash what was restored; any mismatch fails the rollback loudly."""
    repo = req.lakefs_repo
    remaining = await rt.lakefs.diff(repo, ref, req.commit)
    if remaining:
        raise IntegrityError(f"restored {ref} still differs from {req.commit[:12]} at {len(remaining)} paths")
    checked = 0
    tmp = rt.work_dir / f"check-{uuid.uuid4().hex}"
    try:
        for member, local in sorted(files.items()):
            want = await asyncio.to_thread(_sha256, local)
            if member.startswith(LAKEFS_ROOT):
                path = member[len(LAKEFS_ROOT):]
                info = await rt.lakefs.stat(repo, ref, path)
                if info is None:
                    raise IntegrityError(f"restored {ref} lacks {path}")
                if _is_stac(rt, member):
                    # STAC in the bundle is the pinned rewrite; the lake holds the original.
                    at_commit = await rt.lakefs.stat(repo, req.commit, path)
                    if at_commit is None or at_commit.checksum != info.checksum:
                        raise IntegrityError(f"restored STAC {path} differs from the commit")
                else:
                    _, got = await rt.lakefs.download(repo, ref, path, tmp, rt.settings.limits.max_member_bytes)
                    if got != want:
                        raise IntegrityError(f"restored {path}: sha256 {got} != manifest {want}")
            elif member.startswith(S3_ROOT):
                key = member[len(S3_ROOT):].partition("/")[2]
                _, got = await rt.bucket.download(key, tmp, rt.settings.limits.max_member_bytes)
                if got != want:
                    raise IntegrityError(f"restored s3 object {key}: sha256 mismatch")
            checked += 1
    finally:
        tmp.unlink(missing_ok=True)
    return {"tree_equals_commit": True, "members_rehashed": checked}


async def _record(rt: Runtime, req: RollbackRequest, row: LedgerRow, detail: dict[str, Any],
                  started: datetime) -> None:
    run_id = str(uuid.uuid4())
    job_name = f"rollback.{req.lakefs_repo}"
    inputs = [dataset(f"s3://{rt.bucket.name}", row.artifact_uri, {"sha256": {"value": row.checksums.artifact_sha256}})]
    outputs = [dataset(f"lakefs://{req.lakefs_repo}", detail["restored_ref"])]
    events = [
        run_event("START", run_id=run_id, event_time=started, inputs=inputs,
                  job_namespace=JOB_NAMESPACE, job_name=job_name),
        run_event("COMPLETE", run_id=run_id, event_time=datetime.now(UTC), inputs=inputs, outputs=outputs,
                  job_namespace=JOB_NAMESPACE, job_name=job_name),
    ]
    for ev in events:
        await rt.producer.send(rt.settings.topic(TOPIC_LINEAGE), canonical_bytes(ev), key=run_id.encode())
    story = {
        "kind": "kfm.rollback.story/v1",
        "request_id": req.request_id,
        "why": req.reason,
        "requested_by": req.requested_by,
        "requested_at": req.requested_at.isoformat(),
        "which_commit": req.commit,
        "strategy": req.strategy,
        "dependencies": {
            "upstream": [f"lakefs://{row.lakefs_repo}/{row.lakefs_commit}"] + [s.lakefs_ref for s in row.data_snapshot],
            "downstream": [f"lakefs://{req.lakefs_repo}/{detail['restored_ref']}"] + [m.uri for m in row.models],
            "bundle_lineage_run": row.openlineage_run_id,
            "rollback_lineage_run": run_id,
        },
        "before": {"head": detail["head_before"]},
        "after": {"head": detail["head_after"], "files_changed": len(detail["changes"])},
        "traces": {"rollback": detail["trace_id"], "bundle": row.otel_trace_id},
    }
    for name, body in (("story.json", story), ("openlineage.json", events)):
        with contextlib.suppress(AlreadyExistsError):
            await rt.bucket.put(_key(req, name), canonical_bytes(body), if_none_match=True)


def _request_id_of(value: bytes) -> str:
    try:
        return str(json.loads(value).get("request_id", ""))[:128] or "unknown"
    except (ValueError, AttributeError):
        return "unknown"
