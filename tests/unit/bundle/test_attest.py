"""worker.bundle.attest: in-toto/SLSA statement and DSSE sign/verify."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.bundle.helpers import COMMIT, CREATED, golden_key, raw_envelope
from worker.bundle import build_statement, pae, sign_statement, verify_envelope
from worker.canonical import canonical_bytes
from worker.constants import DSSE_PAYLOAD_TYPE
from worker.errors import VerificationError
from worker.keys import TrustedKeys, key_id

SHA = "ab" * 32


def _statement(**overrides: Any) -> bytes:
    args: dict[str, Any] = {
        "bundle_sha256": SHA,
        "lakefs_repo": "kfm-main",
        "lakefs_branch": "prod",
        "lakefs_commit": COMMIT,
        "builder_id": "https://kfm.local/builders/test",
        "invocation_id": "run-1",
        "started_on": CREATED,
        "finished_on": CREATED,
        "byproducts": {"trace/otel.json": "cd" * 32, "energy/e.json": "ef" * 32},
    }
    args.update(overrides)
    return build_statement(**args)


def test_pae_matches_dsse_spec_vector() -> None:
    # https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("t", b"") == b"DSSEv1 1 t 0 "


def test_statement_shape() -> None:
    s = json.loads(_statement())
    assert s["_type"] == "https://in-toto.io/Statement/v1"
    assert s["subject"] == [{"name": f"{COMMIT}.tar.zst", "digest": {"sha256": SHA}}]
    assert s["predicateType"] == "https://slsa.dev/provenance/v1"
    bd = s["predicate"]["buildDefinition"]
    assert bd["buildType"] == "https://kfm.local/rollback-bundle/v1"
    assert bd["externalParameters"] == {
        "lakefs_repo": "kfm-main",
        "lakefs_branch": "prod",
        "lakefs_commit": COMMIT,
    }
    assert bd["resolvedDependencies"] == [
        {"uri": f"lakefs://kfm-main/{COMMIT}", "digest": {"lakefsCommit": COMMIT}}
    ]
    rd = s["predicate"]["runDetails"]
    assert rd["metadata"] == {
        "invocationId": "run-1",
        "startedOn": "2025-11-30T12:00:00Z",
        "finishedOn": "2025-11-30T12:00:00Z",
    }
    assert [b["name"] for b in rd["byproducts"]] == ["energy/e.json", "trace/otel.json"]
    assert _statement() == canonical_bytes(s)


@pytest.mark.parametrize(
    "overrides",
    [
        {"bundle_sha256": "AB" * 32},
        {"lakefs_commit": "abc123"},
        {"started_on": datetime(2025, 1, 1)},  # noqa: DTZ001 - naive on purpose
        {"finished_on": datetime(2025, 11, 30, 11, tzinfo=UTC)},  # before start
        {"builder_id": ""},
        {"byproducts": {"x": "not-a-digest"}},
    ],
)
def test_build_statement_rejects(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _statement(**overrides)


def test_sign_is_deterministic_and_verifies(trusted: TrustedKeys) -> None:
    statement = _statement()
    env = sign_statement(statement, golden_key())
    assert env == sign_statement(statement, golden_key())
    doc = json.loads(env)
    assert doc["payloadType"] == DSSE_PAYLOAD_TYPE
    assert base64.b64decode(doc["payload"]) == statement
    v = verify_envelope(env, trusted)
    assert v.payload_bytes == statement
    assert v.statement == json.loads(statement)
    assert v.key_id == key_id(golden_key().public_key())
    assert (v.subject_name, v.subject_sha256, v.lakefs_commit) == (f"{COMMIT}.tar.zst", SHA, COMMIT)


def test_sign_refuses_non_statement() -> None:
    with pytest.raises(ValueError, match="refusing to sign"):
        sign_statement(b'{"hello":"world"}', golden_key())


def test_payload_is_not_reencoded(trusted: TrustedKeys) -> None:
    # Same statement, non-canonical spacing: verifies, and the exact bytes come back.
    statement = json.dumps(json.loads(_statement()), indent=2).encode()
    v = verify_envelope(raw_envelope(statement), trusted)
    assert v.payload_bytes == statement


def test_url_safe_base64_is_accepted(trusted: TrustedKeys) -> None:
    statement = _statement()
    sig = golden_key().sign(pae(DSSE_PAYLOAD_TYPE, statement))
    env = canonical_bytes(
        {
            "payload": base64.urlsafe_b64encode(statement).decode().rstrip("="),
            "payloadType": DSSE_PAYLOAD_TYPE,
            "signatures": [
                {
                    "keyid": key_id(golden_key().public_key()),
                    "sig": base64.urlsafe_b64encode(sig).decode(),
                }
            ],
        }
    )
    assert verify_envelope(env, trusted).payload_bytes == statement


def _tampered_payload() -> bytes:
    doc = json.loads(sign_statement(_statement(), golden_key()))
    doc["payload"] = base64.b64encode(_statement(bundle_sha256="cd" * 32)).decode()
    return json.dumps(doc).encode()


def _with_sig(sig: str) -> bytes:
    kid = key_id(golden_key().public_key())
    return raw_envelope(_statement(), signatures=[{"keyid": kid, "sig": sig}])


OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
STATEMENT_NO_SUBJECT = json.loads(_statement()) | {"subject": []}
STATEMENT_EXTRA = json.loads(_statement()) | {"extra": 1}
STATEMENT_WRONG_NAME = json.loads(_statement()) | {
    "subject": [{"name": "other.tar.zst", "digest": {"sha256": SHA}}]
}


@pytest.mark.parametrize(
    ("envelope", "needle"),
    [
        (b"not json", "envelope: not valid JSON"),
        (b"{}", "envelope: payload: Field required"),
        (b'{"payload":"","payloadType":"a","payloadType":"b","signatures":[]}', "duplicate key"),
        (raw_envelope(_statement(), signatures=[]), "envelope: no signatures"),
        (raw_envelope(_statement(), payload_type="application/json"), "payloadType"),
        (raw_envelope(_statement(), key=OTHER_KEY), "no signature by a trusted key"),
        (_tampered_payload(), "does not verify"),
        (_with_sig(base64.b64encode(bytes(64)).decode()), "does not verify"),
        (_with_sig("%%%"), "is not base64"),
        (raw_envelope(b"{not json"), "attestation: not valid JSON"),
        (raw_envelope(_statement()[:-1] + b',"_type":"x"}'), "attestation: not valid JSON"),
        (raw_envelope(canonical_bytes(STATEMENT_EXTRA)), "attestation: extra"),
        (raw_envelope(canonical_bytes(STATEMENT_NO_SUBJECT)), "exactly one subject"),
        (raw_envelope(canonical_bytes(STATEMENT_WRONG_NAME)), "subject name"),
        (b" " * 2_000_000, "larger than"),
    ],
)
def test_verify_envelope_fails_closed(
    envelope: bytes, needle: str, trusted: TrustedKeys
) -> None:
    with pytest.raises(VerificationError) as exc:
        verify_envelope(envelope, trusted)
    assert needle in str(exc.value)


def test_trusted_bad_signature_fails_even_with_a_good_one(trusted: TrustedKeys) -> None:
    statement = _statement()
    good = golden_key().sign(pae(DSSE_PAYLOAD_TYPE, statement))
    kid = key_id(golden_key().public_key())
    sigs = [
        {"keyid": "unknown", "sig": base64.b64encode(bytes(64)).decode()},  # ignored
        {"keyid": kid, "sig": base64.b64encode(good).decode()},
    ]
    assert verify_envelope(raw_envelope(statement, signatures=sigs), trusted).key_id == kid
    sigs.append({"keyid": kid, "sig": base64.b64encode(bytes(64)).decode()})
    with pytest.raises(VerificationError, match="does not verify"):
        verify_envelope(raw_envelope(statement, signatures=sigs), trusted)
