"""worker.io.verifying.check_bundle: the verification kfm verify, kfm restore and the rollback agent share.

Driven over a bundle file and an in-memory ledger; the same path against a
real registry is tests/integration/test_verify_cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.bundle.helpers import COMMIT, OTHER_COMMIT, build_bundle_bytes, golden_key, sign_for
from tests.unit.ledger.factories import make_body
from tests.unit.rollback.fakes import FakeLedger
from worker.canonical import sha256_hex
from worker.errors import IntegrityError, VerificationError
from worker.io.verifying import check_bundle
from worker.keys import TrustedKeys
from worker.ledger.chain import next_row
from worker.limits import DEFAULT_LIMITS, Limits

TRUSTED = TrustedKeys([golden_key().public_key()])


def _bundle(tmp: Path, commit: str = COMMIT) -> tuple[Path, bytes]:
    data = build_bundle_bytes(tmp, {"configs/a.yaml": b"a: 1\n", "models/m.bin": bytes(300)}, commit=commit)
    path = tmp / f"{commit}.tar.zst"
    path.write_bytes(data)
    return path, sign_for(data, commit=commit)


def _ledger(*bundles: tuple[str, Path]) -> FakeLedger:
    ledger = FakeLedger()
    row = None
    for commit, path in bundles:
        row = next_row(row, make_body(len(ledger.rows) + 1, lakefs_repo="kfm-main", lakefs_commit=commit,
                                      checksums={"artifact_sha256": sha256_hex(path.read_bytes())}))
        ledger.rows[commit] = row
    return ledger


async def test_online_the_row_and_its_inclusion_are_checked(tmp_path: Path) -> None:
    bundle, envelope = _bundle(tmp_path)
    ledger = _ledger((COMMIT, bundle))
    checked = await check_bundle(bundle, envelope, TRUSTED, DEFAULT_LIMITS, commit=COMMIT, ledger=ledger)
    assert checked.bundle.manifest.lakefs_commit == COMMIT
    assert checked.proof is not None
    assert checked.proof.row == ledger.rows[COMMIT] and checked.proof.tree_size == 1


async def test_offline_the_ledger_is_not_consulted(tmp_path: Path) -> None:
    bundle, envelope = _bundle(tmp_path)
    checked = await check_bundle(bundle, envelope, TRUSTED, DEFAULT_LIMITS, commit=None, ledger=None)
    assert checked.proof is None and checked.bundle.sha256 == sha256_hex(bundle.read_bytes())


async def test_the_limits_passed_are_the_ones_applied(tmp_path: Path) -> None:
    bundle, envelope = _bundle(tmp_path)
    with pytest.raises(VerificationError) as exc:
        await check_bundle(bundle, envelope, TRUSTED, Limits(max_member_bytes=100), commit=None, ledger=None)
    assert str(exc.value) == "member models/m.bin: size 300 exceeds max_member_bytes 100"


async def test_a_bundle_of_another_commit_is_refused_even_when_recorded(tmp_path: Path) -> None:
    """B's signed, recorded bundle used as A's: the binding refuses it before the ledger is read."""
    bundle, envelope = _bundle(tmp_path, OTHER_COMMIT)
    ledger = _ledger((OTHER_COMMIT, bundle))
    with pytest.raises(VerificationError) as exc:
        await check_bundle(bundle, envelope, TRUSTED, DEFAULT_LIMITS, commit=COMMIT, ledger=ledger)
    assert str(exc.value) == f"attestation: is for commit {OTHER_COMMIT}, not {COMMIT}"


def _unprovable(ledger: FakeLedger) -> None:
    ledger.unprovable.add(COMMIT)


def _other_digest(ledger: FakeLedger) -> None:
    row = ledger.rows[COMMIT]
    ledger.rows[COMMIT] = row.model_copy(
        update={"checksums": row.checksums.model_copy(update={"artifact_sha256": "e" * 64})})


def _unrecorded(ledger: FakeLedger) -> None:
    del ledger.rows[COMMIT]


class _ProvesAnotherRow(FakeLedger):
    async def prove(self, commit: str) -> dict[str, Any]:
        return {**await super().prove(commit), "row_hash": "0" * 64}


@pytest.mark.parametrize(
    ("spoil", "error", "message"),
    [
        (_unrecorded, IntegrityError, f"no ledger row for commit {COMMIT}: the registry never recorded it"),
        (_other_digest, VerificationError, f"is not the one recorded for commit {COMMIT[:12]} ({'e' * 64})"),
        (_unprovable, VerificationError, f"inclusion proof of {COMMIT[:12]} does not match the checkpoint"),
    ],
    ids=["no row", "row records another bundle", "no inclusion proof"],
)
async def test_a_bundle_the_registry_does_not_vouch_for_is_refused(
    tmp_path: Path, spoil: Any, error: type[Exception], message: str
) -> None:
    bundle, envelope = _bundle(tmp_path)
    ledger = _ledger((COMMIT, bundle))
    spoil(ledger)
    with pytest.raises(error) as exc:
        await check_bundle(bundle, envelope, TRUSTED, DEFAULT_LIMITS, commit=COMMIT, ledger=ledger)
    assert message in str(exc.value)
    # Offline, the same bundle verifies: only the registry check refused it.
    await check_bundle(bundle, envelope, TRUSTED, DEFAULT_LIMITS, commit=COMMIT, ledger=None)


async def test_the_proven_row_must_be_the_row_checked(tmp_path: Path) -> None:
    bundle, envelope = _bundle(tmp_path)
    ledger = _ProvesAnotherRow(_ledger((COMMIT, bundle)).rows)
    with pytest.raises(VerificationError, match=r"the proven row of commit \w+ is not the row read"):
        await check_bundle(bundle, envelope, TRUSTED, DEFAULT_LIMITS, commit=COMMIT, ledger=ledger)
