"""Row schema, canonical encoding, JSONL parsing, candidates, UTC timestamps."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.unit.ledger.factories import (
    T0,
    body_dict,
    make_body,
    make_candidate,
    make_chain,
    to_jsonl,
)
from worker.canonical import canonical_bytes, sha256_hex
from worker.errors import IntegrityError, VerificationError
from worker.ledger.row import (
    GENESIS_PREV,
    IndexCandidate,
    LedgerRow,
    RowBody,
    compute_hash,
    leaf_bytes,
    parse_candidate,
    parse_jsonl,
    row_to_line,
)
from worker.utc import format_utc

SPEC_FIELDS = {
    "lakefs_repo",
    "lakefs_branch",
    "lakefs_commit",
    "created_at",
    "producer",
    "openlineage_run_id",
    "otel_trace_id",
    "artifact_uri",
    "data_snapshot",
    "models",
    "configs",
    "checksums",
    "signatures",
    "energy_carbon",
}


def test_body_has_exactly_the_spec_fields() -> None:
    assert set(RowBody.model_fields) == SPEC_FIELDS
    assert set(LedgerRow.model_fields) == SPEC_FIELDS | {"seq", "prev", "hash"}


def test_line_is_canonical_json_plus_newline_and_round_trips() -> None:
    rows = make_chain(8)
    for row in rows:
        line = row_to_line(row)
        assert line.endswith(b"\n") and b"\n" not in line[:-1]
        assert line[:-1] == leaf_bytes(row) == canonical_bytes(json.loads(line))
    assert parse_jsonl(to_jsonl(rows)) == rows


def test_hash_covers_everything_but_itself() -> None:
    row = make_chain(1)[0]
    unhashed = json.loads(row_to_line(row))
    del unhashed["hash"]
    assert row.hash == compute_hash(row) == sha256_hex(canonical_bytes(unhashed))
    assert row.prev == GENESIS_PREV and row.seq == 0


def test_body_extraction_drops_chain_fields() -> None:
    row = make_chain(3)[2]
    assert row.body() == make_body(2)
    assert type(row.body()) is RowBody


def test_models_are_frozen() -> None:
    row = make_chain(1)[0]
    with pytest.raises(ValueError, match="frozen"):
        row.seq = 5


def _line(row_json: dict[str, Any]) -> bytes:
    return canonical_bytes(row_json) + b"\n"


def _good_row_json() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(row_to_line(make_chain(1)[0]))
    return parsed


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d.update(extra="x"), "extra"),
        (lambda d: d.pop("producer"), "producer"),
        (lambda d: d.update(lakefs_commit="abc123"), "lakefs_commit"),
        (lambda d: d.update(lakefs_commit="A" * 64), "lakefs_commit"),
        (lambda d: d.update(lakefs_repo="Bad_Repo"), "lakefs_repo"),
        (lambda d: d.update(lakefs_branch="../etc"), "lakefs_branch"),
        (lambda d: d.update(created_at="2025-11-30T12:00:00"), "created_at"),
        (lambda d: d.update(created_at="2025-11-30T12:00:00+00:00"), "created_at"),
        (lambda d: d.update(created_at="2025-11-30T12:00:00.000000Z"), "created_at"),
        (lambda d: d.update(created_at="2025-02-30T12:00:00Z"), "created_at"),
        (lambda d: d.update(seq=-1), "seq"),
        (lambda d: d.update(seq="0"), "seq"),
        (lambda d: d.update(prev="00"), "prev"),
        (lambda d: d.update(artifact_uri="s3://bucket/a b.tar.zst"), "artifact_uri"),
        (lambda d: d.update(artifact_uri="not a uri"), "artifact_uri"),
        (lambda d: d.update(producer="line\nbreak"), "producer"),
        (lambda d: d.update(openlineage_run_id="run-1"), "openlineage_run_id"),
        (lambda d: d.update(otel_trace_id="trace-1"), "otel_trace_id"),
        (lambda d: d["energy_carbon"].update(kwh=-1.0), "energy_carbon.kwh"),
        (lambda d: d["energy_carbon"].update(kwh="1.0"), "energy_carbon.kwh"),
        (lambda d: d["configs"].append({"path": "/etc/passwd", "sha256": "0" * 64}), "configs"),
        (lambda d: d["configs"].append({"path": "a/../b", "sha256": "0" * 64}), "configs"),
        (lambda d: d.update(models=[{"name": "m", "version": "1", "uri": "s3://m"}]), "models"),
        (lambda d: d.update(signatures={"in_toto": "s3://x"}), "signatures"),
    ],
)
def test_invalid_row_is_refused_naming_line(mutate: Any, why: str) -> None:
    bad = _good_row_json()
    mutate(bad)
    good_line = row_to_line(make_chain(1)[0])
    with pytest.raises(VerificationError, match=rf"^ledger line 2: .*{re.escape(why)}"):
        parse_jsonl(good_line + _line(bad))


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"{not json}\n", 1),
        (b"\n", 1),
        (b"[]\n", 1),
        (b"\xff\xfe\n", 1),
    ],
)
def test_malformed_lines(data: bytes, line: int) -> None:
    with pytest.raises(VerificationError, match=rf"^ledger line {line}: "):
        parse_jsonl(data)


def test_non_canonical_but_valid_json_is_refused() -> None:
    rows = make_chain(3)
    pretty = json.dumps(json.loads(row_to_line(rows[1])), indent=1).replace("\n", " ").encode()
    data = row_to_line(rows[0]) + pretty + b"\n" + row_to_line(rows[2])
    with pytest.raises(VerificationError, match=r"^ledger line 2: not canonical"):
        parse_jsonl(data)
    # Same keys in another order is also a different byte string.
    reordered = json.dumps(json.loads(row_to_line(rows[1])), separators=(",", ":"), sort_keys=False)
    reordered_obj = json.loads(reordered)
    unsorted = json.dumps(dict(reversed(reordered_obj.items())), separators=(",", ":"))
    data = row_to_line(rows[0]) + unsorted.encode() + b"\n"
    with pytest.raises(VerificationError, match=r"^ledger line 2: not canonical"):
        parse_jsonl(data)


def test_truncated_final_line_is_refused() -> None:
    data = to_jsonl(make_chain(3))
    with pytest.raises(VerificationError, match=r"^ledger line 3: no final newline"):
        parse_jsonl(data[:-1])
    with pytest.raises(VerificationError, match=r"^ledger line 3: "):
        parse_jsonl(data[:-40])


def test_empty_file_is_an_empty_ledger() -> None:
    assert parse_jsonl(b"") == []


def test_line_length_limit() -> None:
    data = to_jsonl(make_chain(2))
    with pytest.raises(VerificationError, match=r"^ledger line 1: longer than 100 bytes"):
        parse_jsonl(data, max_line_bytes=100)


def test_candidate_round_trip_and_bytes_are_canonical() -> None:
    candidate = make_candidate(7, request_id="req-7")
    raw = candidate.to_bytes()
    assert raw == canonical_bytes(json.loads(raw))
    assert parse_candidate(raw) == candidate
    # Non-canonical spelling of the same candidate is accepted (only rows are hashed).
    assert parse_candidate(json.dumps(json.loads(raw), indent=2).encode()) == candidate


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bundle_sha256", "f" * 64, "bundle_sha256 differs"),
        ("attestation_uri", "s3://elsewhere/att.json", "attestation_uri differs"),
        ("bundle_sha256", "xyz", "bundle_sha256"),
        ("request_id", 5, "request_id"),
    ],
)
def test_candidate_must_agree_with_its_body(field: str, value: Any, message: str) -> None:
    raw = json.loads(make_candidate(1).to_bytes())
    raw[field] = value
    with pytest.raises(IntegrityError, match=re.escape(message)):
        parse_candidate(json.dumps(raw).encode())


def test_candidate_limits_and_garbage() -> None:
    with pytest.raises(IntegrityError, match="larger than"):
        parse_candidate(b"{}" + b" " * 100, max_bytes=50)
    with pytest.raises(IntegrityError, match="index candidate"):
        parse_candidate(b"\x00not json")
    with pytest.raises(IntegrityError, match="bundle_sha256: Field required"):
        parse_candidate(json.dumps({"body": body_dict(1)}).encode())


def test_candidate_cannot_be_built_inconsistent() -> None:
    body = make_body(1)
    with pytest.raises(ValueError, match="bundle_sha256 differs"):
        IndexCandidate(
            body=body,
            bundle_sha256="0" * 64,
            attestation_uri=body.signatures.in_toto,
            request_id="",
        )


def test_floats_round_trip_exactly_through_jcs() -> None:
    for kwh in (0.1, 1.0, 1e-07, 123456789.125, 5e-324, 1.7976931348623157e308):
        body = make_body(1, energy_carbon={"kwh": kwh, "co2e_kg": 0.0, "method": "m"})
        row = LedgerRow(**dict(body), seq=0, prev=GENESIS_PREV, hash="0" * 64)
        (parsed,) = parse_jsonl(row_to_line(row))
        assert parsed.energy_carbon.kwh == kwh


def test_pinned_clock_in_factories() -> None:
    assert make_body(0).created_at == format_utc(T0)
