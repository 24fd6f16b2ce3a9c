"""The native scan (``kfm_scan``) gives the pure Python scan's answers, and the bundle check its verdicts.

test_scan.py holds both paths to the row model; here the native one is held
to the Python reference directly: the same key or the same "undecided" for
generated rows and their byte edits, the same :class:`BundleCheck` for whole
entry bundles with lines only the model decides, and the same error naming
the same row for broken ones.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.ledger.factories import body_dict, make_chain
from tests.unit.ledger.paths import PATHS, using
from tests.unit.ledger.test_scan import _ANY_BODY, _EDITS, _HEX64, _SEQ, _body_of, _edited, _line, _rehash
from worker.errors import VerificationError
from worker.ledger import _native
from worker.ledger.chain import BundleCheck, check_bundle, link
from worker.ledger.row import leaf_bytes
from worker.ledger.scan import FAST_MAX_LINE_BYTES, LineKey, scan_line_python

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
