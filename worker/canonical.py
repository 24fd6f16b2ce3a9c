"""One canonical JSON encoding (RFC 8785) for everything that is hashed or signed.

Why: a digest or signature is only reproducible if every producer and verifier
derives the same bytes. We sign, store and verify those exact bytes and never a
re-encoding (one byte of difference breaks the digest).

Speed: the ``rfc8785`` package is the reference, written in pure Python (about
100 µs for a ledger row). orjson's sorted compact output is byte-identical to
it for every value whose keys are ASCII and whose integers are within ±2**53,
once each float is handed to orjson already spelled by the reference;
:func:`canonical_bytes` prepares the value so, and asks the reference for
anything else. A
property test (tests/unit/test_canonical.py) holds the two paths equal.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import orjson
import rfc8785

__all__ = ["canonical_bytes", "canonical_pair", "sha256_hex"]

_MAX_SAFE_INT: Final = 2**53


class _NotFastError(Exception):
    """The value holds something only the reference encoder may decide."""


def _prepared(value: Any) -> Any:
    """``value`` with every float replaced by its JCS spelling as an orjson Fragment.

    orjson then emits exactly RFC 8785: sorted ASCII keys, the same string
    escapes, integers as digits, and floats spelled by the reference itself.
    Anything else (non-ASCII or non-string keys, integers beyond ±2**53,
    subclasses, other types) raises :class:`_NotFastError`.
    """
    kind = type(value)
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _NotFastError
            # Strings are most of the leaves: kept without a call.
            out[key] = item if type(item) is str else _prepared(item)
        return out
    if kind is list or kind is tuple:
        return [item if type(item) is str else _prepared(item) for item in value]
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if not -_MAX_SAFE_INT < value < _MAX_SAFE_INT:
            raise _NotFastError
        return value
    if kind is float:
        try:
            return orjson.Fragment(rfc8785.dumps(value))
        except (rfc8785.CanonicalizationError, ValueError) as e:
            raise _NotFastError from e
    raise _NotFastError


def canonical_pair(obj: dict[str, Any], key: str, make_value: Any) -> tuple[bytes, bytes]:
    """``canonical_bytes(obj)`` and ``canonical_bytes(obj | {key: make_value(first)})``.

    For a row and its hash: the value is prepared once and encoded twice.

    Raises:
        ValueError: as :func:`canonical_bytes`.
    """
    try:
        prepared = _prepared(obj)
        first = orjson.dumps(prepared, option=orjson.OPT_SORT_KEYS)
        prepared[key] = _prepared(make_value(first))
        return first, orjson.dumps(prepared, option=orjson.OPT_SORT_KEYS)
    except (_NotFastError, orjson.JSONEncodeError, TypeError):
        first = canonical_bytes(obj)
        return first, canonical_bytes(obj | {key: make_value(first)})


def canonical_bytes(obj: Any) -> bytes:
    """Encode ``obj`` as RFC 8785 (JCS) JSON.

    Raises:
        ValueError: if ``obj`` holds values JCS cannot encode (floats out of
            range, non-string keys, unsupported types).
    """
    try:
        return orjson.dumps(_prepared(obj), option=orjson.OPT_SORT_KEYS)
    except (_NotFastError, orjson.JSONEncodeError, TypeError):
        pass  # the reference decides (and names what it refuses)
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError) as e:
        raise ValueError(f"cannot canonicalise: {e}") from e


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
