"""Ledger rows: the authoritative schema (docs/spec.md) and its one encoding.

Why one encoding: a row's ``hash``, the next row's ``prev`` and the Merkle
leaf are all digests of bytes, so every writer and verifier must derive the
same bytes. A row is stored as its RFC 8785 (JCS) canonical JSON followed by a
newline, and :func:`parse_jsonl` rejects any line that is not already in that
form. So "the bytes on disk" and "the bytes we hash" are always the same bytes
(never a re-encoding), even though the models are rebuilt on parsing.

Definitions (all hex digests are lowercase SHA-256):
    * ``leaf_bytes(row)``: canonical JSON of the whole row, ``hash`` included,
      without the newline. It is the JSONL line minus ``\\n`` and the RFC 6962
      Merkle leaf data.
    * ``hash``: SHA-256 of the canonical JSON of the row *without* the ``hash``
      key (so ``seq`` and ``prev`` are covered).
    * ``prev``: SHA-256 of the previous row's ``leaf_bytes``, i.e. of the
      previous line as stored minus its newline (``sha256sum`` can check it),
      or 64 zeros for ``seq`` 0.

Rows, candidates and parsed lines are untrusted input, so every model is
frozen, strict and forbids unknown keys; every string is bounded, and the
strings that end up in storage keys or in the sidecar's shell command
(commit id, branch, URIs) are restricted to safe alphabets.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Final, Self

import orjson
import rfc8785
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.canonical import canonical_bytes, sha256_hex
from worker.errors import IntegrityError, VerificationError, decode_json, describe_validation_error
from worker.ids import BranchName, CommitId, RepoId, Sha256Hex
from worker.utc import parse_utc

__all__ = [
    "GENESIS_PREV",
    "MAX_LINE_BYTES",
    "Checksums",
    "ConfigRef",
    "EnergyCarbon",
    "IndexCandidate",
    "LedgerRow",
    "ModelRef",
    "RowBody",
    "Signatures",
    "SnapshotRef",
    "compute_hash",
    "hash_matches",
    "is_canonical",
    "leaf_bytes",
    "parse_candidate",
    "parse_jsonl",
    "parse_line",
    "row_to_line",
    "unhashed_bytes",
]

GENESIS_PREV: Final = "0" * 64
"""``prev`` of the row with ``seq`` 0: there is no previous line to hash."""

MAX_LINE_BYTES: Final = 1024 * 1024
"""Largest JSONL line (and candidate message) we parse; real rows are a few KiB."""

# JCS encodes numbers as IEEE doubles; larger integers would not round-trip.
_MAX_SAFE_INT: Final = 2**53 - 1

# Digest, repository, branch and commit rules live in worker.ids.
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# W3C trace id of the bundle run, or empty when it ran without a valid span.
_TRACE_ID = r"^(?:[0-9a-f]{32})?$"
# Absolute URI, printable ASCII without spaces: it is pasted into restore_cmd.
_URI = r"^[a-z][a-z0-9+.\-]*://[!-~]+$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_PRINTABLE = r"^[!-~]+$"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"

Uri = Annotated[str, Field(min_length=1, max_length=2048, pattern=_URI)]
Text = Annotated[str, Field(min_length=1, max_length=1024, pattern=_NO_CONTROL)]

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


class SnapshotRef(BaseModel):
    """A frozen STAC document and the lakeFS ref it was read at."""

    model_config = _STRICT

    stac: Uri
    lakefs_ref: Uri


class ModelRef(BaseModel):
    """A model binary that ran in production with this data."""

    model_config = _STRICT

    name: Annotated[str, Field(pattern=_NAME)]
    version: Annotated[str, Field(pattern=_NAME)]
    uri: Uri
    sha256: Sha256Hex


class ConfigRef(BaseModel):
    """A pipeline config file (path in the lakeFS repository) and its digest."""

    model_config = _STRICT

    path: Text
    sha256: Sha256Hex

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError("must be a relative path without '..'")
        return v


class Checksums(BaseModel):
    """Digest of the bundle file the row points to."""

    model_config = _STRICT

    artifact_sha256: Sha256Hex


class Signatures(BaseModel):
    """Where the in-toto/SLSA attestation is and which key signed it."""

    model_config = _STRICT

    in_toto: Uri
    key_id: Annotated[str, Field(max_length=256, pattern=_PRINTABLE)]


class EnergyCarbon(BaseModel):
    """Energy and carbon of the bundling run, with the method that produced them."""

    model_config = _STRICT

    kwh: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    co2e_kg: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    method: Text


class RowBody(BaseModel):
    """The row fields of docs/spec.md without ``seq``/``prev``/``hash``: what the bundler asserts about one commit.

    Every field is required (no defaults), so a parsed row dumps back to the
    same keys it was parsed from, which the canonical-bytes check relies on.
    """

    model_config = _STRICT

    lakefs_repo: RepoId
    lakefs_branch: BranchName
    lakefs_commit: CommitId
    created_at: str
    producer: Text
    openlineage_run_id: Annotated[str, Field(pattern=_UUID)]
    otel_trace_id: Annotated[str, Field(pattern=_TRACE_ID)]
    artifact_uri: Uri
    data_snapshot: tuple[SnapshotRef, ...] = Field(max_length=50_000)
    models: tuple[ModelRef, ...] = Field(max_length=1000)
    configs: tuple[ConfigRef, ...] = Field(max_length=10_000)
    checksums: Checksums
    signatures: Signatures
    energy_carbon: EnergyCarbon

    @field_validator("created_at")
    @classmethod
    def _created_at(cls, v: str) -> str:
        parse_utc(v)
        return v


class LedgerRow(RowBody):
    """A :class:`RowBody` placed in the ledger: position and chain links.

    Build one with :func:`worker.ledger.chain.next_row`; constructing it by hand
    does not check ``prev`` or ``hash`` (that is :func:`verify_chain`'s job).
    """

    seq: Annotated[int, Field(ge=0, le=_MAX_SAFE_INT)]
    prev: Sha256Hex
    hash: Sha256Hex

    def body(self) -> RowBody:
        """The bundler's part of the row, without ``seq``/``prev``/``hash``."""
        return RowBody(**{name: getattr(self, name) for name in RowBody.model_fields})


class IndexCandidate(BaseModel):
    """What the bundler publishes on the candidates topic for the writer to append.

    ``bundle_sha256`` and ``attestation_uri`` repeat fields of ``body`` so the
    writer can report duplicates without opening the body; they must agree
    with it, or the message is refused.
    """

    model_config = _STRICT

    body: RowBody
    bundle_sha256: Sha256Hex
    attestation_uri: Uri
    request_id: Annotated[str, Field(max_length=4096)]

    @model_validator(mode="after")
    def _agrees_with_body(self) -> Self:
        if self.bundle_sha256 != self.body.checksums.artifact_sha256:
            raise ValueError("bundle_sha256 differs from body.checksums.artifact_sha256")
        if self.attestation_uri != self.body.signatures.in_toto:
            raise ValueError("attestation_uri differs from body.signatures.in_toto")
        return self

    def to_bytes(self) -> bytes:
        """The Kafka value: canonical JSON, so re-publishing is byte-identical."""
        return canonical_bytes(self.model_dump(mode="json"))


def leaf_bytes(row: LedgerRow) -> bytes:
    """Canonical JSON of the whole row: the JSONL line without ``\\n``, the Merkle leaf."""
    return canonical_bytes(row.model_dump(mode="json"))


def row_to_line(row: LedgerRow) -> bytes:
    """The row's JSONL line: :func:`leaf_bytes` plus ``\\n``."""
    return leaf_bytes(row) + b"\n"


def compute_hash(row: LedgerRow) -> str:
    """What ``row.hash`` must be: SHA-256 of the canonical row without ``hash``."""
    return sha256_hex(canonical_bytes(row.model_dump(mode="json", exclude={"hash"})))


def is_canonical(line: bytes, row: LedgerRow) -> bool:
    """Whether ``line`` is exactly the RFC 8785 encoding of ``row``.

    ``row`` is the schema-checked parse of ``line``, which bounds what the line
    can hold: ASCII keys (unknown keys are refused), integers within ±2**53,
    and floats only in ``energy_carbon``. For such a value orjson's sorted
    compact encoding is JCS once those floats are spelled by the reference,
    so the fast path is one parse, two float spellings and one encode. Where
    it says no (a non-canonical line, or a whole-valued float such as
    ``2**53`` that parsing turns into an integer) the row model decides.
    """
    try:
        obj = orjson.loads(line)
        energy = obj["energy_carbon"]
        obj["energy_carbon"] = {
            k: orjson.Fragment(rfc8785.dumps(v)) if type(v) is float else v for k, v in energy.items()
        }
        if orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) == line:
            return True
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, rfc8785.CanonicalizationError,
            KeyError, TypeError, AttributeError, ValueError):
        pass
    return leaf_bytes(row) == line


def unhashed_bytes(line: bytes, row_hash: str) -> bytes | None:
    """The canonical row without its ``hash`` member, cut out of a canonical line.

    In canonical JSON the members are sorted and ``hash`` is neither first
    nor last, so removing ``,"hash":"<hex>"`` leaves exactly the canonical
    encoding of the rest. The pattern cannot occur inside a string value
    (its quotes would be escaped). ``None`` if it does not occur exactly once.
    """
    member = b',"hash":"' + row_hash.encode("ascii") + b'"'
    if line.count(member) != 1:
        return None
    return line.replace(member, b"", 1)


def hash_matches(line: bytes, row: LedgerRow) -> bool:
    """``row.hash`` is the SHA-256 of the canonical row without ``hash`` (fast path)."""
    rest = unhashed_bytes(line, row.hash)
    if rest is None:
        return row.hash == compute_hash(row)
    return hashlib.sha256(rest).hexdigest() == row.hash


def parse_line(line: bytes, number: int, *, max_line_bytes: int = MAX_LINE_BYTES) -> LedgerRow:
    """Parse one ledger line (without its newline): schema and canonical form.

    Raises:
        VerificationError: naming line ``number``, if the line is empty, too
            long, not a valid row, or not canonical.
    """
    if not line:
        raise VerificationError(f"ledger line {number}: empty line")
    if len(line) > max_line_bytes:
        raise VerificationError(f"ledger line {number}: longer than {max_line_bytes} bytes")
    try:
        row = LedgerRow.model_validate_json(line)
    except ValidationError as e:
        raise VerificationError(f"ledger line {number}: {describe_validation_error(e, whole='(row)')}") from e
    if not is_canonical(line, row):
        raise VerificationError(
            f"ledger line {number}: not canonical RFC 8785 JSON (re-encoded or edited)"
        )
    return row


def parse_jsonl(data: bytes, *, max_line_bytes: int = MAX_LINE_BYTES) -> list[LedgerRow]:
    """Parse the ledger file. Checks each line's form, not the chain.

    Every line must be a complete row in canonical form and end with ``\\n``;
    a missing final newline means a torn write and is refused, not repaired.
    Call :func:`worker.ledger.chain.verify_chain` on the result (or use
    ``chain.verify_jsonl``) before trusting it.

    Raises:
        VerificationError: naming the 1-based line number of the first line
            that is empty, too long, not a valid row, or not canonical.
    """
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1]:
        raise VerificationError(f"ledger line {len(lines)}: no final newline (truncated write?)")
    return [
        parse_line(line, number, max_line_bytes=max_line_bytes)
        for number, line in enumerate(lines[:-1], start=1)
    ]


def parse_candidate(value: bytes, *, max_bytes: int = MAX_LINE_BYTES) -> IndexCandidate:
    """Parse a candidates-topic value.

    Unlike ledger lines, candidates need not be canonical: the writer
    re-encodes the body into the row it appends, and only that row is hashed.

    Raises:
        IntegrityError: too large, or not a valid candidate; never retried.
    """
    if len(value) > max_bytes:
        raise IntegrityError(f"index candidate: larger than {max_bytes} bytes")
    return decode_json(IndexCandidate, value, "index candidate", whole="(row)")
