"""C2SP signed-note checkpoints: interop vectors, round trip, and fail-closed parsing."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.ledger.factories import fixed_key
from worker.errors import VerificationError
from worker.ledger.checkpoint import (
    MAX_NOTE_BYTES,
    Checkpoint,
    key_hash,
    open_note,
    parse_and_verify,
    parse_vkey,
    sign_checkpoint,
    sign_note,
    vkey,
)
from worker.ledger.merkle import root

EM = "\u2014"

# --- Interop: the vectors of golang.org/x/mod/sumdb/note and of c2sp.org/signed-note ------------

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_SIG = (
    f"{EM} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgK"
    "vqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
ENOCH_SIG = (
    f"{EM} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOT"
    "GwnWLox33WWd1RvMc+QQ=\n"
).encode()
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3"
    "mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()


def _go_private_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])  # the base64 itself may hold "+"
    assert seed[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(seed[1:])


def test_go_vector_key_and_signature_are_reproduced() -> None:
    key = _go_private_key()
    assert vkey("PeterNeumann", key.public_key()) == GO_VKEY
    # Ed25519 is deterministic, so our note must be Go's note byte for byte.
    assert sign_note(GO_TEXT, "PeterNeumann", key) == GO_TEXT + b"\n" + GO_SIG


def test_go_vector_verifies_with_either_key_and_ignores_the_other() -> None:
    note = GO_TEXT + b"\n" + GO_SIG + ENOCH_SIG
    for vk in (GO_VKEY, ENOCH_VKEY):
        name, public_key = parse_vkey(vk)
        assert open_note(note, name, public_key) == GO_TEXT
    name, public_key = parse_vkey(GO_VKEY)
    with pytest.raises(VerificationError, match="bad signature"):
        open_note(note.replace(b"cryptography", b"cryptographY"), name, public_key)


def test_spec_vector_verifies() -> None:
    name, public_key = parse_vkey(SPEC_VKEY)
    assert name == "example.com/foo"
    assert open_note(SPEC_NOTE, name, public_key) == b"This is an example message.\n"
    assert vkey(name, public_key) == SPEC_VKEY


# --- Our checkpoints ------------------------------------------------------------------------------

ORIGIN = "kfm.local/rollback-registry"
NAME = "kfm.local/rollback-registry"
KEY = fixed_key(7)
PUB = KEY.public_key()
ROOT = root([b"a", b"b", b"c"])


def _note(size: int = 3, root_: bytes = ROOT, origin: str = ORIGIN) -> bytes:
    return sign_checkpoint(origin, size, root_, NAME, KEY)


@pytest.mark.parametrize("size", [0, 1, 3, 2**40, 2**63 - 1])
def test_round_trip(size: int) -> None:
    note = _note(size)
    assert parse_and_verify(note, NAME, PUB, ORIGIN) == Checkpoint(
        origin=ORIGIN, size=size, root=ROOT
    )


def test_exact_layout() -> None:
    note = _note(3)
    body = f"{ORIGIN}\n3\n{base64.b64encode(ROOT).decode()}\n".encode()
    assert note.startswith(body + b"\n" + f"{EM} {NAME} ".encode())
    assert note.endswith(b"\n") and note.count(b"\n") == 5
    blob = base64.b64decode(note.rsplit(b" ", 1)[1])
    assert blob[:4] == key_hash(NAME, PUB) and len(blob) == 68
    PUB.verify(blob[4:], body)  # the signature is over the body bytes exactly


def test_witness_cosignatures_are_ignored() -> None:
    witness = sign_note(_note().split(b"\n\n")[0] + b"\n", "witness.example/w1", fixed_key(9))
    note = _note() + witness.split(b"\n\n")[1]
    assert parse_and_verify(note, NAME, PUB, ORIGIN).size == 3


def _resign(body: bytes) -> bytes:
    """A note whose (odd) body really is signed by our key."""
    return sign_note(body, NAME, KEY)


def _replace_blob(note: bytes, change: Callable[[bytes], bytes]) -> bytes:
    head, encoded = note.rstrip(b"\n").rsplit(b" ", 1)
    return head + b" " + base64.b64encode(change(base64.b64decode(encoded))) + b"\n"


def _flip_last(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 1])


OTHER_ROOT_B64 = base64.b64encode(root([b"x"])).decode()
TAMPERED: list[tuple[str, Callable[[], bytes], str]] = [
    ("size", lambda: _note(3).replace(b"\n3\n", b"\n4\n", 1), "bad signature"),
    (
        "root",
        lambda: _note(3).replace(base64.b64encode(ROOT), OTHER_ROOT_B64.encode()),
        "bad signature",
    ),
    ("origin text", lambda: _note(3).replace(b"registry\n3", b"registrz\n3"), "bad signature"),
    ("signature", lambda: _replace_blob(_note(), _flip_last), "bad signature"),
    ("short signature", lambda: _replace_blob(_note(), lambda b: b[:-1]), "wrong length"),
    ("unknown key", lambda: sign_checkpoint(ORIGIN, 3, ROOT, NAME, fixed_key(8)), "no signature"),
    ("other name", lambda: sign_checkpoint(ORIGIN, 3, ROOT, "other.example", KEY), "no signature"),
    ("key id only", lambda: _replace_blob(_note(), lambda b: b[:4]), "too short"),
    ("no signatures", lambda: _note().split(b"\n\n")[0] + b"\n\n", "newline"),
    ("no blank line", lambda: _note().replace(b"\n\n", b"\n"), "no blank line"),
    ("unterminated", lambda: _note()[:-1], "end with a newline"),
    ("crlf", lambda: _note().replace(b"\n", b"\r\n"), "control characters"),
    ("tab", lambda: _note().replace(b"\n3\n", b"\n3\t\n"), "control characters"),
    ("not utf-8", lambda: _note().replace(b"\n3\n", b"\n\xff\n"), "not UTF-8"),
    ("too large", lambda: b"x" * (MAX_NOTE_BYTES + 1), "larger than"),
    ("hyphen not em dash", lambda: _note().replace(EM.encode(), b"-"), "malformed signature"),
    (
        "double space",
        lambda: _note().replace(f"{NAME} ".encode(), f"{NAME}  ".encode()),
        "malformed",
    ),
    ("padding dropped", lambda: _note().replace(b"=\n", b"\n"), "bad base64"),
    ("two signatures by us", lambda: _note() + _note().split(b"\n\n")[1], "more than one"),
    ("many signatures", lambda: _note() + ENOCH_SIG * 100, "more than 100"),
    # Correctly signed, but not a checkpoint this log writes.
    (
        "extension line",
        lambda: _resign(f"{ORIGIN}\n3\n{OTHER_ROOT_B64}\next\n".encode()),
        "3 lines",
    ),
    ("two lines", lambda: _resign(f"{ORIGIN}\n3\n".encode()), "3 lines"),
    ("leading zero", lambda: _resign(f"{ORIGIN}\n03\n{OTHER_ROOT_B64}\n".encode()), "tree size"),
    ("plus sign", lambda: _resign(f"{ORIGIN}\n+3\n{OTHER_ROOT_B64}\n".encode()), "tree size"),
    ("negative", lambda: _resign(f"{ORIGIN}\n-3\n{OTHER_ROOT_B64}\n".encode()), "tree size"),
    ("2**63", lambda: _resign(f"{ORIGIN}\n{2**63}\n{OTHER_ROOT_B64}\n".encode()), "tree size"),
    (
        "short root",
        lambda: _resign(f"{ORIGIN}\n3\n{base64.b64encode(b'x' * 31).decode()}\n".encode()),
        "32 bytes",
    ),
    (
        "unpadded root",
        lambda: _resign(f"{ORIGIN}\n3\n{OTHER_ROOT_B64.rstrip('=')}\n".encode()),
        "base64",
    ),
    ("wrong origin", lambda: _note(origin="evil.example/log"), "origin 'evil.example/log'"),
]


@pytest.mark.parametrize(
    ("make", "message"), [(m, msg) for _, m, msg in TAMPERED], ids=[c for c, _, _ in TAMPERED]
)
def test_tampered_or_malformed_notes_fail_closed(make: Callable[[], bytes], message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_and_verify(make(), NAME, PUB, ORIGIN)


def test_wrong_expected_origin() -> None:
    with pytest.raises(VerificationError, match=re.escape("not the expected 'kfm.local/other'")):
        parse_and_verify(_note(), NAME, PUB, "kfm.local/other")


def test_wrong_public_key() -> None:
    with pytest.raises(VerificationError, match="no signature by key"):
        parse_and_verify(_note(), NAME, fixed_key(8).public_key(), ORIGIN)


@pytest.mark.parametrize(
    ("origin", "size", "root_", "name"),
    [
        ("", 3, ROOT, NAME),
        ("two\nlines", 3, ROOT, NAME),
        ("tab\there", 3, ROOT, NAME),
        (ORIGIN, -1, ROOT, NAME),
        (ORIGIN, 2**63, ROOT, NAME),
        (ORIGIN, 3, ROOT[:31], NAME),
        (ORIGIN, 3, ROOT, ""),
        (ORIGIN, 3, ROOT, "has space"),
        (ORIGIN, 3, ROOT, "has+plus"),
        (ORIGIN, 3, ROOT, "nbsp\u00a0name"),
    ],
)
def test_sign_checkpoint_refuses_bad_input(origin: str, size: int, root_: bytes, name: str) -> None:
    with pytest.raises(ValueError):
        sign_checkpoint(origin, size, root_, name, KEY)


@pytest.mark.parametrize("text", [b"", b"no newline", b"two\n\n", b"\xff\n", b"bell\x07\n"])
def test_sign_note_refuses_bad_text(text: bytes) -> None:
    with pytest.raises(ValueError):
        sign_note(text, NAME, KEY)


def test_vkey_round_trip() -> None:
    text = vkey(NAME, PUB)
    name, public_key = parse_vkey(text)
    assert name == NAME and vkey(name, public_key) == text
    assert text.split("+")[1] == key_hash(NAME, PUB).hex()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "justaname",
        "name+c74f20a3",
        GO_VKEY.replace("c74f20a3", "c74f20a4"),  # key ID does not match
        GO_VKEY.replace("+ARpc", "+AhpC"),  # not type 0x01
        GO_VKEY.replace("+c74f20a3+", "+C74F20A3+"),
        GO_VKEY + "!",
        GO_VKEY[:-4],
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_parse_vkey_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_vkey(text)
