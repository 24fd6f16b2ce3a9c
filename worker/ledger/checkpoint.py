"""Signed checkpoints of the ledger's Merkle tree, as C2SP signed notes.

Why: a checkpoint commits the registry to a size and root; with consistency
proofs it is what detects a rewritten or truncated history, which the hash
chain alone cannot (a prefix of a chain is a valid chain). The format is
c2sp.org/tlog-checkpoint inside c2sp.org/signed-note, so standard tlog tools
and witnesses can read it::

    <origin>\\n<size>\\n<base64 root>\\n
    \\n
    — <key name> <base64(key ID || Ed25519 signature of the text above)>\\n

with key ID = SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4].

Verification fails closed: the note text is ignored until a signature by the
configured key verifies (signed-note: "The text MUST be ignored unless ...").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Annotated, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, Field

from worker.errors import VerificationError
from worker.ledger.merkle import HASH_SIZE

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "SIG_TYPE_ED25519",
    "Checkpoint",
    "key_hash",
    "open_note",
    "parse_and_verify",
    "parse_vkey",
    "sign_checkpoint",
    "sign_note",
    "vkey",
]

SIG_TYPE_ED25519: Final = 0x01
"""signed-note signature type byte for Ed25519."""

MAX_NOTE_BYTES: Final = 64 * 1024
"""Checkpoints are a few hundred bytes; anything much larger is refused unread."""

MAX_SIGNATURES: Final = 100
"""signed-note: verifiers SHOULD cap signatures and MUST accept at least 16."""

_EM_DASH: Final = "\u2014"
_ED25519_SIG_SIZE: Final = 64
# Tree size line: ASCII decimal without leading zeros (tlog-checkpoint).
_SIZE_RE = re.compile(r"^(?:0|[1-9][0-9]{0,18})$", re.ASCII)
_MAX_SIZE: Final = 2**63 - 1
# Unicode spaces (str.isspace covers them) and ASCII controls are refused separately.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class Checkpoint(BaseModel):
    """A verified tree head: which log, how many leaves, what root."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    origin: Annotated[str, Field(min_length=1)]
    size: Annotated[int, Field(ge=0, le=_MAX_SIZE)]
    root: Annotated[bytes, Field(min_length=HASH_SIZE, max_length=HASH_SIZE)]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name) or _CONTROL.search(name):
        raise ValueError("key name must be non-empty, without spaces, '+' or control characters")


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    data = name.encode("utf-8") + b"\n" + bytes([SIG_TYPE_ED25519]) + _raw(public_key)
    return hashlib.sha256(data).digest()[:4]


def vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key string ``name+<8 hex key ID>+base64(0x01 || key)``.

    The format of Go's ``golang.org/x/mod/sumdb/note``, which is how tlog tools
    and witnesses are configured with a log's key.

    Raises:
        ValueError: ``name`` is not a valid key name.
    """
    _check_name(name)
    encoded = base64.b64encode(bytes([SIG_TYPE_ED25519]) + _raw(public_key)).decode("ascii")
    return f"{name}+{key_hash(name, public_key).hex()}+{encoded}"


def parse_vkey(text: str) -> tuple[str, Ed25519PublicKey]:
    """Inverse of :func:`vkey`, for keys read from configuration.

    Raises:
        ValueError: malformed, not Ed25519, or the key ID does not match the key.
    """
    name, sep1, rest = text.strip().partition("+")
    hash_hex, sep2, encoded = rest.partition("+")
    if not (sep1 and sep2) or not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise ValueError("verifier key must look like name+<8 hex>+<base64>")
    _check_name(name)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as e:
        raise ValueError("verifier key: bad base64") from e
    if len(raw) != 33 or raw[0] != SIG_TYPE_ED25519:
        raise ValueError("verifier key: not an Ed25519 key (type 0x01, 32 bytes)")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_hash(name, public_key).hex() != hash_hex:
        raise ValueError("verifier key: key ID does not match name and key")
    return name, public_key


def _body(origin: str, size: int, root: bytes) -> bytes:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n".encode()


def sign_note(text: bytes, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """Sign ``text`` as a signed note with one Ed25519 signature line.

    Raises:
        ValueError: ``text`` is empty, does not end in a newline, is not UTF-8,
            holds control characters or a blank line at its end, or ``name``
            is not a valid key name.
    """
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("note text must be UTF-8") from e
    if not decoded.endswith("\n") or decoded.endswith("\n\n") or decoded == "\n":
        raise ValueError("note text must end in exactly one newline")
    if _CONTROL.search(decoded):
        raise ValueError("note text must not contain control characters")
    _check_name(name)
    blob = key_hash(name, private_key.public_key()) + private_key.sign(text)
    line = f"{_EM_DASH} {name} {base64.b64encode(blob).decode('ascii')}\n"
    return text + b"\n" + line.encode("utf-8")


def sign_checkpoint(
    origin: str, size: int, root: bytes, name: str, private_key: Ed25519PrivateKey
) -> bytes:
    """Sign the checkpoint ``(origin, size, root)`` as a one-signature note.

    Raises:
        ValueError: ``origin`` is empty or not a single clean line, ``size`` is
            out of range, ``root`` is not 32 bytes, or ``name`` is invalid.
    """
    if not origin or "\n" in origin or _CONTROL.search(origin):
        raise ValueError("origin must be one non-empty line without control characters")
    if not 0 <= size <= _MAX_SIZE:
        raise ValueError(f"tree size {size} out of range")
    if len(root) != HASH_SIZE:
        raise ValueError(f"root must be {HASH_SIZE} bytes")
    return sign_note(_body(origin, size, root), name, private_key)


def _b64_strict(text: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise VerificationError("checkpoint: bad base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError("checkpoint: non-canonical base64")
    return raw


def _split_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Steps 1-2: check the note's form; return its text and (name, blob) signatures."""
    if len(note) > MAX_NOTE_BYTES:
        raise VerificationError(f"checkpoint: note larger than {MAX_NOTE_BYTES} bytes")
    try:
        text = note.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VerificationError("checkpoint: note is not UTF-8") from e
    if _CONTROL.search(text):
        raise VerificationError("checkpoint: note contains control characters")
    # The text ends at the last blank line; 0x0A never occurs inside a UTF-8
    # multi-byte sequence, so splitting the bytes is the same as the text.
    cut = note.rfind(b"\n\n")
    if cut < 0:
        raise VerificationError("checkpoint: no blank line before the signatures")
    body, sig_block = note[: cut + 1], note[cut + 2 :].decode("utf-8")
    if not sig_block.endswith("\n"):
        raise VerificationError("checkpoint: signature block must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"checkpoint: more than {MAX_SIGNATURES} signatures")
    sigs: list[tuple[str, bytes]] = []
    for line in lines:
        prefix, _, rest = line.partition(" ")
        sig_name, _, encoded = rest.partition(" ")
        if prefix != _EM_DASH or not sig_name or " " in encoded:
            raise VerificationError("checkpoint: malformed signature line")
        try:
            _check_name(sig_name)
        except ValueError as e:
            raise VerificationError(f"checkpoint: malformed signature line: {e}") from e
        blob = _b64_strict(encoded)
        if len(blob) < 5:
            raise VerificationError("checkpoint: signature too short")
        sigs.append((sig_name, blob))
    return body, sigs


def open_note(note: bytes, name: str, public_key: Ed25519PublicKey) -> bytes:
    """Verify a signed note by ``name``/``public_key`` and return its text.

    Signatures by other keys (witnesses, a rotated key) are ignored, as
    signed-note requires; a signature that claims our key must verify.

    Raises:
        VerificationError: malformed note; no signature line for this key;
            a bad signature, or two signatures, by this key.
    """
    # 1-2. Form of the note.
    body, sigs = _split_note(note)
    # 3. Exactly one signature for our (name, key ID), and it must verify.
    our_id = key_hash(name, public_key)
    ours = [blob[4:] for sig_name, blob in sigs if sig_name == name and blob[:4] == our_id]
    if not ours:
        raise VerificationError(f"checkpoint: no signature by key {name}+{our_id.hex()}")
    if len(ours) > 1:
        raise VerificationError(f"checkpoint: more than one signature by key {name}")
    if len(ours[0]) != _ED25519_SIG_SIZE:
        raise VerificationError("checkpoint: bad signature (wrong length)")
    try:
        public_key.verify(ours[0], body)
    except InvalidSignature as e:
        raise VerificationError(f"checkpoint: bad signature by key {name}") from e
    return body


def parse_and_verify(
    note: bytes, name: str, public_key: Ed25519PublicKey, expected_origin: str
) -> Checkpoint:
    """Verify a checkpoint note signed by ``name``/``public_key``, then read it.

    The text is read only after the signature verified (:func:`open_note`).

    Raises:
        VerificationError: anything :func:`open_note` refuses; malformed
            checkpoint text (including extension lines, which this log never
            writes); or an origin other than ``expected_origin``.
    """
    body = open_note(note, name, public_key)
    # 4. Origin, size, root, and nothing else.
    lines = body.decode("utf-8")[:-1].split("\n")
    if len(lines) != 3:
        raise VerificationError(
            f"checkpoint: expected 3 lines (origin, size, root), found {len(lines)}"
        )
    origin, size_text, root_text = lines
    if not _SIZE_RE.fullmatch(size_text) or int(size_text) > _MAX_SIZE:
        raise VerificationError("checkpoint: tree size is not a decimal without leading zeros")
    root = _b64_strict(root_text)
    if len(root) != HASH_SIZE:
        raise VerificationError(f"checkpoint: root hash is not {HASH_SIZE} bytes")
    # 5. The right log.
    if origin != expected_origin:
        raise VerificationError(
            f"checkpoint: origin {origin!r} is not the expected {expected_origin!r}"
        )
    return Checkpoint(origin=origin, size=int(size_text), root=root)
