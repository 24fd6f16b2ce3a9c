"""UTC timestamps as text: one spelling we write, and the spellings we accept from others.

Why one spelling: timestamps end up inside signed, canonical JSON (bundle
manifests, attestations, ledger rows); if ``...T12:00:00Z`` and
``...T12:00:00.000000Z`` were both accepted, the same commit could yield two
different manifests and two different digests. So :func:`format_utc` writes
whole seconds without a fraction and anything finer with exactly six digits,
and :func:`parse_utc` accepts only what it writes. Other time zones are
refused, never converted, as tuf's ``Signed.expires`` does.

Timestamps written by others (lakeFS's webhook ``event_time``, an operator's
``--since``) are RFC 3339 with any offset; :func:`parse_rfc3339` reads those
and converts them to UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["format_utc", "parse_rfc3339", "parse_utc"]

# One spelling per instant: seconds, or exactly six fractional digits, then Z.
_CANONICAL = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{6}))?Z$", re.ASCII)
# RFC 3339 date-time as others write it: any fraction, Z or a numeric offset.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([zZ]|[+-]\d{2}:\d{2})$", re.ASCII)


def format_utc(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, with ``.ffffff`` only when microseconds are set.

    Raises:
        ValueError: ``moment`` is naive or not at UTC offset zero (we never
            guess a timezone).
    """
    if moment.tzinfo is None or moment.utcoffset() != timedelta(0):
        raise ValueError("timestamp must be timezone-aware UTC")
    m = moment.astimezone(UTC)
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    if m.microsecond:
        text += f".{m.microsecond:06d}"
    return text + "Z"


def parse_utc(text: str) -> datetime:
    """Parse a timestamp written by :func:`format_utc`, and only that spelling.

    Raises:
        ValueError: not RFC 3339 UTC with ``Z``, not a real date, or not the
            canonical spelling (for example ``.000000Z`` or ``.5Z``).
    """
    m = _CANONICAL.fullmatch(text)
    if m is None:
        raise ValueError("must be an RFC 3339 UTC timestamp like 2025-11-30T12:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int(m.group(7)) if m.group(7) else 0
    try:
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError as e:
        raise ValueError(f"timestamp is not a valid date and time: {e}") from e
    if format_utc(moment) != text:
        raise ValueError("timestamp is not in canonical form: no fraction for whole seconds, else six digits")
    return moment


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time with ``Z`` or a numeric offset, converted to UTC.

    For timestamps we did not write; a local time (no offset) is refused,
    because it names no single instant.

    Raises:
        ValueError: anything else, or not a real date and time.
    """
    if not _RFC3339.fullmatch(text):
        raise ValueError("not an RFC 3339 date-time with an offset")
    return datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text)).astimezone(UTC)
