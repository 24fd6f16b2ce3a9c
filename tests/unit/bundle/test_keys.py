"""worker.keys: generation, loading, key ids, trusted sets."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from worker.errors import ConfigError
from worker.keys import (
    TrustedKeys,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
)


def test_generate_writes_pem_pair_with_modes(tmp_path: Path) -> None:
    kp = generate_keypair(tmp_path, "signer")
    assert kp.private_key_path == tmp_path / "signer.key"
    assert kp.public_key_path == tmp_path / "signer.pub"
    assert stat.S_IMODE(kp.private_key_path.stat().st_mode) == 0o600
    assert kp.private_key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert kp.public_key_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signer.key", "signer.pub"]  # no temps

    private = load_private_key(kp.private_key_path)
    public = load_public_key(kp.public_key_path)
    assert key_id(private.public_key()) == key_id(public) == kp.key_id
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert kp.key_id == hashlib.sha256(raw).hexdigest()
    assert len(kp.key_id) == 64 and kp.key_id == kp.key_id.lower()


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path, "signer")
    before = first.private_key_path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path, "signer")
    assert first.private_key_path.read_bytes() == before

    (tmp_path / "other.pub").write_bytes(b"x")  # half a pair also blocks
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path, "other")
    assert not (tmp_path / "other.key").exists()


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "a b"])
def test_generate_rejects_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        generate_keypair(tmp_path, name)


def test_keypair_repr_has_no_private_material(tmp_path: Path) -> None:
    kp = generate_keypair(tmp_path, "signer")
    pem = kp.private_key_path.read_text()
    body = "".join(pem.splitlines()[1:-1])
    assert body not in repr(kp)
    assert "PRIVATE" not in repr(kp)


def test_load_rejects_non_ed25519_and_garbage(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_priv = tmp_path / "ec.key"
    ec_priv.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_pub = tmp_path / "ec.pub"
    ec_pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_private_key(ec_priv)
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_public_key(ec_pub)

    secret = tmp_path / "garbage.key"
    secret.write_bytes(b"SECRET-BYTES-THAT-MUST-NOT-LEAK")
    with pytest.raises(ConfigError) as exc:
        load_private_key(secret)
    assert "SECRET" not in str(exc.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(tmp_path / "missing.key")


def test_trusted_keys_from_dir_and_paths(tmp_path: Path) -> None:
    a = generate_keypair(tmp_path, "a")
    b = generate_keypair(tmp_path, "b")
    (tmp_path / "notes.txt").write_text("ignored")
    trusted = TrustedKeys.from_dir(tmp_path)
    assert set(trusted) == {a.key_id, b.key_id}
    assert len(trusted) == 2
    assert key_id(trusted[a.key_id]) == a.key_id
    assert a.key_id in repr(trusted)
    assert set(TrustedKeys.from_paths([a.public_key_path])) == {a.key_id}
    # duplicates collapse
    assert len(TrustedKeys([a.public_key, a.public_key])) == 1


def test_trusted_keys_refuses_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        TrustedKeys([])
    with pytest.raises(ConfigError, match=r"no \.pub files"):
        TrustedKeys.from_dir(tmp_path)
    with pytest.raises(ConfigError, match="no trusted public keys"):
        TrustedKeys.from_paths([])
    with pytest.raises(ConfigError):
        TrustedKeys.from_dir(tmp_path / "missing")
