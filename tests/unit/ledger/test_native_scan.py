"""The native scan (``kfm_scan``) gives the pure Python scan's answers, and the bundle check its verdicts.

test_scan.py holds both paths to the row model; here the native one is held
to the Python reference directly: the same key or the same "undecided" for
generated rows and their byte edits, the same :class:`BundleCheck` for whole
entry bundles with lines only the model decides, and the same error naming
the same row for broken ones; and the replay's native match links only
what the pure path links, to the line rfc8785 makes of the candidate.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.ledger.factories import body_dict, make_candidate, make_chain
from tests.unit.ledger.paths import PATHS, using
from tests.unit.ledger.test_scan import _ANY_BODY, _EDITS, _HEX64, _SEQ, _body_of, _edited, _line, _rehash
from worker.errors import VerificationError
from worker.ledger import _native
from worker.ledger.chain import BundleCheck, check_bundle, link
from worker.ledger.row import GENESIS_PREV, leaf_bytes
from worker.ledger.scan import FAST_MAX_LINE_BYTES, LineKey, Matched, link_candidate, match_run, scan_line_python

pytestmark = pytest.mark.parametrize("path", [p for p in PATHS if p.id == "native"])


def _native_scan(line: bytes) -> LineKey | None:
    module = _native.load()
    if module is None:
        pytest.fail("kfm_scan is not importable (deploy/local/build-native.sh)")
    key = module.scan_line(line)
    return None if key is None else LineKey(*key)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_ANY_BODY, _SEQ, _HEX64, st.none() | _EDITS)
def test_the_native_scan_answers_as_the_python_scan(
    path: str, data: dict[str, Any], seq: int, prev: str, edits: list[tuple[str, int, int]] | None
) -> None:
    _, line = _line(data, seq, prev)
    if edits is not None:
        line = _rehash(_edited(line, edits))
    assert _native_scan(line) == scan_line_python(line), line


@pytest.mark.parametrize(
    "value",
    [0, 5, 2.0, 0.1 + 0.2, 1e-6, 1e-7, 9.999999e-7, 1e20, 1e21, 5e-324, 1.7976931348623157e308, 123456789.125],
)
def test_floats_at_the_edges_of_fixed_notation(path: str, value: float) -> None:
    data = body_dict(1)
    _, line = link(None, _body_of(data | {"energy_carbon": data["energy_carbon"] | {"kwh": value}}))
    assert _native_scan(line) == scan_line_python(line) is not None
    spelled = line.split(b'"kwh":')[1].split(b",")[0]
    for other in (spelled + b"0", spelled.replace(b"e+", b"e"), spelled.upper(), b"0" + spelled):
        if other != spelled:
            forged = _rehash(line.replace(b'"kwh":' + spelled + b",", b'"kwh":' + other + b","))
            assert _native_scan(forged) == scan_line_python(forged), forged


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"2025-11-30T12:00:00", b"2025-02-29T12:00:00"),  # no such day
        (b"2025-11-30T12:00:00", b"2024-02-29T23:59:59"),  # a leap day
        (b"2025-11-30T12:00:00", b"0000-01-01T00:00:00"),  # year 0
        (b"2025-11-30T12:00:00", b"2025-11-30T24:00:00"),
        (b"2025-11-30T12:00:00", b"2025-11-30T12:00:00.000000"),
        (b'"seq":0', b'"seq":9007199254740992'),  # 2^53
        (b'"seq":0', b'"seq":9007199254740991'),
        (b'"seq":0', b'"seq":00'),
        (b'"lakefs_branch":"feature/river-gauges"', b'"lakefs_branch":"feature/../gauges"'),
        (b'"path":"configs/pipeline.yaml"', b'"path":"/configs/pipeline.yaml"'),
        (b'"path":"configs/pipeline.yaml"', b'"path":"configs/a..b.yaml"'),
        (b'"lakefs_repo":"kfm-main"', b'"lakefs_repo":"-kfm-main"'),
        (b'"otel_trace_id":""', b'"otel_trace_id":"' + b"a" * 31 + b'"'),
        (b"\xc3\xbc", b"\xc3"),  # a torn character
        (b"\xc3\xbc", b"\xed\xa0\x80"),  # a surrogate
    ],
)
def test_values_the_pattern_cannot_see(path: str, old: bytes, new: bytes) -> None:
    _, line = link(None, _body_of(body_dict(0)))
    assert old in line
    forged = _rehash(line.replace(old, new, 1))
    assert _native_scan(forged) == scan_line_python(forged), forged


def test_long_lines_are_left_undecided(path: str) -> None:
    data = body_dict(4)
    configs = [{"path": f"configs/{i:05d}-{'x' * 60}.yaml", "sha256": "0" * 64} for i in range(600)]
    _, line = link(None, _body_of(data | {"configs": configs}))
    assert len(line) > FAST_MAX_LINE_BYTES
    assert _native_scan(line) is None


LINES = [leaf_bytes(r) for r in make_chain(300)]


def _mixed_chain(n: int) -> list[bytes]:
    """Rows where every seventh is valid but outside the fast subset (escapes in its producer)."""
    lines: list[bytes] = []
    prev: tuple[int, str] | None = None
    for i in range(n):
        data = body_dict(i) | ({"producer": 'says "hi" \\ there'} if i % 7 == 3 else {})
        row, line = link(prev, _body_of(data))
        lines.append(line)
        prev = (row.seq, hashlib.sha256(line).hexdigest())
    return lines


def _both(data: bytes, first: int, skip: int = 0) -> tuple[BundleCheck | str, BundleCheck | str]:
    out: list[BundleCheck | str] = []
    for p in ("python", "native"):
        with using(p):
            try:
                out.append(check_bundle(data, first, skip))
            except VerificationError as e:
                out.append(str(e))
    return out[0], out[1]


def test_a_bundle_with_lines_only_the_model_decides(path: str) -> None:
    lines = _mixed_chain(256)
    assert _native_scan(lines[3]) is None and _native_scan(lines[4]) is not None
    data = b"".join(x + b"\n" for x in lines)
    pure, native = _both(data, 0)
    assert isinstance(native, BundleCheck) and native.count == 256 and native.tile_root is not None
    assert pure == native
    assert _both(data, 0, skip=7)[0] == _both(data, 0, skip=7)[1]
    assert _both(data, 0, skip=300)[0] == _both(data, 0, skip=300)[1]
    assert _both(b"", 0) == _both(b"", 0)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda ls: ls[:5] + ls[6:],  # a row missing
        lambda ls: [*ls[:5], ls[5], *ls[5:]],  # a row twice
        lambda ls: [*ls[:5], ls[5].replace(b'"producer":"a', b'"producer":"b'), *ls[6:]],  # edited
        lambda ls: [*ls[:5], _rehash(ls[5].replace(b'"producer":"a', b'"producer":"b')), *ls[6:]],  # and re-hashed
        lambda ls: [*ls[:5], b"", *ls[5:]],  # an empty line
        lambda ls: [*ls[:5], b"{}", *ls[5:]],
    ],
)
def test_a_broken_bundle_fails_alike(path: str, breakage: Any) -> None:
    data = b"".join(x + b"\n" for x in breakage(LINES[:40]))
    pure, native = _both(data, 0)
    assert isinstance(pure, str)
    assert pure == native
    pure, native = _both(data[:-1], 0)  # no final newline
    assert isinstance(pure, str) and pure == native


def test_a_bundle_after_an_unknown_row_reports_its_first_prev(path: str) -> None:
    data = b"".join(x + b"\n" for x in LINES[20:60])
    pure, native = _both(data, 20)
    assert isinstance(native, BundleCheck)
    assert native.first_prev == hashlib.sha256(LINES[19]).hexdigest()
    assert pure == native


# The replay's match (native ``match_run``): it compares a candidate's bytes with the stored line's
# instead of re-encoding, so it is held to the pure path's link_candidate, and through it to rfc8785.


def _native_match(values: list[bytes], stored: list[bytes], prev: tuple[int, str] | None) -> list[Matched]:
    module = _native.load()
    if module is None:
        pytest.fail("kfm_scan is not importable (deploy/local/build-native.sh)")
    got = module.match_run(values, stored, 0 if prev is None else prev[0] + 1, None if prev is None else prev[1])
    return [Matched(*m) for m in got]


def _python_match(value: bytes, stored: bytes, prev: tuple[int, str] | None) -> Matched | None:
    """What the pure path decides for one candidate (None: not linked onto ``stored``)."""
    fast = link_candidate(value, prev)
    if fast is None or fast[0] != stored:
        return None
    return Matched(fast[1].commit, hashlib.sha256(b"\x00" + stored).digest(), hashlib.sha256(stored).hexdigest())


def _as_rfc8785(value: bytes, prev: tuple[int, str] | None) -> bytes:
    """The line for ``value`` built by the reference encoder from the parsed candidate."""
    body = json.loads(value)["body"]
    row = body | {"seq": 0 if prev is None else prev[0] + 1, "prev": GENESIS_PREV if prev is None else prev[1]}
    row["hash"] = hashlib.sha256(rfc8785.dumps(row)).hexdigest()
    return rfc8785.dumps(row)


def _held_to_the_pure_path(value: bytes, stored: bytes, prev: tuple[int, str] | None) -> list[Matched]:
    native = _native_match([value], [stored], prev)
    if native:  # the native path decides only what the pure path decides alike
        assert native == [_python_match(value, stored, prev)], value
        assert stored == _as_rfc8785(value, prev)
    return native


def _orjson_value(value: bytes) -> bytes:
    """The candidate as orjson writes it (floats as ``2.0``, ``1e-7``): the pure path accepts that too."""
    return orjson.dumps(orjson.loads(value), option=orjson.OPT_SORT_KEYS)


_PREV_LINK = st.none() | st.tuples(st.integers(0, 2**53 - 2), _HEX64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_ANY_BODY, _PREV_LINK, st.text(max_size=20), st.none() | _EDITS, st.booleans())
def test_the_native_match_links_only_what_the_python_path_links(
    path: str,
    data: dict[str, Any],
    prev: tuple[int, str] | None,
    request_id: str,
    edits: list[tuple[str, int, int]] | None,
    as_orjson: bool,
) -> None:
    body = _body_of(data)
    value = make_candidate(0, body=body, request_id=request_id or "r").to_bytes()
    value = _orjson_value(value) if as_orjson else value
    stored = link(None if prev is None else prev, body)[1]
    if edits is not None:
        value = _edited(value, edits)
    matched = _held_to_the_pure_path(value, stored, prev)
    if edits is None and scan_line_python(stored) is not None and _python_match(value, stored, prev) is not None:
        # A plain candidate is decided natively unless a float needs orjson's own spelling
        # or its request id an escape.
        floats = [v for v in data["energy_carbon"].values() if type(v) is float]
        plain_id = all(" " <= c != "\x7f" and c not in '"\\' for c in request_id)
        if plain_id and all(1e-5 <= v < 1e15 or v == 0 for v in floats):
            assert matched, value


_FLOATS = [
    0.0,
    5.0,
    0.5,
    0.1 + 0.2,
    1e-5,
    9.99e-6,
    1e-6,
    1e-7,
    9.999999e-7,
    123456789.125,
    1e14 + 0.5,
    999999999999999.9,
    1e15,
    1e16,
    1e20,
    1e21,
    1.5e22,
    5e-324,
    1.7976931348623157e308,
]


@pytest.mark.parametrize("value", [*_FLOATS, 0, 7, 10**15 - 1, 10**15, 2**53])
def test_floats_of_every_magnitude_link_as_the_python_path_links_them(path: str, value: float) -> None:
    data = body_dict(1)
    body = _body_of(data | {"energy_carbon": data["energy_carbon"] | {"kwh": value, "co2e_kg": value}})
    candidate = make_candidate(1, body=body).to_bytes()
    stored = link(None, body)[1]
    for spelled in (candidate, _orjson_value(candidate)):
        _held_to_the_pure_path(spelled, stored, None)
    if type(value) is float and 1e-5 <= value < 1e15:
        assert _native_match([_orjson_value(candidate)], [stored], None)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_random_floats_link_as_the_python_path_links_them(path: str, value: float) -> None:
    data = body_dict(2)
    body = _body_of(data | {"energy_carbon": data["energy_carbon"] | {"co2e_kg": value}})
    candidate = make_candidate(2, body=body).to_bytes()
    stored = link(None, body)[1]
    for spelled in (candidate, _orjson_value(candidate)):
        _held_to_the_pure_path(spelled, stored, None)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c | {"bundle_sha256": "1" * 64},  # disagrees with the body
        lambda c: c | {"attestation_uri": c["attestation_uri"] + "x"},
        lambda c: c | {"extra": 1},  # an unknown key
        lambda c: {k: v for k, v in c.items() if k != "request_id"},
        lambda c: c | {"body": c["body"] | {"seq": 0}},  # a body that sets its own seq
        lambda c: c | {"request_id": "x" * 4097},
        lambda c: c | {"request_id": "ü" * 4097},
        lambda c: c | {"request_id": 7},
        lambda c: c | {"body": c["body"] | {"producer": "someone else"}},  # not the stored row
    ],
)
def test_candidates_the_writer_refuses_or_another_row_are_not_matched(path: str, change: Any) -> None:
    candidate = make_candidate(1)
    stored = link(None, candidate.body)[1]
    value = orjson.dumps(change(orjson.loads(candidate.to_bytes())), option=orjson.OPT_SORT_KEYS)
    assert _native_match([value], [stored], None) == []
    assert _python_match(value, stored, None) is None


@pytest.mark.parametrize("request_id", ["ü" * 4096, "a\u2028b", "日本語-id", "", "tab\there", 'q"uote', "x" * 4096])
def test_request_ids_are_matched_as_the_python_path_matches_them(path: str, request_id: str) -> None:
    candidate = make_candidate(3, request_id="r")
    stored = link(None, candidate.body)[1]
    value = orjson.dumps(orjson.loads(candidate.to_bytes()) | {"request_id": request_id}, option=orjson.OPT_SORT_KEYS)
    assert _native_match([value], [stored], None) == _held_to_the_pure_path(value, stored, None)


def _replayed(n: int) -> tuple[list[bytes], list[bytes]]:
    values, lines, prev = [], [], None
    for i in range(n):
        value = make_candidate(i).to_bytes()
        line = link_candidate(value, prev)
        assert line is not None
        values.append(value)
        lines.append(line[0])
        prev = (i, hashlib.sha256(line[0]).hexdigest())
    return values, lines


def test_a_run_matches_as_the_python_run_and_stops_where_it_stops(path: str) -> None:
    values, lines = _replayed(60)  # the factories' rows: some have floats only the pure path links
    pure, native = [], []
    for p, out in (("python", pure), ("native", native)):
        with using(p):
            out.append(match_run(values, lines, None, 0))
            out.append(match_run(values[10:], lines[10:], lines[9], 10))
            out.append(match_run(values[:30] + values[31:], lines, None, 0))  # a candidate missing
            out.append(match_run(values[:20], lines[1:21], lines[0], 1))  # each one row off
    assert pure == native
    assert [len(x) for x in native] == [60, 50, 30, 0]
    assert native[0][-1].line_sha256 == hashlib.sha256(lines[-1]).hexdigest()
