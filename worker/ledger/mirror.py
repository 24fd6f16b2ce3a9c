"""Derived views of the ledger: the Parquet mirror and the YAML sidecars.

The ledger's rows are authoritative (docs/spec.md); these are conveniences
for analytics (Parquet) and for people (``meta/<commit>.yaml``, the sidecar
of docs/spec.md). Both are pure functions of the rows, so they can always be rebuilt, and
:func:`check_derived` proves they still agree with the ledger.

Parquet decisions: one fixed schema with explicit types (no inference, no
pandas metadata), ``created_at`` as ``timestamp[us, UTC]`` (the row's
canonical spelling makes the round trip exact), nested lists as
``list<struct>``, zstd, rows in ``seq`` order. With the same pyarrow version
the bytes are reproducible.

Sidecar decisions: the human-facing keys, plus ``seq`` and ``row_hash`` to
tie the file to its ledger row and ``ledger`` (where that row lives, which is
what ``registry_bucket`` is for). ``includes`` lists only what the row
records (no "evaluation metrics": rows do not reference any). ``restore_cmd``
quotes each argument for the shell, although the row's alphabets already
make quoting a no-op.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import ValidationError

from worker.constants import INDEX_JSONL_KEY
from worker.errors import VerificationError, describe_validation_error
from worker.ledger.chain import verify_chain
from worker.ledger.row import LedgerRow
from worker.utc import format_utc, parse_utc

__all__ = [
    "MAX_SIDECAR_BYTES",
    "PARQUET_SCHEMA",
    "SCHEMA_VERSION",
    "check_derived",
    "check_mirrors",
    "from_parquet",
    "parse_sidecar",
    "sidecar_dict",
    "sidecar_yaml",
    "to_parquet",
]

SCHEMA_VERSION: Final = "kfm-rollback-index/1"
MAX_SIDECAR_BYTES: Final = 64 * 1024
_SCHEMA_KEY: Final = b"kfm.schema"
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_BUCKET_RE = re.compile(rf"^{_BUCKET}$")
_LEDGER_RE = re.compile(rf"s3://({_BUCKET})/{re.escape(INDEX_JSONL_KEY)}")

_GOVERNANCE: Final = {
    "provenance": "PROV-O linked",
    "signature": "slsa v1.0 attestation",
    "retention": "365d",
}


def _req(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _list_of(*fields: pa.Field) -> pa.DataType:
    # "element" is the name Parquet gives list items; using it keeps the
    # schema read back identical to the one written.
    return pa.list_(_req("element", pa.struct(list(fields))))


_S = pa.string()
PARQUET_SCHEMA: Final = pa.schema(
    [
        _req("seq", pa.int64()),
        _req("lakefs_repo", _S),
        _req("lakefs_branch", _S),
        _req("lakefs_commit", _S),
        _req("created_at", pa.timestamp("us", tz="UTC")),
        _req("producer", _S),
        _req("openlineage_run_id", _S),
        _req("otel_trace_id", _S),
        _req("artifact_uri", _S),
        _req("data_snapshot", _list_of(_req("stac", _S), _req("lakefs_ref", _S))),
        _req(
            "models",
            _list_of(_req("name", _S), _req("version", _S), _req("uri", _S), _req("sha256", _S)),
        ),
        _req("configs", _list_of(_req("path", _S), _req("sha256", _S))),
        _req("checksums", pa.struct([_req("artifact_sha256", _S)])),
        _req("signatures", pa.struct([_req("in_toto", _S), _req("key_id", _S)])),
        _req(
            "energy_carbon",
            pa.struct(
                [_req("kwh", pa.float64()), _req("co2e_kg", pa.float64()), _req("method", _S)]
            ),
        ),
        _req("prev", _S),
        _req("hash", _S),
    ],
    metadata={_SCHEMA_KEY: SCHEMA_VERSION.encode()},
)


def to_parquet(rows: Sequence[LedgerRow], *, start: int = 0) -> bytes:
    """The Parquet mirror of ``rows``, the ledger's rows from seq ``start`` on.

    The mirror is a dataset of one file per entry bundle (256 rows), so each
    file holds a contiguous run of the ledger.

    Raises:
        ValueError: ``rows`` are not the ledger in order (``seq`` != position).
    """
    records: list[dict[str, Any]] = []
    for position, row in enumerate(rows, start=start):
        if row.seq != position:
            raise ValueError(f"row at position {position} has seq {row.seq}")
        record = row.model_dump(mode="json")
        record["created_at"] = parse_utc(row.created_at)
        records.append(record)
    table = pa.Table.from_pylist(records, schema=PARQUET_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def from_parquet(data: bytes) -> list[LedgerRow]:
    """Read a Parquet mirror back into rows (which are then as untrusted as the file).

    Raises:
        VerificationError: unreadable, a different schema, or a row that is
            not a valid :class:`LedgerRow` (named by position).
    """
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise VerificationError(f"parquet mirror: unreadable: {e}") from e
    metadata = table.schema.metadata or {}
    if metadata.get(_SCHEMA_KEY) != SCHEMA_VERSION.encode():
        raise VerificationError(f"parquet mirror: not schema {SCHEMA_VERSION}")
    if not table.schema.equals(PARQUET_SCHEMA, check_metadata=False):
        raise VerificationError("parquet mirror: column types differ from the fixed schema")
    rows: list[LedgerRow] = []
    for position, record in enumerate(table.to_pylist()):
        try:
            record["created_at"] = format_utc(record["created_at"])
            # Through JSON so that strict validation sees arrays and objects
            # exactly as it does for a JSONL line; floats round-trip via repr.
            rows.append(LedgerRow.model_validate_json(json.dumps(record)))
        except ValidationError as e:
            raise VerificationError(
                f"parquet mirror: row {position}: invalid: {describe_validation_error(e, '(row)')}"
            ) from e
        except (ValueError, TypeError) as e:
            raise VerificationError(f"parquet mirror: row {position}: invalid: {type(e).__name__}") from e
    return rows


def sidecar_dict(row: LedgerRow, registry_bucket: str) -> dict[str, Any]:
    """The sidecar's content as a mapping (what :func:`parse_sidecar` returns).

    Raises:
        ValueError: ``registry_bucket`` is not an S3 bucket name.
    """
    if not _BUCKET_RE.fullmatch(registry_bucket):
        raise ValueError(f"not an S3 bucket name: {registry_bucket!r}")
    includes = []
    if row.data_snapshot:
        includes.append("frozen STAC collections/items")
    if row.models:
        includes.append("model binaries")
    if row.configs:
        includes.append("pipeline configs (SHA-validated)")
    includes.append("OpenLineage run context")
    if row.otel_trace_id:
        includes.append("OTel trace tree")
    restore = ["kfm", "rollback", "--commit", row.lakefs_commit]
    restore += ["--bundle", row.artifact_uri, "--branch", row.lakefs_branch]
    return {
        "lakefs_repo": row.lakefs_repo,
        "lakefs_branch": row.lakefs_branch,
        "lakefs_commit": row.lakefs_commit,
        "rollback_bundle": row.artifact_uri,
        "includes": includes,
        "governance": dict(_GOVERNANCE),
        "restore_cmd": " ".join(shlex.quote(arg) for arg in restore),
        "seq": row.seq,
        "row_hash": row.hash,
        "ledger": f"s3://{registry_bucket}/{INDEX_JSONL_KEY}",
    }


def sidecar_yaml(row: LedgerRow, registry_bucket: str) -> bytes:
    """``meta/<commit>.yaml`` for ``row`` (the sidecar of docs/spec.md).

    Raises:
        ValueError: ``registry_bucket`` is not an S3 bucket name.
    """
    header = (
        f"# Derived from s3://{registry_bucket}/{INDEX_JSONL_KEY} (seq {row.seq}); "
        "the ledger row is authoritative.\n"
    )
    content = yaml.safe_dump(
        sidecar_dict(row, registry_bucket),
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,  # never fold long URIs or the command across lines
    )
    return (header + content).encode("utf-8")


def parse_sidecar(data: bytes) -> dict[str, Any]:
    """Parse a sidecar with ``yaml.safe_load`` (no object construction).

    Raises:
        VerificationError: too large, not UTF-8 YAML, or not a mapping with
            string keys.
    """
    if len(data) > MAX_SIDECAR_BYTES:
        raise VerificationError(f"sidecar: larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        loaded = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise VerificationError(f"sidecar: not valid YAML: {e}") from e
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise VerificationError("sidecar: not a mapping with string keys")
    return loaded


def _first_difference(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> str | None:
    for key, value in expected.items():
        if key not in actual:
            return f"{key} is missing"
        if actual[key] != value:
            return f"{key} differs"
    extra = sorted(set(actual) - set(expected))
    return f"unexpected key {extra[0]}" if extra else None


def _bucket_named_in(sidecar: Mapping[str, Any]) -> str:
    """The bucket a sidecar's ``ledger`` pointer names, or a placeholder that
    makes the comparison fail on ``ledger`` when the pointer is malformed."""
    match = _LEDGER_RE.fullmatch(str(sidecar.get("ledger", "")))
    return match.group(1) if match else "not-a-ledger-pointer"


def check_derived(
    rows: Sequence[LedgerRow],
    parquet_bytes: bytes,
    sidecars: Mapping[str, bytes],
    *,
    registry_bucket: str | None = None,
) -> None:
    """Check that the Parquet mirror and the sidecars agree with ``rows``.

    ``rows`` are the ledger (their chain is re-verified here, so a bad ledger
    cannot vouch for its mirrors). Rows are checked in ``seq`` order, Parquet
    first then sidecar, so the error names the first disagreeing row; sidecars
    for commits the ledger does not have are reported after that.

    Args:
        rows: the verified ledger rows.
        parquet_bytes: the Parquet mirror file.
        sidecars: sidecar bytes by lakeFS commit id.
        registry_bucket: if given, each sidecar's ``ledger`` pointer must name
            this bucket; if not, it must merely have the right form.

    Raises:
        VerificationError: naming the row (seq and commit) or commit that
            disagrees, or a mirror that cannot be read.
    """
    verify_chain(rows)
    check_mirrors(rows, parquet_bytes, sidecars, registry_bucket=registry_bucket)
    known = {row.lakefs_commit for row in rows}
    orphans = sorted(c for c in sidecars if c not in known)
    if orphans:
        raise VerificationError(f"sidecar for commit {orphans[0]} which has no ledger row")


def check_mirrors(
    rows: Sequence[LedgerRow],
    parquet_bytes: bytes,
    sidecars: Mapping[str, bytes],
    *,
    registry_bucket: str | None = None,
) -> None:
    """Check one run of rows against its Parquet file and their sidecars.

    ``rows`` are a contiguous, already verified run of the ledger (a whole
    ledger, or one entry bundle's rows with the dataset file of that bundle).

    Raises:
        VerificationError: naming the first row (seq and commit) that disagrees.
    """
    mirrored = from_parquet(parquet_bytes)
    if len(mirrored) != len(rows):
        raise VerificationError(
            f"parquet mirror has {len(mirrored)} rows, the ledger has {len(rows)}"
        )
    for row, copy in zip(rows, mirrored, strict=True):
        where = f"seq={row.seq} (commit {row.lakefs_commit})"
        if copy != row:
            diff = _first_difference(row.model_dump(), copy.model_dump()) or "a value differs"
            raise VerificationError(f"parquet mirror disagrees with the ledger at {where}: {diff}")
        raw = sidecars.get(row.lakefs_commit)
        if raw is None:
            raise VerificationError(f"sidecar missing for {where}")
        try:
            actual = parse_sidecar(raw)
        except VerificationError as e:
            raise VerificationError(f"sidecar for {where}: {e}") from e
        bucket = registry_bucket or _bucket_named_in(actual)
        mismatch = _first_difference(sidecar_dict(row, bucket), actual)
        if mismatch is not None:
            raise VerificationError(f"sidecar disagrees with the ledger at {where}: {mismatch}")
