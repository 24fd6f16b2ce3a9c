"""The fast canonical encoder (orjson where it provably agrees) equals the rfc8785 reference."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.ledger.factories import make_chain
from worker.canonical import canonical_bytes
from worker.ledger.row import LedgerRow, is_canonical, leaf_bytes

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def _reference(value: Any) -> bytes | None:
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return None


@settings(max_examples=2000, deadline=None)
@given(_values)
def test_fast_path_equals_the_reference(value: Any) -> None:
    expected = _reference(value)
    if expected is None:
        try:
            canonical_bytes(value)
        except ValueError:
            return
        raise AssertionError("the fast path accepted what the reference refuses")
    assert canonical_bytes(value) == expected


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=0), st.floats(allow_nan=False, allow_infinity=False, min_value=0))
def test_row_canonical_check_agrees_with_the_reference(kwh: float, co2e: float) -> None:
    base = make_chain(2)[1]
    data = base.model_dump(mode="json")
    data["energy_carbon"] = {**data["energy_carbon"], "kwh": kwh, "co2e_kg": co2e}
    row = LedgerRow.model_validate_json(rfc8785.dumps(data))
    canonical = bytes(rfc8785.dumps(row.model_dump(mode="json")))
    assert leaf_bytes(row) == canonical
    assert is_canonical(canonical, row)
    # Python's own spelling of the same row differs whenever a float is spelled another way.
    import json

    python = json.dumps(row.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert is_canonical(python, row) == (python == canonical)


def test_rows_of_every_shape_encode_as_the_reference() -> None:
    for row in make_chain(64):
        assert leaf_bytes(row) == rfc8785.dumps(row.model_dump(mode="json"))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _values, max_size=6))
def test_pair_equals_two_reference_encodings(value: dict[str, Any]) -> None:
    from worker.canonical import canonical_pair, sha256_hex

    expected = _reference(value)
    if expected is None:
        return
    first, second = canonical_pair(value, "hash", sha256_hex)
    assert first == expected
    assert second == _reference(value | {"hash": sha256_hex(expected)})
