"""Dead letters: the reason code each refusal gets, and the record that keeps the message.

The reasons are read from the errors the real decoders and verifiers raise,
so these tests feed those functions the bad inputs rather than building errors
by hand: a changed error in a decoder shows up here as a wrong reason.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.bundle.helpers import golden_key, sign_for
from worker.bundle.attest import pae, verify_envelope
from worker.errors import IntegrityError, VerificationError
from worker.events import decode_event
from worker.io.dead_letters import Reason, Refusal, Source, classify, decode_or_refuse, record, screen
from worker.keys import TrustedKeys, key_id
from worker.ledger.row import parse_candidate
from worker.rollback.request import decode_request

DECODERS = [decode_event, parse_candidate, decode_request]
EVENT = {
    "source": "checkpoint", "repository_id": "kfm-main", "branch_id": "main", "commit_id": "a" * 64,
    "event_time": "2026-11-27T10:00:00Z",
}


def _reason(decode: object, value: bytes | None) -> Reason:
    got = decode_or_refuse(value, 1024, decode)  # type: ignore[arg-type]
    assert isinstance(got, Refusal), got
    return got.reason


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, Reason.MALFORMED),
        (b"", Reason.MALFORMED),
        (b"\xff\xfe{", Reason.MALFORMED),
        (b'{"a": ', Reason.MALFORMED),
        (b"[" * 1000, Reason.MALFORMED),  # deeper than any parser here will go,
        (b"x" * 1025, Reason.OVERSIZED),
        (b"[1, 2]", Reason.WRONG_TYPE),
        (b'"text"', Reason.WRONG_TYPE),
        (b'{"unrelated": true}', Reason.WRONG_TYPE),
    ],
)
def test_unreadable_messages_get_the_reason_of_their_kind(decode: object, value: bytes | None, reason: Reason) -> None:
    assert _reason(decode, value) is reason


def test_a_field_of_the_wrong_type_is_wrong_type_and_a_bad_value_is_invalid() -> None:
    assert _reason(decode_event, json.dumps({**EVENT, "commit_id": 7}).encode()) is Reason.WRONG_TYPE
    assert _reason(decode_event, json.dumps({**EVENT, "commit_id": "../../x"}).encode()) is Reason.INVALID
    assert not isinstance(decode_or_refuse(json.dumps(EVENT).encode(), 1024, decode_event), Refusal)


def test_a_message_of_the_limit_size_is_read_one_byte_more_is_not() -> None:
    assert screen(b"x" * 10, 10) is None
    refused = screen(b"x" * 11, 10)
    assert refused is not None and refused.reason is Reason.OVERSIZED and "11 bytes" in refused.message


def _refusal_of_envelope(envelope: bytes, trusted: TrustedKeys) -> Reason:
    with pytest.raises(VerificationError) as e:
        verify_envelope(envelope, trusted)
    return classify(e.value)


def test_forged_attestations_are_told_apart_by_key() -> None:
    signed = sign_for(b"the bundle's bytes")  # only their digest is signed
    trusted = TrustedKeys([golden_key().public_key()])
    stranger = Ed25519PrivateKey.generate()
    # Signed by a key nobody trusts.
    doc = json.loads(signed)
    payload = base64.b64decode(doc["payload"])
    sig = stranger.sign(pae(doc["payloadType"], payload))
    unknown = {**doc, "signatures": [{"keyid": key_id(stranger.public_key()), "sig": base64.b64encode(sig).decode()}]}
    assert _refusal_of_envelope(json.dumps(unknown).encode(), trusted) is Reason.UNKNOWN_KEY
    # The trusted key's id on a signature it did not make.
    trusted_id = key_id(golden_key().public_key())
    forged = {**doc, "signatures": [{"keyid": trusted_id, "sig": base64.b64encode(sig).decode()}]}
    assert _refusal_of_envelope(json.dumps(forged).encode(), trusted) is Reason.BAD_SIGNATURE
    # Validly signed, but not a payload we sign: an unverified reference, not a signature problem.
    assert classify(VerificationError("attestation does not name this bundle and commit")) is Reason.UNVERIFIED
    assert classify(IntegrityError("no ledger row")) is Reason.REJECTED


def test_the_record_keeps_the_bytes_and_says_where_they_came_from() -> None:
    src = Source("rollback", "p.kfm.rollback.requests", 3, 41, b"repo/main",
                 [("traceparent", b"00-x"), ("authorization", b"secret"), ("kfm-request-id", b"r1")])
    value = b"\x00\xffnot json\n"
    body, headers = record(src, value, Refusal(Reason.MALFORMED, "line one\nline two\x1b"), 1024)
    h = dict(headers)
    assert body == value
    assert h["kfm-dl-reason"] == b"malformed"
    assert h["kfm-dl-message"] == b"line one line two "
    assert (h["kfm-dl-topic"], h["kfm-dl-partition"], h["kfm-dl-offset"]) == (b"p.kfm.rollback.requests", b"3", b"41")
    assert h["kfm-dl-agent"] == b"rollback"
    assert h["kfm-dl-size"] == str(len(value)).encode()
    assert h["kfm-dl-sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert h["traceparent"] == b"00-x" and h["kfm-request-id"] == b"r1"
    assert "authorization" not in h


def test_an_oversized_value_is_cut_at_the_limit_with_its_size_and_digest_kept() -> None:
    value = bytes(range(256)) * 10
    body, headers = record(Source("bundler", "t", 0, 0), value, Refusal(Reason.OVERSIZED, "big"), 100)
    h = dict(headers)
    assert body == value[:100]
    assert h["kfm-dl-size"] == b"2560" and h["kfm-dl-sha256"] == hashlib.sha256(value).hexdigest().encode()


def test_a_tombstone_is_recorded_as_no_value() -> None:
    body, headers = record(Source("bundler", "t", 0, 0), None, Refusal(Reason.MALFORMED, "no value"), 100)
    assert body == b"" and dict(headers)["kfm-dl-size"] == b"-1"
