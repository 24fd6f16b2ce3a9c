"""Reading the ledger back: verification, inclusion proofs, and audit replay.

These never write to the registry. ``verify_registry`` re-derives everything
the writer promised (chain, Merkle root, signed checkpoints and their
consistency, mirrors); ``replay`` rebuilds the ledger from the writer topic
alone and compares it row for row and root for root.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from worker._internal.s3 import Bucket, NotFound
from worker.agents.recording import (
    LATEST_CHECKPOINT,
    checkpoint_origin,
    load_checkpoints,
    verify_candidate,
)
from worker.agents.runtime import Runtime
from worker.constants import INDEX_JSONL_KEY, INDEX_PARQUET_KEY, META_PREFIX, TOPIC_INDEX_CANDIDATES
from worker.errors import IntegrityError, TransientError, VerificationError
from worker.keys import TrustedKeys
from worker.ledger import merkle
from worker.ledger.checkpoint import Checkpoint, parse_and_verify
from worker.ledger.mirror import check_derived, to_parquet
from worker.ledger.row import parse_candidate, parse_utc, row_to_line
from worker.ledger.state import Appended, Ledger

__all__ = ["ReplayReport", "VerifyReport", "load_ledger", "prove", "replay", "verify_registry"]

_MAX = 1 << 31


@dataclass
class VerifyReport:
    rows: int = 0
    root: str = ""
    checkpoints: int = 0
    sidecars: int = 0


async def load_ledger(bucket: Bucket) -> Ledger:
    """Raises: VerificationError naming the first bad row."""
    try:
        data, _ = await bucket.get(INDEX_JSONL_KEY, _MAX)
    except NotFound:
        return Ledger()
    return Ledger.from_jsonl(data)


async def verify_registry(rt: Runtime, trusted: TrustedKeys) -> VerifyReport:
    """Steps, each failing closed with a message naming what is wrong:

    1. the JSONL parses canonically and its hash chain holds (names the row);
    2. every checkpoint is signed by a trusted key for this registry's origin;
    3. each checkpoint's root equals the ledger's root at that size, and each
       later checkpoint is consistent with the earlier one (RFC 9162 proof);
    4. the Parquet mirror and every YAML sidecar agree with the JSONL.
    """
    ledger = await load_ledger(rt.bucket)  # 1
    origin = checkpoint_origin(rt.settings.checkpoint_name, rt.bucket.name)
    cps = await load_checkpoints(rt.bucket, rt.settings.checkpoint_name, trusted, origin)  # 2
    prev: Checkpoint | None = None
    for cp in cps:  # 3
        ledger.verify_checkpoint(cp)
        if prev is not None:
            proof = merkle.consistency_proof_from_hashes(
                prev.size, cp.size, [merkle.leaf_hash(x) for x in ledger.leaves[: cp.size]]
            )
            merkle.verify_consistency(prev.size, cp.size, prev.root, cp.root, proof)
        prev = cp
    if ledger.size and (prev is None or prev.size != ledger.size):
        raise VerificationError(
            f"ledger has {ledger.size} rows but the newest signed checkpoint covers "
            f"{prev.size if prev else 0}: rows were added without a checkpoint"
        )
    try:  # 4
        parquet, _ = await rt.bucket.get(INDEX_PARQUET_KEY, _MAX)
    except NotFound:
        parquet = b"" if ledger.size else to_parquet(())
    sidecars: dict[str, bytes] = {}
    for k in await rt.bucket.list_keys(META_PREFIX):
        commit = k[len(META_PREFIX):].removesuffix(".yaml")
        sidecars[commit] = (await rt.bucket.get(k, 1 << 20))[0]
    check_derived(ledger.rows, parquet, sidecars, registry_bucket=rt.bucket.name)
    return VerifyReport(ledger.size, ledger.root().hex(), len(cps), len(sidecars))


async def prove(rt: Runtime, commit: str, trusted: TrustedKeys) -> dict[str, Any]:
    """An inclusion proof of the commit's row against the latest signed checkpoint."""
    ledger = await load_ledger(rt.bucket)
    row = ledger.row_for(commit)
    if row is None:
        raise IntegrityError(f"no ledger row for commit {commit}")
    note, _ = await rt.bucket.get(LATEST_CHECKPOINT, 1 << 16)
    origin = checkpoint_origin(rt.settings.checkpoint_name, rt.bucket.name)
    cp = _verify_note(note, rt.settings.checkpoint_name, trusted, origin)
    ledger.verify_checkpoint(cp)
    leaf_hashes = [merkle.leaf_hash(x) for x in ledger.leaves[: cp.size]]
    proof = merkle.inclusion_proof_from_hashes(row.seq, leaf_hashes)
    merkle.verify_inclusion(ledger.leaves[row.seq], row.seq, cp.size, proof, cp.root)
    return {
        "lakefs_commit": commit,
        "seq": row.seq,
        "row_hash": row.hash,
        "leaf_index": row.seq,
        "tree_size": cp.size,
        "root": cp.root.hex(),
        "inclusion_proof": [h.hex() for h in proof],
        "checkpoint": note.decode("utf-8"),
    }


def _verify_note(note: bytes, name: str, trusted: TrustedKeys, origin: str) -> Checkpoint:
    for pub in trusted.values():
        try:
            return parse_and_verify(note, name, pub, origin)
        except VerificationError:
            continue
    raise VerificationError("latest checkpoint is not signed by a trusted key")


@dataclass
class ReplayReport:
    candidates: int = 0
    rows: int = 0
    rejected: int = 0
    duplicates: int = 0
    matches: bool = False
    differences: list[str] = field(default_factory=list)
    root: str = ""


async def replay(rt: Runtime, trusted: TrustedKeys, scratch: Path) -> ReplayReport:
    """Rebuild the ledger from the writer topic with a fresh, group-less consumer.

    No committed offsets are read or written, so the writer is not disturbed.
    The rebuilt ledger is written under ``scratch`` and compared with the
    canonical one row for row, and root for root at every signed checkpoint.
    """
    rebuilt = Ledger()
    report = ReplayReport()
    await _replay_topic(rt, trusted, rebuilt, report)
    await asyncio.to_thread(_write_rebuilt, scratch, rebuilt)
    report.rows = rebuilt.size
    await _compare(rt, trusted, rebuilt, report)
    report.matches = not report.differences
    await asyncio.to_thread((scratch / "report.json").write_text, json.dumps(report.__dict__, indent=2))
    return report


async def _replay_topic(rt: Runtime, trusted: TrustedKeys, rebuilt: Ledger, report: ReplayReport) -> None:
    """Apply every candidate on the writer topic, up to its current end, to ``rebuilt``."""
    topic = rt.settings.topic(TOPIC_INDEX_CANDIDATES)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=rt.settings.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
    )
    try:
        await consumer.start()
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                report.candidates += 1
                try:
                    c = parse_candidate(record.value)
                    if rebuilt.row_for(c.body.lakefs_commit) is None:
                        await verify_candidate(rt, c, trusted)
                    result = rebuilt.apply(c, _replay_clock(c.body.created_at))
                except IntegrityError:
                    report.rejected += 1
                    continue
                if not isinstance(result, Appended):
                    report.duplicates += 1
    except KafkaError as e:
        raise TransientError(f"replay: Kafka: {type(e).__name__}") from e
    finally:
        await consumer.stop()


def _write_rebuilt(scratch: Path, rebuilt: Ledger) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "rollback-index.jsonl").write_bytes(rebuilt.to_jsonl())
    (scratch / "rollback-index.parquet").write_bytes(to_parquet(rebuilt.rows))


async def _compare(rt: Runtime, trusted: TrustedKeys, rebuilt: Ledger, report: ReplayReport) -> None:
    """Record in ``report`` every way ``rebuilt`` differs from the canonical ledger."""
    try:
        canonical = await load_ledger(rt.bucket)
    except VerificationError as e:
        report.differences.append(f"canonical ledger does not verify: {e}")
        canonical = Ledger()
    report.root = rebuilt.root().hex()
    if canonical.size != rebuilt.size:
        report.differences.append(f"canonical ledger has {canonical.size} rows, replay has {rebuilt.size}")
    for a, b in zip(canonical.rows, rebuilt.rows, strict=False):
        if row_to_line(a) != row_to_line(b):
            report.differences.append(f"row seq {a.seq} differs (commit {a.lakefs_commit} vs {b.lakefs_commit})")
            break
    origin = checkpoint_origin(rt.settings.checkpoint_name, rt.bucket.name)
    for cp in await load_checkpoints(rt.bucket, rt.settings.checkpoint_name, trusted, origin):
        if cp.size <= rebuilt.size and rebuilt.root_at(cp.size) != cp.root:
            report.differences.append(f"root at checkpoint size {cp.size} differs")


def _replay_clock(created_at: str) -> datetime:
    # The writer's clock only bounds how far in the future created_at may be;
    # replay happens later, so the row's own time is the right bound.
    return parse_utc(created_at)
