"""The fast line scan accepts only what the row model accepts, and accepts ordinary rows.

Soundness is the property that matters: whenever :func:`scan_line` answers,
the row model (schema, canonical form, ``hash``) must agree, for generated
rows of every shape and for rows an attacker rewrote together with their own
``hash``. Completeness is checked on plain rows only: everything else may go
to the slow path. Every test runs on the pure Python scan and on the native
one (``kfm_scan``; tests/unit/ledger/paths.py says when that leg is skipped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.unit.ledger.factories import body_dict, make_candidate, make_chain
from tests.unit.ledger.paths import PATHS, using
from worker.errors import IntegrityError, VerificationError
from worker.ledger.chain import LineChecker, link
from worker.ledger.row import GENESIS_PREV, LedgerRow, RowBody, hash_matches, leaf_bytes, parse_candidate, parse_line
from worker.ledger.scan import FAST_MAX_LINE_BYTES, LineKey, link_candidate, scan_line
from worker.utc import format_utc

_HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_CONTROL = "".join(chr(c) for c in range(0x20)) + "\x7f"
_ANY_TEXT = st.text(st.characters(exclude_characters=_CONTROL, exclude_categories=("Cs",)), min_size=1, max_size=24)
_PLAIN_TEXT = st.from_regex(r"[ !#-\[\]-~]{1,24}", fullmatch=True)
_URI = st.from_regex(r"[a-z][a-z0-9+.\-]{0,5}://[!-~]{1,40}", fullmatch=True)
_PLAIN_URI = st.from_regex(r"[a-z][a-z0-9+.\-]{0,5}://[!#-\[\]-~]{1,40}", fullmatch=True)
_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True)
_NUMBER = st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(0, 10**6)


@pytest.fixture(autouse=True, scope="module", params=PATHS)
def scan_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on the pure Python scan and on the native one."""
    with using(request.param):
        yield request.param


def _body(
    text: st.SearchStrategy[str], uri: st.SearchStrategy[str], branch: st.SearchStrategy[str], printable: str
) -> Any:
    path = text.filter(lambda p: not p.startswith("/") and ".." not in p.split("/"))
    return st.fixed_dictionaries({
        "lakefs_repo": st.from_regex(r"[a-z0-9][a-z0-9-]{2,12}", fullmatch=True),
        "lakefs_branch": branch.filter(lambda b: ".." not in b),
        "lakefs_commit": _HEX64,
        "created_at": st.datetimes(timezones=st.just(UTC)).map(format_utc),
        "producer": text,
        "openlineage_run_id": st.uuids().map(str),
        "otel_trace_id": st.just("") | _HEX64.map(lambda h: h[:32]),
        "artifact_uri": uri,
        "data_snapshot": st.lists(st.fixed_dictionaries({"stac": uri, "lakefs_ref": uri}), max_size=3),
        "models": st.lists(
            st.fixed_dictionaries({"name": _NAME, "version": _NAME, "uri": uri, "sha256": _HEX64}), max_size=2
        ),
        "configs": st.lists(st.fixed_dictionaries({"path": path, "sha256": _HEX64}), max_size=3),
        "checksums": st.fixed_dictionaries({"artifact_sha256": _HEX64}),
        "signatures": st.fixed_dictionaries({"in_toto": uri, "key_id": st.from_regex(printable, fullmatch=True)}),
        "energy_carbon": st.fixed_dictionaries({"kwh": _NUMBER, "co2e_kg": _NUMBER, "method": text}),
    })


_ANY_BODY = _body(_ANY_TEXT, _URI, st.from_regex(r"[\w][\w./-]{0,12}", fullmatch=True), r"[!-~]{1,12}")
_PLAIN_BODY = _body(
    _PLAIN_TEXT.filter(lambda t: ".." not in t),
    _PLAIN_URI,
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,12}", fullmatch=True),
    r"[!#-\[\]-~]{1,12}",
)
_SEQ = st.integers(0, 2**53 - 1)


def _line(data: dict[str, Any], seq: int, prev: str) -> tuple[LedgerRow, bytes]:
    try:
        body = RowBody.model_validate_json(orjson.dumps(data))
    except ValidationError:
        assume(False)
        raise
    return link(None if seq == 0 else (seq - 1, prev), body)


def _body_of(data: dict[str, Any]) -> RowBody:
    return RowBody.model_validate_json(orjson.dumps(data))


def _key(row: LedgerRow) -> LineKey:
    return LineKey(row.seq, row.prev, row.hash, row.lakefs_commit)


def _model_accepts(line: bytes) -> LedgerRow | None:
    try:
        row = parse_line(line, 1)
    except VerificationError:
        return None
    return row if hash_matches(line, row) else None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_ANY_BODY, _SEQ, _HEX64)
def test_an_answer_always_agrees_with_the_row_model(data: dict[str, Any], seq: int, prev: str) -> None:
    row, line = _line(data, seq, prev)
    key = scan_line(line)
    if key is not None:
        assert key == _key(row)
        assert _model_accepts(line) == row


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_PLAIN_BODY, _SEQ, _HEX64)
def test_plain_rows_are_decided_by_the_scan(data: dict[str, Any], seq: int, prev: str) -> None:
    row, line = _line(data, seq, prev)
    assert scan_line(line) == _key(row)


def _rehash(line: bytes) -> bytes:
    """``line`` with its ``hash`` member set to the digest of the rest (what a forger does)."""
    start = line.find(b',"hash":"')
    if start < 0 or line.count(b',"hash":"') != 1:
        return line
    end = start + len(b',"hash":"') + 64 + 1
    rest = line[:start] + line[end:]
    return line[:start] + b',"hash":"' + hashlib.sha256(rest).hexdigest().encode() + b'"' + line[end:]


def _edited(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    """``data`` with each (set|insert|delete, position, byte) edit applied in turn."""
    edited = bytearray(data)
    for op, where, byte in edits:
        i = where % (len(edited) + 1)
        if op == "insert":
            edited[i:i] = bytes([byte])
        elif i < len(edited):
            if op == "set":
                edited[i] = byte
            else:
                del edited[i]
    return bytes(edited)


_EDITS = st.lists(
    st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 10**6),
              st.sampled_from(list(b' "\\/.-:,{}[]0123456789eE+aZz_\x00\x1f\x7f\x80\xc3\xa9\xff'))),
    min_size=1, max_size=3,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_ANY_BODY, _SEQ, _HEX64, _EDITS)
def test_edited_and_rehashed_lines_are_accepted_only_if_the_model_accepts(
    data: dict[str, Any], seq: int, prev: str, edits: list[tuple[str, int, int]]
) -> None:
    _, line = _line(data, seq, prev)
    forged = _rehash(_edited(line, edits))
    key = scan_line(forged)
    if key is not None:
        row = _model_accepts(forged)
        assert row is not None, forged
        assert key == _key(row)


def test_rows_of_every_shape_in_the_factories_are_decided() -> None:
    for row in make_chain(64):
        assert scan_line(leaf_bytes(row)) == _key(row)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("producer", 'says "hi" \\ there'),  # escapes: the model's, not the scan's
        ("lakefs_branch", "zweig-ä"),  # a non-ASCII word character
        ("configs", [{"path": "a..b/c", "sha256": "0" * 64}]),  # ".." inside a name is allowed
    ],
)
def test_valid_rows_outside_the_fast_subset_go_to_the_model(field: str, value: Any) -> None:
    data = body_dict(3) | {field: value}
    row, line = link(None, _body_of(data))
    assert scan_line(line) is None
    checker = LineChecker()
    checker.feed(line)  # the model accepts it
    assert checker.seq == 1 and checker.prev == hashlib.sha256(line).hexdigest()
    assert _model_accepts(line) == row


def test_non_ascii_text_is_decided_when_it_is_valid_utf8() -> None:
    row, line = link(None, _body_of(body_dict(5) | {"producer": "Kärnten-pipeline ✓"}))
    assert scan_line(line) == _key(row)
    broken = line.replace("✓".encode(), b"\xe2\x9c")  # a torn multi-byte character
    assert scan_line(_rehash(broken)) is None


def test_whole_valued_and_tiny_floats_follow_rfc8785() -> None:
    data = body_dict(1)
    for kwh in (2.0, 1e-7, 1e21, 0.1 + 0.2, 123456789.125):
        row, line = link(None, _body_of(data | {"energy_carbon": data["energy_carbon"] | {"kwh": kwh}}))
        assert scan_line(line) == _key(row), line
    # Python's spelling of 2.0 and 1e-7 are not canonical: edited in and rehashed, the scan refuses them.
    _, line = link(None, _body_of(data | {"energy_carbon": data["energy_carbon"] | {"kwh": 2.0}}))
    assert b'"kwh":2,' in line
    assert scan_line(_rehash(line.replace(b'"kwh":2,', b'"kwh":2.0,'))) is None


def test_a_row_whose_hash_is_wrong_is_left_to_the_model_which_names_it() -> None:
    _, line = link(None, _body_of(body_dict(2)))
    tampered = line.replace(b'"producer":"airflow', b'"producer":"airfloW')
    assert scan_line(tampered) is None
    with pytest.raises(VerificationError, match="hash mismatch"):
        LineChecker().feed(tampered)


def test_long_lines_go_to_the_model() -> None:
    data = body_dict(4)
    configs = [{"path": f"configs/{i:05d}-{'x' * 60}.yaml", "sha256": "0" * 64} for i in range(600)]
    row, line = link(None, _body_of(data | {"configs": configs}))
    assert len(line) > FAST_MAX_LINE_BYTES
    assert scan_line(line) is None
    assert _model_accepts(line) == row


def _writer_line(value: bytes, prev: tuple[int, str] | None) -> bytes | None:
    """What the writer's models append for ``value`` (None: the candidate is refused)."""
    try:
        candidate = parse_candidate(value)
    except IntegrityError:
        return None
    return link(prev, candidate.body)[1]


_PREV = st.none() | st.tuples(st.integers(0, 2**53 - 2), _HEX64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_ANY_BODY, _PREV, st.text(max_size=20))
def test_a_replayed_candidate_links_to_the_writers_line(
    data: dict[str, Any], prev: tuple[int, str] | None, request_id: str
) -> None:
    body = _line(data, 0, GENESIS_PREV)[0].body()
    value = make_candidate(0, body=body, request_id=request_id or "r").to_bytes()
    fast = link_candidate(value, prev)
    if fast is not None:
        line, key = fast
        assert line == _writer_line(value, prev)
        assert key == scan_line(line)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_ANY_BODY, _PREV, _EDITS)
def test_an_edited_candidate_is_linked_only_as_the_writer_would(
    data: dict[str, Any], prev: tuple[int, str] | None, edits: list[tuple[str, int, int]]
) -> None:
    body = _line(data, 0, GENESIS_PREV)[0].body()
    edited = _edited(make_candidate(0, body=body).to_bytes(), edits)
    fast = link_candidate(edited, prev)
    if fast is not None:
        assert fast[0] == _writer_line(edited, prev)


def test_ordinary_candidates_are_linked_by_the_fast_path() -> None:
    prev: tuple[int, str] | None = None
    for i in range(40):
        value = make_candidate(i).to_bytes()
        fast = link_candidate(value, prev)
        assert fast is not None
        assert fast[0] == _writer_line(value, prev)
        prev = (fast[1].seq, hashlib.sha256(fast[0]).hexdigest())


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c | {"bundle_sha256": "1" * 64},  # disagrees with the body
        lambda c: c | {"extra": 1},  # an unknown key
        lambda c: c | {"body": c["body"] | {"seq": 5}},  # a body that sets its own seq
        lambda c: c | {"request_id": "x" * 4097},
    ],
)
def test_candidates_the_writer_refuses_are_not_linked(change: Any) -> None:
    value = orjson.dumps(change(orjson.loads(make_candidate(1).to_bytes())), option=orjson.OPT_SORT_KEYS)
    assert link_candidate(value, None) is None
    assert _writer_line(value, None) is None
