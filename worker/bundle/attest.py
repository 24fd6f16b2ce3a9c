"""SLSA provenance for a bundle, as an in-toto Statement in a DSSE envelope.

Chain of custody (docs/spec.md, Guarantees): bundle SHA-256 -> in-toto Statement whose
subject is that digest -> DSSE signature over the Statement's exact bytes.

Why DSSE: the signature covers ``PAE(payloadType, payload)``, so the type is
authenticated too and nothing is re-serialised before verifying (what is
verified is what was signed). The Statement is produced once as RFC 8785 bytes, signed as
those bytes, and on verification parsed from exactly the signed payload.

References:
    https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
    https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
    https://slsa.dev/spec/v1.0/provenance
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from worker.bundle._json import strict_json_loads
from worker.bundle.manifest import BundleManifest, show_path
from worker.canonical import canonical_bytes
from worker.constants import DSSE_PAYLOAD_TYPE
from worker.errors import VerificationError, describe_validation_error
from worker.ids import BranchName, CommitId, RepoId, Sha256Hex
from worker.keys import TrustedKeys, key_id
from worker.limits import DEFAULT_LIMITS
from worker.utc import format_utc, parse_utc

__all__ = [
    "BUILD_TYPE",
    "BYPRODUCT_KINDS",
    "SLSA_PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "VerifiedStatement",
    "build_statement",
    "bundle_name",
    "byproducts_from_manifest",
    "pae",
    "sign_statement",
    "verify_envelope",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://kfm.local/rollback-bundle/v1"
#: Member kinds recorded as SLSA byproducts: the run evidence, not the data.
BYPRODUCT_KINDS = frozenset({"lineage", "trace", "energy"})
# One signer today; a few more for key rotation. Bounds verification work.
_MAX_SIGNATURES = 16

_B64_STD = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_B64_URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")

Text = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


def bundle_name(lakefs_commit: str) -> str:
    """The subject name, and the artifact file name (docs/spec.md, "Bucket layout")."""
    return f"{lakefs_commit}.tar.zst"


def _lakefs_uri(repo: str, commit: str) -> str:
    return f"lakefs://{repo}/{commit}"


# --- Strict models of exactly what build_statement produces. ---------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _Sha256Digest(_Model):
    sha256: Sha256Hex


class _Subject(_Model):
    name: Text
    digest: _Sha256Digest


class _LakefsDigest(_Model):
    lakefs_commit: str = Field(alias="lakefsCommit")


class _Dependency(_Model):
    uri: Text
    digest: _LakefsDigest


class _ExternalParameters(_Model):
    # Same rules as the manifest: values are comparable and safe to print.
    lakefs_repo: RepoId
    lakefs_branch: BranchName
    lakefs_commit: CommitId


class _BuildDefinition(_Model):
    build_type: Literal["https://kfm.local/rollback-bundle/v1"] = Field(alias="buildType")
    external_parameters: _ExternalParameters = Field(alias="externalParameters")
    resolved_dependencies: tuple[_Dependency, ...] = Field(alias="resolvedDependencies")


class _Builder(_Model):
    id: Text


class _Metadata(_Model):
    invocation_id: Text = Field(alias="invocationId")
    started_on: str = Field(alias="startedOn")
    finished_on: str = Field(alias="finishedOn")


class _Byproduct(_Model):
    name: Text
    digest: _Sha256Digest


class _RunDetails(_Model):
    builder: _Builder
    metadata: _Metadata
    byproducts: tuple[_Byproduct, ...] = Field(max_length=1024)


class _Predicate(_Model):
    build_definition: _BuildDefinition = Field(alias="buildDefinition")
    run_details: _RunDetails = Field(alias="runDetails")


class _Statement(_Model):
    type: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: tuple[_Subject, ...]
    predicate_type: Literal["https://slsa.dev/provenance/v1"] = Field(alias="predicateType")
    predicate: _Predicate

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # A statement that disagrees with itself is refused outright, so later
        # checks can compare against any one of its copies of the commit.
        params = self.predicate.build_definition.external_parameters
        if len(self.subject) != 1:
            raise ValueError("exactly one subject expected")
        if self.subject[0].name != bundle_name(params.lakefs_commit):
            raise ValueError("subject name does not match externalParameters.lakefs_commit")
        deps = self.predicate.build_definition.resolved_dependencies
        if len(deps) != 1 or deps[0].uri != _lakefs_uri(params.lakefs_repo, params.lakefs_commit):
            raise ValueError("resolvedDependencies must be exactly the lakeFS commit")
        if deps[0].digest.lakefs_commit != params.lakefs_commit:
            raise ValueError("resolvedDependencies digest does not match the commit")
        meta = self.predicate.run_details.metadata
        if parse_utc(meta.finished_on) < parse_utc(meta.started_on):
            raise ValueError("finishedOn is before startedOn")
        return self


class _Signature(_Model):
    keyid: Annotated[str, StringConstraints(max_length=256)]
    sig: Annotated[str, StringConstraints(max_length=4096)]


class _Envelope(_Model):
    payload: str
    payload_type: str = Field(alias="payloadType")
    signatures: tuple[_Signature, ...]


# --- Building and signing. --------------------------------------------------


def byproducts_from_manifest(manifest: BundleManifest) -> dict[str, str]:
    """Member path -> SHA-256 of every lineage, trace and energy member."""
    return {m.path: m.sha256 for m in manifest.members if m.kind in BYPRODUCT_KINDS}


def build_statement(
    *,
    bundle_sha256: str,
    lakefs_repo: str,
    lakefs_branch: str,
    lakefs_commit: str,
    builder_id: str,
    invocation_id: str,
    started_on: datetime,
    finished_on: datetime,
    byproducts: Mapping[str, str] | None = None,
) -> bytes:
    """The in-toto Statement (SLSA provenance v1) for one bundle, as canonical bytes.

    The result is checked with the same strict model the verifier uses, so the
    producer can never sign something the verifier would refuse.

    Args:
        bundle_sha256: hex SHA-256 of the compressed bundle (the subject).
        lakefs_repo: lakeFS repository id.
        lakefs_branch: branch the commit was bundled from.
        lakefs_commit: lakeFS commit id; also names the subject.
        builder_id: URI of the builder (the bundler agent's identity).
        invocation_id: id of this build run, e.g. the OpenLineage run id.
        started_on: UTC start of the build.
        finished_on: UTC end of the build.
        byproducts: name -> hex SHA-256 of run evidence stored in the bundle;
            see :func:`byproducts_from_manifest`.

    Returns:
        RFC 8785 bytes; sign exactly these with :func:`sign_statement`.

    Raises:
        ValueError: an argument is invalid (e.g. not UTC, not a 64-hex digest).
    """
    statement: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": bundle_name(lakefs_commit), "digest": {"sha256": bundle_sha256}}],
        "predicateType": SLSA_PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "lakefs_repo": lakefs_repo,
                    "lakefs_branch": lakefs_branch,
                    "lakefs_commit": lakefs_commit,
                },
                "resolvedDependencies": [
                    {
                        "uri": _lakefs_uri(lakefs_repo, lakefs_commit),
                        "digest": {"lakefsCommit": lakefs_commit},
                    }
                ],
            },
            "runDetails": {
                "builder": {"id": builder_id},
                "metadata": {
                    "invocationId": invocation_id,
                    "startedOn": format_utc(started_on),
                    "finishedOn": format_utc(finished_on),
                },
                "byproducts": [
                    {"name": name, "digest": {"sha256": digest}}
                    for name, digest in sorted((byproducts or {}).items())
                ],
            },
        },
    }
    data = canonical_bytes(statement)
    _Statement.model_validate_json(data)  # ValidationError is a ValueError
    return data


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE Pre-Authentication Encoding: the bytes that are actually signed.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths as ASCII
    decimal byte counts. Binding the type stops a signed payload from being
    replayed under another type.
    """
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def sign_statement(statement_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """Sign ``statement_bytes`` as-is and return the DSSE envelope JSON.

    Ed25519 is deterministic, so the same statement and key always give the
    same envelope bytes.

    Raises:
        ValueError: ``statement_bytes`` is not a Statement this project makes.
    """
    try:
        strict_json_loads(statement_bytes)
        _Statement.model_validate_json(statement_bytes)
    except ValueError as e:
        raise ValueError(f"refusing to sign: not a valid statement: {e}") from e
    signature = private_key.sign(pae(DSSE_PAYLOAD_TYPE, statement_bytes))
    envelope = {
        "payload": base64.b64encode(statement_bytes).decode("ascii"),
        "payloadType": DSSE_PAYLOAD_TYPE,
        "signatures": [
            {
                "keyid": key_id(private_key.public_key()),
                "sig": base64.b64encode(signature).decode("ascii"),
            }
        ],
    }
    return canonical_bytes(envelope)


# --- Verification. ------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedStatement:
    """A Statement whose DSSE signature verified against a trusted key.

    Attributes:
        statement: the Statement parsed from ``payload_bytes``.
        payload_bytes: the exact signed bytes; store these, never a re-encoding.
        key_id: id of the trusted key whose signature verified.
        subject_name: ``<lakefs_commit>.tar.zst``.
        subject_sha256: hex SHA-256 the bundle must have.
        lakefs_repo: from ``externalParameters``.
        lakefs_branch: from ``externalParameters``.
        lakefs_commit: from ``externalParameters``.
    """

    statement: dict[str, Any]
    payload_bytes: bytes
    key_id: str
    subject_name: str
    subject_sha256: str
    lakefs_repo: str
    lakefs_branch: str
    lakefs_commit: str


def _b64decode(s: str) -> bytes:
    # DSSE allows standard or URL-safe base64; anything else is refused.
    if not _B64_STD.fullmatch(s):
        if not _B64_URL.fullmatch(s):
            raise ValueError("not base64")
        s = s.translate(str.maketrans("-_", "+/"))
    s += "=" * (-len(s) % 4)
    return base64.b64decode(s, validate=True)


def verify_envelope(
    envelope_bytes: bytes,
    trusted: TrustedKeys,
    *,
    max_bytes: int = DEFAULT_LIMITS.max_envelope_bytes,
) -> VerifiedStatement:
    """Check a DSSE envelope and return the Statement it signs.

    Policy: at least one signature must be by a key in ``trusted`` and verify.
    A signature by a trusted key that does *not* verify fails the whole
    envelope (it means tampering, not a rotated key); signatures by unknown
    keys are ignored. Fails closed: every path that does not end in a verified
    statement raises.

    Raises:
        VerificationError: the envelope is too large or unparsable, has the
            wrong payloadType, no signatures, no signature by a trusted key, a
            bad signature, or a payload that is not a valid Statement.
    """
    envelope, payload = _parse_envelope(envelope_bytes, max_bytes)
    kid = _check_signatures(envelope, payload, trusted)
    # Parse the exact signed bytes; never a re-encoding of them.
    try:
        statement = strict_json_loads(payload)
        model = _Statement.model_validate_json(payload)
    except ValidationError as e:
        raise VerificationError(f"attestation: {describe_validation_error(e, whole='<root>')}") from e
    except ValueError as e:
        raise VerificationError(f"attestation: not valid JSON: {e}") from e
    params = model.predicate.build_definition.external_parameters
    return VerifiedStatement(
        statement=statement,
        payload_bytes=payload,
        key_id=kid,
        subject_name=model.subject[0].name,
        subject_sha256=model.subject[0].digest.sha256,
        lakefs_repo=params.lakefs_repo,
        lakefs_branch=params.lakefs_branch,
        lakefs_commit=params.lakefs_commit,
    )


def _parse_envelope(envelope_bytes: bytes, max_bytes: int) -> tuple[_Envelope, bytes]:
    if len(envelope_bytes) > max_bytes:
        raise VerificationError(f"envelope: larger than {max_bytes} bytes")
    try:
        strict_json_loads(envelope_bytes)
        envelope = _Envelope.model_validate_json(envelope_bytes)
    except ValidationError as e:
        raise VerificationError(f"envelope: {describe_validation_error(e, whole='<root>')}") from e
    except ValueError as e:
        raise VerificationError(f"envelope: not valid JSON: {e}") from e
    if envelope.payload_type != DSSE_PAYLOAD_TYPE:
        raise VerificationError(
            f"envelope: payloadType {show_path(envelope.payload_type)!r}"
            f" is not {DSSE_PAYLOAD_TYPE!r}"
        )
    if not envelope.signatures:
        raise VerificationError("envelope: no signatures")
    if len(envelope.signatures) > _MAX_SIGNATURES:
        raise VerificationError(f"envelope: more than {_MAX_SIGNATURES} signatures")
    try:
        payload = _b64decode(envelope.payload)
    except ValueError as e:
        raise VerificationError("envelope: payload is not base64") from e
    return envelope, payload


def _check_signatures(envelope: _Envelope, payload: bytes, trusted: TrustedKeys) -> str:
    """Return the id of the first trusted key whose signature verifies."""
    message = pae(envelope.payload_type, payload)
    verified_by: list[str] = []
    for s in envelope.signatures:
        public_key = trusted.get(s.keyid)
        if public_key is None:
            continue
        try:
            public_key.verify(_b64decode(s.sig), message)
        except ValueError as e:
            raise VerificationError(f"envelope: signature by key {s.keyid} is not base64") from e
        except InvalidSignature as e:
            raise VerificationError(f"envelope: signature by key {s.keyid} does not verify") from e
        verified_by.append(s.keyid)
    if not verified_by:
        ids = ", ".join(show_path(s.keyid) for s in envelope.signatures[:4])
        raise VerificationError(f"envelope: no signature by a trusted key (keyids: {ids})")
    return verified_by[0]
