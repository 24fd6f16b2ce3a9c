"""Strict JSON parsing helpers shared by the manifest and the attestation.

Why: Python's ``json`` keeps the last of duplicate keys and accepts ``NaN``;
a verifier and a signer that disagree on which duplicate wins is a classic
signature bypass, so both are refused before any model sees the data.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["strict_json_loads"]


def strict_json_loads(data: bytes) -> Any:
    """Parse UTF-8 JSON, refusing duplicate keys and ``NaN``/``Infinity``.

    Raises:
        ValueError: not valid UTF-8 or JSON, or one of the above
            (``UnicodeDecodeError`` and ``JSONDecodeError`` are ``ValueError``).
    """
    return json.loads(
        data.decode("utf-8"),
        object_pairs_hook=_reject_duplicate_keys,
        parse_constant=_reject_constant,
    )


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:100]!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
