"""One canonical JSON encoding (RFC 8785) for everything that is hashed or signed.

Why: a digest or signature is only reproducible if every producer and verifier
derives the same bytes. We sign, store and verify those exact bytes and never a
re-encoding (see STYLE.md, anti-pattern 2).

Speed: the ``rfc8785`` package is the reference, written in pure Python (about
100 µs for a ledger row). orjson's sorted compact output is byte-identical to
it for every value whose keys are ASCII, whose integers are within ±2**53 and
whose floats orjson spells as JCS does; :func:`canonical_bytes` checks those
conditions while it walks the value and otherwise asks the reference. A
property test (tests/unit/test_canonical.py) holds the two paths equal.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import orjson
import rfc8785

__all__ = ["canonical_bytes", "sha256_hex"]

_MAX_SAFE_INT: Final = 2**53


def _orjson_is_jcs(value: Any) -> bool:
    """Whether orjson's encoding of ``value`` is its RFC 8785 encoding."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) or v is None or isinstance(v, bool):
            continue
        if isinstance(v, int):
            if not -_MAX_SAFE_INT < v < _MAX_SAFE_INT:
                return False
        elif isinstance(v, float):
            if orjson.dumps(v) != rfc8785.dumps(v):
                return False
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str) or not k.isascii():
                    return False
                stack.append(item)
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        else:
            return False
    return True


def canonical_bytes(obj: Any) -> bytes:
    """Encode ``obj`` as RFC 8785 (JCS) JSON.

    Raises:
        ValueError: if ``obj`` holds values JCS cannot encode (floats out of
            range, non-string keys, unsupported types).
    """
    if _orjson_is_jcs(obj):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):
            pass  # lone surrogates, NaN, ...: the reference decides
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError) as e:
        raise ValueError(f"cannot canonicalise: {e}") from e


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
