"""Ed25519 signing keys: generation, loading, key ids and the trusted set.

Why Ed25519: signatures are deterministic (same key and message give the same
bytes, so golden attestations are reproducible), keys are 32 bytes, and there
are no parameters to get wrong. A key id is the SHA-256 of the raw public key,
so it can be recomputed from the ``.pub`` file alone and cannot be chosen by
whoever writes an envelope.

Private key material is never logged, put in an exception message, or shown
by ``repr``; :class:`KeyPair` holds paths and the public key only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from worker.errors import ConfigError

__all__ = [
    "KeyPair",
    "TrustedKeys",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A PEM key is a few hundred bytes; refuse to read anything much larger.
_MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class KeyPair:
    """Where a freshly generated key pair was written.

    Attributes:
        key_id: lowercase hex SHA-256 of the raw public key.
        private_key_path: the ``<name>.key`` file (PKCS#8 PEM, mode 0600).
        public_key_path: the ``<name>.pub`` file (SubjectPublicKeyInfo PEM).
        public_key: the public half, ready for a :class:`TrustedKeys`.
    """

    key_id: str
    private_key_path: Path
    public_key_path: Path
    public_key: Ed25519PublicKey


def key_id(public_key: Ed25519PublicKey) -> str:
    """Lowercase hex SHA-256 of the raw 32-byte public key.

    Why the raw key and not the PEM: PEM wrapping has more than one valid
    encoding; the raw key has exactly one.
    """
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keypair(directory: Path, name: str) -> KeyPair:
    """Create ``<name>.key`` and ``<name>.pub`` in ``directory``.

    Each file is written to a temporary file first and then linked into place,
    so a crash never leaves a half-written key and an existing key is never
    replaced (losing a signing key would orphan every attestation it signed).

    Args:
        directory: an existing directory.
        name: file stem; letters, digits, ``.``, ``_``, ``-``.

    Raises:
        ValueError: ``name`` is not a safe file stem.
        FileExistsError: either file already exists; nothing is written.
        OSError: the directory is not writable.
    """
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"key name must match {_NAME_RE.pattern}")
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    for p in (private_path, public_path):
        if os.path.lexists(p):
            raise FileExistsError(f"refusing to overwrite {p}")

    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new_file(private_path, private_pem, 0o600)
    try:
        _write_new_file(public_path, public_pem, 0o644)
    except BaseException:
        # Half a pair is worse than none: the operator would re-run and hit
        # "refusing to overwrite" on a key with no public half.
        private_path.unlink(missing_ok=True)
        raise
    return KeyPair(key_id(public_key), private_path, public_path, public_key)


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically create ``path`` with ``data``; fail if it exists.

    Why link instead of ``os.replace``: ``link(2)`` publishes the complete
    temporary file atomically *and* refuses an existing target, so there is no
    window between an existence check and the rename.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # before any secret byte is written
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot read: {e.strerror}") from e
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{what} {path}: file too large to be a key")
    return data


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 private key.

    Raises:
        ConfigError: unreadable, not PEM, encrypted, or not Ed25519. The
            message names the file, never its contents.
    """
    data = _read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        # The cryptography message is generic, but drop it anyway: nothing
        # derived from secret bytes belongs in a log line.
        raise ConfigError(f"private key {path}: not an unencrypted PEM PKCS#8 key") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"private key {path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a SubjectPublicKeyInfo PEM Ed25519 public key.

    Raises:
        ConfigError: unreadable, not PEM, or not Ed25519.
    """
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"public key {path}: not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"public key {path}: not an Ed25519 key")
    return key


class TrustedKeys(Mapping[str, Ed25519PublicKey]):
    """The public keys whose signatures a verifier accepts, by key id.

    Immutable. An empty set is refused at construction: a verifier with no
    keys would be a policy that can never pass, and a missing key directory
    should be reported as such rather than as a bad signature.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        """Index ``keys`` by :func:`key_id`; duplicates collapse.

        Raises:
            ValueError: ``keys`` is empty.
        """
        by_id = {key_id(k): k for k in keys}
        if not by_id:
            raise ValueError("TrustedKeys needs at least one public key")
        self._keys: dict[str, Ed25519PublicKey] = dict(sorted(by_id.items()))

    @classmethod
    def from_paths(cls, paths: Iterable[Path]) -> TrustedKeys:
        """Load each path with :func:`load_public_key`.

        Raises:
            ConfigError: a file is unusable, or ``paths`` is empty.
        """
        keys = [load_public_key(p) for p in paths]
        if not keys:
            raise ConfigError("no trusted public keys given")
        return cls(keys)

    @classmethod
    def from_dir(cls, directory: Path) -> TrustedKeys:
        """Load every ``*.pub`` file in ``directory`` (not recursive).

        Raises:
            ConfigError: the directory is unreadable, holds no ``.pub`` file,
                or one of them is unusable.
        """
        try:
            paths = sorted(p for p in directory.iterdir() if p.suffix == ".pub" and p.is_file())
        except OSError as e:
            raise ConfigError(f"trusted keys directory {directory}: {e.strerror}") from e
        if not paths:
            raise ConfigError(f"trusted keys directory {directory}: no .pub files")
        return cls.from_paths(paths)

    def __getitem__(self, kid: str) -> Ed25519PublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustedKeys({list(self._keys)!r})"
