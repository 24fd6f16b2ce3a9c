"""Verify a bundle for use: the one code path of `kfm verify`, `kfm restore` and the rollback agent.

Each of them fetches a bundle and its attestation its own way and then calls
:func:`check_bundle`, with the configured limits (``Settings.limits``), the
commit the bundle is used for when it is known, and the ledger unless the
user chose ``--offline``. So a bundle one of them refuses, the others refuse
too, for the same reason in the same words.

A restore passes ``extract_to``: the members are then written into a staging
directory during the one verification pass, and the directory is renamed
into place only after every check, the ledger's included, has passed.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from worker.bundle._reader import MemberSink
from worker.bundle.binding import check_recorded
from worker.bundle.extract import ExtractedBundle, staged_extraction
from worker.bundle.verify import VerifiedBundle, verify_bundle
from worker.errors import VerificationError
from worker.keys import TrustedKeys
from worker.limits import Limits
from worker.progress import Progress

if TYPE_CHECKING:  # annotations only: `kfm verify --offline` never loads a row
    from worker.ledger.row import LedgerRow

__all__ = ["CheckedBundle", "LedgerPort", "Proof", "check_bundle"]


class LedgerPort(Protocol):
    """The ledger reads a verification makes (:class:`worker.io.ledger_reader.LedgerReader`)."""

    async def row_for(self, commit: str) -> LedgerRow | None: ...
    async def prove(self, commit: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Proof:
    """Where the bundle's row sits in the log: checked against the latest signed checkpoint.

    Attributes:
        row: the ledger row recording the bundle.
        tree_size: rows covered by the checkpoint the inclusion proof checked against.
        root: that checkpoint's Merkle root (hex).
    """

    row: LedgerRow
    tree_size: int
    root: str


@dataclass(frozen=True)
class CheckedBundle:
    """A bundle fit for use.

    Attributes:
        bundle: what verification established (manifest, digest, signer).
        proof: the ledger row and its inclusion; None when the ledger was not
            consulted (``--offline``).
        extracted: the published files, when ``extract_to`` was given.
    """

    bundle: VerifiedBundle
    proof: Proof | None
    extracted: ExtractedBundle | None = None


async def check_bundle(
    bundle: Path,
    envelope: bytes,
    trusted: TrustedKeys,
    limits: Limits,
    *,
    commit: str | None,
    ledger: LedgerPort | None,
    extract_to: Path | None = None,
    progress: Progress | None = None,
) -> CheckedBundle:
    """Verify ``bundle`` and, unless ``ledger`` is None, that the registry recorded it.

    Args:
        bundle: the downloaded or local ``.tar.zst``.
        envelope: its DSSE envelope.
        trusted: keys that may sign attestations and checkpoints.
        limits: the configured limits (``Settings.limits``).
        commit: the commit the bundle is used for, if known
            (:func:`worker.bundle.binding.bound_commit`, or a rollback's).
        ledger: the registry's ledger; None skips it (air-gapped use).
        extract_to: extract the members there (an empty or missing
            directory), in the same pass; nothing appears there unless every
            check passed.
        progress: told the bundle's size, then the bytes read as the one pass goes.

    Raises:
        IntegrityError: the reason the bundle must not be used (a
            :class:`~worker.errors.VerificationError` for a failed check).
        FileExistsError: ``extract_to`` is a symbolic link, or exists and is not an empty directory.
        OSError: the bundle cannot be read, or the files cannot be written.
    """
    if extract_to is None:
        return await _check(bundle, envelope=envelope, trusted=trusted, limits=limits, commit=commit,
                            ledger=ledger, sink=None, progress=progress)
    with staged_extraction(extract_to) as staging:
        checked = await _check(bundle, envelope=envelope, trusted=trusted, limits=limits, commit=commit,
                               ledger=ledger, sink=staging.sink, progress=progress)
        extracted = await asyncio.to_thread(staging.publish, checked.bundle.manifest)
    return CheckedBundle(checked.bundle, checked.proof, extracted)


class _Counted:
    """The bundle file as the verifier reads it (``read`` only), telling ``progress`` each chunk."""

    def __init__(self, f: BinaryIO, progress: Progress) -> None:
        self._f = f
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._progress.advance(len(data))
        return data


def _verify_file(
    bundle: Path, envelope: bytes, trusted: TrustedKeys, limits: Limits, *, commit: str | None,
    sink: MemberSink | None, progress: Progress | None,
) -> VerifiedBundle:
    if progress is None:
        return verify_bundle(bundle, envelope, trusted, limits, expected_commit=commit, sink=sink)
    with bundle.open("rb") as f:
        progress.expect(os.fstat(f.fileno()).st_size)
        counted = cast(BinaryIO, _Counted(f, progress))
        return verify_bundle(counted, envelope, trusted, limits, expected_commit=commit, sink=sink)


async def _check(
    bundle: Path,
    *,
    envelope: bytes,
    trusted: TrustedKeys,
    limits: Limits,
    commit: str | None,
    ledger: LedgerPort | None,
    sink: MemberSink | None,
    progress: Progress | None,
) -> CheckedBundle:
    # Hashing and decompressing a large bundle is CPU and disk work: off the
    # loop, so an agent's heartbeats and other agents keep running meanwhile.
    verified = await asyncio.to_thread(
        _verify_file, bundle, envelope, trusted, limits, commit=commit, sink=sink, progress=progress
    )
    if ledger is None:
        return CheckedBundle(verified, None)
    row = check_recorded(verified, await ledger.row_for(verified.manifest.lakefs_commit))
    proof = await ledger.prove(row.lakefs_commit)
    if proof.get("row_hash") != row.hash:
        raise VerificationError(f"ledger: the proven row of commit {row.lakefs_commit[:12]} is not the row read")
    return CheckedBundle(verified, Proof(row, int(proof["tree_size"]), str(proof["root"])))
