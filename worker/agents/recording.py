"""The ledger writer: the only process that appends to the registry's index.

It consumes the single-partition writer topic in order, so appends are totally
ordered. Storage order makes every crash safe (spec section 7: append-only,
no mutation):

1. ``index/rollback-index.jsonl`` is rewritten with ``If-Match`` on the ETag we
   read: this is the commit point, and a concurrent writer loses the
   precondition instead of overwriting.
2. Derived files follow: the Parquet mirror, one YAML sidecar per new row, and
   a signed checkpoint for the new tree size.

A crash between 1 and 2 leaves a complete row without its mirrors;
:meth:`LedgerStore.reconcile`, run on every start, derives what is missing.
A crash before 1 leaves no row, and the candidate is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry import trace

from worker._internal.s3 import AlreadyExists, Bucket, NotFound
from worker.agents.governance import emit_raw
from worker.agents.runtime import Runtime
from worker.bundle.attest import verify_envelope
from worker.constants import CHECKPOINTS_PREFIX, INDEX_JSONL_KEY, INDEX_PARQUET_KEY, META_PREFIX
from worker.errors import IntegrityError, VerificationError
from worker.keys import TrustedKeys
from worker.ledger.checkpoint import Checkpoint, parse_and_verify, sign_checkpoint
from worker.ledger.mirror import sidecar_yaml, to_parquet
from worker.ledger.row import IndexCandidate, LedgerRow, parse_candidate
from worker.ledger.state import Appended, Duplicate, Ledger

__all__ = [
    "LATEST_CHECKPOINT",
    "LedgerStore",
    "Outcome",
    "checkpoint_key",
    "checkpoint_origin",
    "fault_point",
    "load_checkpoints",
    "record_batch",
    "verify_candidate",
]

log = structlog.get_logger("kfm.ledger")
tracer = trace.get_tracer("kfm.ledger")

_MAX_INDEX_BYTES = 1 << 31
LATEST_CHECKPOINT = f"{CHECKPOINTS_PREFIX}latest.note"


def checkpoint_origin(checkpoint_name: str, bucket: str) -> str:
    """The log's identity in its checkpoints: one origin per registry bucket."""
    return f"{checkpoint_name}/{bucket}"


def checkpoint_key(size: int) -> str:
    # Zero-padded so a listing is in size order.
    return f"{CHECKPOINTS_PREFIX}{size:012d}.note"


def fault_point(name: str) -> None:
    """Crash here if ``KFM_FAULT_INJECT`` names this point (crash-safety tests only)."""
    if os.environ.get("KFM_FAULT_INJECT") == name:
        log.warning("fault_injected", point=name)
        os._exit(137)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "recorded" | "duplicate" | "rejected"
    commit: str
    row: LedgerRow | None = None
    reason: str = ""
    same_digest: bool = True


class LedgerStore:
    """The ledger as stored in the registry bucket, with its ETag."""

    def __init__(self, bucket: Bucket, ledger: Ledger, etag: str | None, origin: str):
        self.bucket = bucket
        self.ledger = ledger
        self.etag = etag
        self.origin = origin
        # What this process already derived (None: not yet compared with the bucket).
        self._sidecars: set[str] | None = None
        self._parquet_size: int | None = None
        self._parquet_rows = -1
        self._checkpointed = -1

    @classmethod
    async def load(cls, bucket: Bucket, origin: str) -> LedgerStore:
        """Read and verify the JSONL (fail closed: a broken chain stops the writer)."""
        try:
            data, etag = await bucket.get(INDEX_JSONL_KEY, _MAX_INDEX_BYTES)
        except NotFound:
            return cls(bucket, Ledger(), None, origin)
        return cls(bucket, Ledger.from_jsonl(data), etag, origin)

    async def commit_rows(self) -> None:
        """Step 1: write the whole JSONL conditionally (the commit point)."""
        data = self.ledger.to_jsonl()
        if self.etag is None:
            self.etag = await self.bucket.put(INDEX_JSONL_KEY, data, if_none_match=True)
        else:
            self.etag = await self.bucket.put(INDEX_JSONL_KEY, data, if_match=self.etag)

    async def reconcile(self, key: Ed25519PrivateKey, key_name: str) -> list[str]:
        """Step 2, idempotent: derive whatever the JSONL has that the mirrors lack.

        The first call (at start) compares with what is stored; later calls
        know what they derived themselves and only add what is new, so a batch
        costs one Parquet write, its new sidecars and one checkpoint, not a
        listing of the whole bucket.
        """
        done: list[str] = []
        rows = self.ledger.rows
        parquet = await asyncio.to_thread(to_parquet, rows)
        if self._parquet_size is None:
            head = await self.bucket.head(INDEX_PARQUET_KEY)
            current = None
            if head is not None and head.size == len(parquet):
                current, _ = await self.bucket.get(INDEX_PARQUET_KEY, _MAX_INDEX_BYTES)
            stale = current != parquet
        else:
            stale = self._parquet_rows != len(rows)
        if stale:
            await self.bucket.put(INDEX_PARQUET_KEY, parquet)
            done.append(INDEX_PARQUET_KEY)
        self._parquet_size, self._parquet_rows = len(parquet), len(rows)
        if self._sidecars is None:
            self._sidecars = set(await self.bucket.list_keys(META_PREFIX))
        for row in rows:
            k = f"{META_PREFIX}{row.lakefs_commit}.yaml"
            if k not in self._sidecars:
                with contextlib.suppress(AlreadyExists):
                    await self.bucket.put(k, sidecar_yaml(row, self.bucket.name), if_none_match=True)
                self._sidecars.add(k)
                done.append(k)
        size = self.ledger.size
        if size and size != self._checkpointed and await self.bucket.head(checkpoint_key(size)) is None:
            note = sign_checkpoint(self.origin, size, self.ledger.root(), key_name, key)
            await self.bucket.put(checkpoint_key(size), note, if_none_match=True)
            await self.bucket.put(LATEST_CHECKPOINT, note)
            done.append(checkpoint_key(size))
        self._checkpointed = size
        return done


async def verify_candidate(rt: Runtime, c: IndexCandidate, trusted: TrustedKeys) -> None:
    """Record only what verifies: the attestation is signed by a trusted key and
    names the candidate's digest and commit, and the bundle object exists.

    Raises:
        VerificationError: it does not.
    """
    bucket_prefix = f"s3://{rt.bucket.name}/"
    if not c.attestation_uri.startswith(bucket_prefix) or not c.body.artifact_uri.startswith(bucket_prefix):
        raise VerificationError("candidate points outside the registry bucket")
    envelope, _ = await rt.bucket.get(c.attestation_uri[len(bucket_prefix):], 1 << 20)
    v = verify_envelope(envelope, trusted)
    if v.subject_sha256 != c.bundle_sha256 or v.lakefs_commit != c.body.lakefs_commit:
        raise VerificationError("attestation does not name this bundle and commit")
    if v.key_id != c.body.signatures.key_id:
        raise VerificationError("candidate names another signing key than the attestation")
    if await rt.bucket.head(c.body.artifact_uri[len(bucket_prefix):]) is None:
        raise VerificationError("bundle object missing")


async def record_batch(
    rt: Runtime, store: LedgerStore, values: list[bytes], trusted: TrustedKeys,
    key: Ed25519PrivateKey,
) -> list[Outcome]:
    """Apply a batch of candidates, commit once, then derive mirrors and a checkpoint."""
    outcomes: list[Outcome] = []
    now = datetime.now(UTC)
    with tracer.start_as_current_span("ledger.batch") as span:
        span.set_attribute("kfm.candidates", len(values))
        for value in values:
            try:
                c = parse_candidate(value, max_bytes=rt.settings.limits.message_max_bytes)
                existing = store.ledger.row_for(c.body.lakefs_commit)
                if existing is None:
                    await verify_candidate(rt, c, trusted)
                result = store.ledger.apply(c, now)
            except IntegrityError as e:
                commit = _commit_of(value)
                outcomes.append(Outcome("rejected", commit, reason=str(e)))
                continue
            if isinstance(result, Appended):
                outcomes.append(Outcome("recorded", result.row.lakefs_commit, row=result.row))
            elif isinstance(result, Duplicate):
                outcomes.append(
                    Outcome("duplicate", c.body.lakefs_commit, row=result.existing_row,
                            same_digest=result.same_digest,
                            reason="" if result.same_digest else
                            f"DIGEST MISMATCH: recorded {result.existing_row.checksums.artifact_sha256}, "
                            f"candidate {c.bundle_sha256}")
                )
        if any(o.kind == "recorded" for o in outcomes):
            # PreconditionFailed propagates: another writer won; the caller reloads and retries.
            await store.commit_rows()
            fault_point("ledger.after_jsonl")
        await store.reconcile(key, rt.settings.checkpoint_name)
    for o in outcomes:
        await _report(rt, o)
    if any(o.kind == "recorded" for o in outcomes):
        size = store.ledger.size
        await emit_raw(rt, "checkpoint.signed", "", "", size=size, root=store.ledger.root().hex(),
                       note_uri=store.bucket.uri(checkpoint_key(size)))
    return outcomes


def _commit_of(value: bytes) -> str:
    try:
        return str(json.loads(value)["body"]["lakefs_commit"])[:64]
    except (ValueError, KeyError, TypeError):
        return ""


async def _report(rt: Runtime, o: Outcome) -> None:
    repo = o.row.lakefs_repo if o.row else ""
    if o.kind == "recorded" and o.row:
        log.info("ledger.recorded", commit_id=o.commit, seq=o.row.seq)
        await emit_raw(rt, "bundle.recorded", repo, o.commit, seq=o.row.seq, row_hash=o.row.hash,
                       artifact_uri=o.row.artifact_uri)
    elif o.kind == "duplicate":
        level = log.info if o.same_digest else log.error
        level("ledger.duplicate", commit_id=o.commit, same_digest=o.same_digest)
        await emit_raw(rt, "bundle.duplicate", repo, o.commit, same_digest=o.same_digest,
                       severity="info" if o.same_digest else "critical", reason=o.reason)
    else:
        log.error("ledger.rejected", commit_id=o.commit, reason=o.reason)
        await emit_raw(rt, "bundle.rejected", repo, o.commit, reason=o.reason)


async def load_checkpoints(bucket: Bucket, name: str, trusted: TrustedKeys, origin: str) -> list[Checkpoint]:
    """Every stored checkpoint, verified (fail closed), in size order."""
    out: list[Checkpoint] = []
    for k in sorted(await bucket.list_keys(CHECKPOINTS_PREFIX)):
        if k == LATEST_CHECKPOINT:
            continue
        note, _ = await bucket.get(k, 1 << 16)
        errors = []
        for pub in trusted.values():
            try:
                out.append(parse_and_verify(note, name, pub, origin))
                break
            except VerificationError as e:
                errors.append(str(e))
        else:
            raise VerificationError(f"checkpoint {k}: no trusted key verifies it ({'; '.join(errors)[:300]})")
    return out
