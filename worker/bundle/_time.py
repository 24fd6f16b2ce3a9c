"""UTC-only RFC 3339 timestamps with exactly one spelling per instant.

Why one spelling: timestamps end up inside signed, canonical JSON; if
``...T12:00:00Z`` and ``...T12:00:00.000000Z`` were both accepted, the same
commit could yield two different manifests and two different bundle digests.
Other time zones are refused, as tuf's ``Signed.expires`` does.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["format_utc", "parse_utc"]

_RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$")


def format_utc(dt: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, with ``.ffffff`` only when microseconds are set.

    Raises:
        ValueError: ``dt`` is naive or not in UTC.
    """
    if dt.tzinfo is None or dt.utcoffset() != timedelta(0):
        raise ValueError("timestamp must be timezone-aware UTC")
    dt = dt.astimezone(UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(value: str) -> datetime:
    """Parse a timestamp written by :func:`format_utc`, and only that spelling.

    Raises:
        ValueError: not a canonical UTC RFC 3339 timestamp.
    """
    if not _RFC3339_UTC.fullmatch(value):
        raise ValueError("timestamp must look like 2025-11-30T12:00:00Z (UTC, 'Z' suffix)")
    try:
        dt = datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    except ValueError as e:
        raise ValueError(f"timestamp is not a valid date and time: {e}") from e
    if format_utc(dt) != value:
        raise ValueError("timestamp is not in canonical form")
    return dt
