"""Derived views: the Parquet mirror, YAML sidecars, and the check that they agree."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.unit.ledger.factories import make_body, make_chain
from worker.errors import VerificationError
from worker.ledger.chain import next_row
from worker.ledger.mirror import (
    MAX_SIDECAR_BYTES,
    PARQUET_SCHEMA,
    check_derived,
    from_parquet,
    parse_sidecar,
    sidecar_dict,
    sidecar_yaml,
    to_parquet,
)
from worker.ledger.row import LedgerRow

BUCKET = "kfm-registry"
N = 20


@pytest.fixture(scope="module")
def rows() -> list[LedgerRow]:
    return make_chain(N)


@pytest.fixture(scope="module")
def parquet(rows: list[LedgerRow]) -> bytes:
    return to_parquet(rows)


def sidecars_of(rows: list[LedgerRow]) -> dict[str, bytes]:
    return {r.lakefs_commit: sidecar_yaml(r, BUCKET) for r in rows}


# --- Parquet -------------------------------------------------------------------------------------


def test_parquet_round_trip_is_exact(rows: list[LedgerRow], parquet: bytes) -> None:
    assert from_parquet(parquet) == rows
    assert from_parquet(to_parquet([])) == []


def test_parquet_is_deterministic(rows: list[LedgerRow], parquet: bytes) -> None:
    assert to_parquet(rows) == parquet


def test_parquet_schema_is_fixed_and_explicit(parquet: bytes) -> None:
    schema = pq.read_schema(pa.BufferReader(parquet))
    assert schema.equals(PARQUET_SCHEMA, check_metadata=False)
    assert b"pandas" not in (schema.metadata or {})
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("seq").type == pa.int64()
    assert schema.field("energy_carbon").type.field("kwh").type == pa.float64()
    assert pa.types.is_list(schema.field("models").type)
    assert pa.types.is_struct(schema.field("models").type.value_type)
    assert all(not f.nullable for f in schema)
    table = pq.read_table(pa.BufferReader(parquet))
    assert table.column("seq").to_pylist() == list(range(N))


def test_to_parquet_wants_the_whole_ledger_in_order(rows: list[LedgerRow]) -> None:
    with pytest.raises(ValueError, match="position 0 has seq 1"):
        to_parquet(rows[1:])
    with pytest.raises(ValueError, match="position 3 has seq 4"):
        to_parquet([*rows[:3], rows[4], rows[3]])


def _write(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_from_parquet_refuses_foreign_files(parquet: bytes) -> None:
    with pytest.raises(VerificationError, match="unreadable"):
        from_parquet(b"not parquet")
    with pytest.raises(VerificationError, match="unreadable"):
        from_parquet(parquet[: len(parquet) // 2])
    table = pq.read_table(pa.BufferReader(parquet))
    with pytest.raises(VerificationError, match="not schema"):
        from_parquet(_write(table.replace_schema_metadata({})))
    renamed = table.rename_columns(["sequence", *table.column_names[1:]])
    renamed = renamed.replace_schema_metadata(table.schema.metadata)
    with pytest.raises(VerificationError, match="column types differ"):
        from_parquet(_write(renamed))
    as_strings = table.set_column(0, "seq", pa.array([str(i) for i in range(N)]))
    with pytest.raises(VerificationError, match="column types differ"):
        from_parquet(_write(as_strings.replace_schema_metadata(table.schema.metadata)))


def test_from_parquet_refuses_invalid_values(parquet: bytes) -> None:
    table = pq.read_table(pa.BufferReader(parquet))
    bad = pa.array(["not-a-commit", *table.column("lakefs_commit").to_pylist()[1:]])
    index = table.column_names.index("lakefs_commit")
    mutated = table.set_column(index, pa.field("lakefs_commit", pa.string(), False), bad)
    with pytest.raises(VerificationError, match="row 0: invalid"):
        from_parquet(_write(mutated))


# --- Sidecars ------------------------------------------------------------------------------------


def test_sidecar_follows_the_spec(rows: list[LedgerRow]) -> None:
    row = rows[5]
    data = sidecar_yaml(row, BUCKET)
    assert data.startswith(b"# Derived from s3://kfm-registry/index/rollback-index.jsonl")
    parsed = parse_sidecar(data)
    assert list(parsed) == [
        "lakefs_repo",
        "lakefs_branch",
        "lakefs_commit",
        "rollback_bundle",
        "includes",
        "governance",
        "restore_cmd",
        "seq",
        "row_hash",
        "ledger",
    ]
    assert parsed == sidecar_dict(row, BUCKET)
    assert parsed["rollback_bundle"] == row.artifact_uri
    assert parsed["governance"] == {
        "provenance": "PROV-O linked",
        "signature": "slsa v1.0 attestation",
        "retention": "365d",
    }
    assert parsed["restore_cmd"] == (
        f"kfm rollback --commit {row.lakefs_commit} --bundle {row.artifact_uri} "
        f"--branch {row.lakefs_branch}"
    )
    assert (parsed["seq"], parsed["row_hash"]) == (5, row.hash)
    assert parsed["ledger"] == "s3://kfm-registry/index/rollback-index.jsonl"


@pytest.mark.parametrize(
    ("i", "includes"),
    [
        (0, ["pipeline configs (SHA-validated)", "OpenLineage run context"]),
        (
            1,
            [
                "frozen STAC collections/items",
                "model binaries",
                "pipeline configs (SHA-validated)",
                "OpenLineage run context",
                "OTel trace tree",
            ],
        ),
        (
            2,
            [
                "frozen STAC collections/items",
                "pipeline configs (SHA-validated)",
                "OpenLineage run context",
                "OTel trace tree",
            ],
        ),
    ],
)
def test_includes_list_only_what_the_row_records(i: int, includes: list[str]) -> None:
    row = make_chain(i + 1)[i]
    assert parse_sidecar(sidecar_yaml(row, BUCKET))["includes"] == includes


def test_yaml_keeps_strings_that_look_like_numbers() -> None:
    body = make_body(1, lakefs_commit="1" * 64, lakefs_branch="1e5")
    row = next_row(None, body)
    parsed = parse_sidecar(sidecar_yaml(row, BUCKET))
    assert parsed["lakefs_commit"] == "1" * 64 and parsed["lakefs_branch"] == "1e5"


def test_sidecar_refuses_bad_bucket(rows: list[LedgerRow]) -> None:
    for bucket in ["", "Upper", "a b", "x" * 64, "bucket/key"]:
        with pytest.raises(ValueError, match="bucket"):
            sidecar_yaml(rows[0], bucket)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"key: [unclosed", "not valid YAML"),
        (b"\xff\xfe", "not valid YAML"),
        (b"- a\n- b\n", "not a mapping"),
        (b"1: x\n", "string keys"),
        (b"", "not a mapping"),
        (b"!!python/object/apply:os.system ['true']\n", "not valid YAML"),
        (b"a: b\n" + b"#" * MAX_SIDECAR_BYTES, "larger than"),
    ],
)
def test_parse_sidecar_refuses(data: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_sidecar(data)


# --- check_derived -------------------------------------------------------------------------------


def test_check_derived_accepts_faithful_mirrors(rows: list[LedgerRow], parquet: bytes) -> None:
    check_derived(rows, parquet, sidecars_of(rows))
    check_derived(rows, parquet, sidecars_of(rows), registry_bucket=BUCKET)
    check_derived([], to_parquet([]), {})


def _changed(rows: list[LedgerRow], index: int, **update: object) -> list[LedgerRow]:
    return [r.model_copy(update=update) if r.seq == index else r for r in rows]


def _edit_sidecar(sidecars: dict[str, bytes], commit: str, old: str, new: str) -> dict[str, bytes]:
    assert old.encode() in sidecars[commit]
    return {**sidecars, commit: sidecars[commit].replace(old.encode(), new.encode(), 1)}


Case = Callable[[list[LedgerRow]], tuple[bytes, dict[str, bytes]]]
C7 = 7  # the row the cases tamper with


def _commit(rows: list[LedgerRow], i: int) -> str:
    return rows[i].lakefs_commit


DISAGREEMENTS: list[tuple[str, Case, str]] = [
    (
        "parquet field changed",
        lambda rows: (to_parquet(_changed(rows, C7, producer="elsewhere")), sidecars_of(rows)),
        r"parquet mirror disagrees with the ledger at seq=7 \(commit {c7}\): producer differs",
    ),
    (
        "parquet nested field changed",
        lambda rows: (
            to_parquet(
                _changed(
                    rows, C7, energy_carbon=rows[C7].energy_carbon.model_copy(update={"kwh": 9.5})
                )
            ),
            sidecars_of(rows),
        ),
        r"at seq=7 \(commit {c7}\): energy_carbon differs",
    ),
    (
        "parquet row missing",
        lambda rows: (to_parquet(rows[:-1]), sidecars_of(rows)),
        f"parquet mirror has {N - 1} rows, the ledger has {N}",
    ),
    (
        "sidecar missing",
        lambda rows: (
            to_parquet(rows),
            {k: v for k, v in sidecars_of(rows).items() if k != _commit(rows, C7)},
        ),
        r"sidecar missing for seq=7 \(commit {c7}\)",
    ),
    (
        "sidecar command edited",
        lambda rows: (
            to_parquet(rows),
            _edit_sidecar(sidecars_of(rows), _commit(rows, C7), "--branch prod", "--branch main"),
        ),
        r"sidecar disagrees with the ledger at seq=7 \(commit {c7}\): restore_cmd differs",
    ),
    (
        "sidecar seq edited",
        lambda rows: (
            to_parquet(rows),
            _edit_sidecar(sidecars_of(rows), _commit(rows, C7), "seq: 7", "seq: 8"),
        ),
        r"at seq=7 \(commit {c7}\): seq differs",
    ),
    (
        "sidecar key removed",
        lambda rows: (
            to_parquet(rows),
            _edit_sidecar(sidecars_of(rows), _commit(rows, C7), "row_hash:", "row_hash_:"),
        ),
        r"at seq=7 \(commit {c7}\): row_hash is missing",
    ),
    (
        "sidecar key added",
        lambda rows: (
            to_parquet(rows),
            {
                **sidecars_of(rows),
                _commit(rows, C7): sidecars_of(rows)[_commit(rows, C7)] + b"note: hi\n",
            },
        ),
        r"at seq=7 \(commit {c7}\): unexpected key note",
    ),
    (
        "sidecar of another row",
        lambda rows: (
            to_parquet(rows),
            {**sidecars_of(rows), _commit(rows, C7): sidecar_yaml(rows[8], BUCKET)},
        ),
        r"at seq=7 \(commit {c7}\): lakefs_commit differs",
    ),
    (
        "sidecar not yaml",
        lambda rows: (to_parquet(rows), {**sidecars_of(rows), _commit(rows, C7): b"a: [b"}),
        r"sidecar for seq=7 \(commit {c7}\): sidecar: not valid YAML",
    ),
    (
        "sidecar points at another ledger",
        lambda rows: (
            to_parquet(rows),
            _edit_sidecar(sidecars_of(rows), _commit(rows, C7), "ledger: s3://kfm-", "ledger: s3://x"),
        ),
        r"at seq=7 \(commit {c7}\): ledger differs",
    ),
    (
        "orphan sidecar",
        lambda rows: (to_parquet(rows), {**sidecars_of(rows), "f" * 64: b"a: b\n"}),
        "sidecar for commit f{64} which has no ledger row",
    ),
]


@pytest.mark.parametrize(
    ("case", "message"),
    [(c, m) for _, c, m in DISAGREEMENTS],
    ids=[name for name, _, _ in DISAGREEMENTS],
)
def test_check_derived_names_the_first_disagreement(
    rows: list[LedgerRow], case: Case, message: str
) -> None:
    parquet, sidecars = case(rows)
    pattern = message.replace("{c7}", re.escape(rows[C7].lakefs_commit))
    with pytest.raises(VerificationError, match=pattern):
        check_derived(rows, parquet, sidecars, registry_bucket=BUCKET)


def test_other_bucket_is_fine_unless_pinned(rows: list[LedgerRow], parquet: bytes) -> None:
    other = {r.lakefs_commit: sidecar_yaml(r, "other-registry") for r in rows}
    check_derived(rows, parquet, other)
    with pytest.raises(VerificationError, match=r"seq=0 .*: ledger differs"):
        check_derived(rows, parquet, other, registry_bucket=BUCKET)


def test_check_derived_reverifies_the_ledger(rows: list[LedgerRow], parquet: bytes) -> None:
    tampered = _changed(rows, 3, producer="x")
    with pytest.raises(VerificationError, match=r"seq=3 \(line 4\): hash mismatch"):
        check_derived(tampered, to_parquet(tampered), sidecars_of(tampered))


def test_sidecar_yaml_is_plain_yaml(rows: list[LedgerRow]) -> None:
    # No tags or anchors: any YAML reader sees the same mapping.
    text = sidecar_yaml(rows[1], BUCKET).decode()
    assert "!!" not in text and "&" not in text
    assert yaml.safe_load(text) == sidecar_dict(rows[1], BUCKET)
