"""Checkpoint key names: new checkpoints are signed under the origin, and checkpoints signed
under the name used before (``KFM_CHECKPOINT_NAME``) or a configured trusted name still verify."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.rollback.fakes import FakeBucket
from worker.config import load_settings
from worker.constants import LEDGER_CHECKPOINT_KEY
from worker.errors import ConfigError, VerificationError
from worker.io.ledger_reader import LedgerReader, checkpoint_origin, checkpoint_signer, verify_note
from worker.keys import TrustedKeys
from worker.ledger.checkpoint import sign_checkpoint

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TRUSTED = TrustedKeys([KEY.public_key()])
ROOT = bytes(range(32))
BUCKET = "kfm-registry"


def _signed_by(name: str, origin: str = f"kfm-rollback-registry/{BUCKET}") -> bytes:
    return sign_checkpoint(origin, 7, ROOT, name, KEY)


def _signature_name(note: bytes) -> str:
    return note.decode().rsplit("\n\n", 1)[1].split(" ")[1]


async def _read(note: bytes, env: dict[str, str] | None = None) -> int:
    settings = load_settings(env or {})
    bucket = FakeBucket(BUCKET, {LEDGER_CHECKPOINT_KEY: note})
    reader = LedgerReader(bucket, TRUSTED, settings.checkpoint_name, settings.checkpoint_key_names)  # type: ignore[arg-type]
    cp, _ = await reader.checkpoint()
    return cp.size


def test_new_checkpoints_are_signed_under_the_origin() -> None:
    settings = load_settings({})
    origin = checkpoint_origin(settings.checkpoint_name, BUCKET)
    signer = checkpoint_signer(settings.checkpoint_key_name, origin)
    assert signer == origin == "kfm-rollback-registry/kfm-registry"
    note = sign_checkpoint(origin, 7, ROOT, signer, KEY)
    assert _signature_name(note) == note.decode().split("\n", 1)[0]  # key name == origin line
    assert checkpoint_signer(" custom-name ", origin) == "custom-name"


async def test_a_checkpoint_signed_under_the_old_name_still_verifies() -> None:
    old = _signed_by("kfm-rollback-registry")
    assert _signature_name(old) == "kfm-rollback-registry"
    assert await _read(old) == 7
    assert await _read(_signed_by(f"kfm-rollback-registry/{BUCKET}")) == 7


async def test_a_name_that_is_not_accepted_is_refused() -> None:
    with pytest.raises(VerificationError, match="no signature by key"):
        await _read(_signed_by("someone-else"))


async def test_configured_names_are_accepted() -> None:
    note = _signed_by("rotated-name")
    assert await _read(note, {"KFM_CHECKPOINT_TRUSTED_NAMES": "a, rotated-name"}) == 7
    assert await _read(_signed_by("own"), {"KFM_CHECKPOINT_KEY_NAME": "own"}) == 7


def test_the_origin_is_still_checked_under_every_name() -> None:
    note = _signed_by("kfm-rollback-registry", origin="kfm-rollback-registry/another-bucket")
    with pytest.raises(VerificationError, match="origin"):
        verify_note(note, ("kfm-rollback-registry", "x"), TRUSTED, f"kfm-rollback-registry/{BUCKET}")


@pytest.mark.parametrize(("var", "value"), [
    ("KFM_CHECKPOINT_KEY_NAME", "two words"), ("KFM_CHECKPOINT_TRUSTED_NAMES", "ok,a+b"),
])
def test_a_bad_key_name_fails_start_up_naming_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings({var: value})
