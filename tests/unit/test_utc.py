"""worker.utc: the one spelling of a UTC instant we write, and RFC 3339 as others write it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker.utc import format_utc, parse_rfc3339, parse_utc


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2025, 11, 30, 12, 0, 0, tzinfo=UTC), "2025-11-30T12:00:00Z"),
        (datetime(2025, 11, 30, 12, 0, 0, 5, tzinfo=UTC), "2025-11-30T12:00:00.000005Z"),
        (datetime(2025, 11, 30, 12, 0, 0, 500_000, tzinfo=UTC), "2025-11-30T12:00:00.500000Z"),
        (datetime(2025, 11, 30, 14, 0, tzinfo=timezone(timedelta(0))), "2025-11-30T14:00:00Z"),
        (datetime(9, 1, 2, 3, 4, 5, tzinfo=UTC), "0009-01-02T03:04:05Z"),
    ],
)
def test_format_and_parse_utc(moment: datetime, text: str) -> None:
    assert format_utc(moment) == text
    assert parse_utc(text) == moment


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2025, 11, 30, 12, 0),  # noqa: DTZ001 - the naive datetime under test
        datetime(2025, 11, 30, 12, 0, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_format_utc_refuses_non_utc(moment: datetime) -> None:
    with pytest.raises(ValueError, match="UTC"):
        format_utc(moment)


@pytest.mark.parametrize(
    "text",
    [
        "2025-11-30T12:00:00.5Z",
        "2025-11-30T12:00:00.000000Z",
        "2025-11-30t12:00:00Z",
        "2025-11-30T12:00:00z",
        "2025-11-30 12:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-11-30T24:00:00Z",
        "٢٠٢٥-11-30T12:00:00Z",
    ],
)
def test_parse_utc_refuses_other_spellings(text: str) -> None:
    with pytest.raises(ValueError):
        parse_utc(text)


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(2025, 11, 30, 12, tzinfo=UTC), "2025-11-30T12:00:00Z"),
        (datetime(2025, 11, 30, 12, 0, 0, 5, tzinfo=UTC), "2025-11-30T12:00:00.000005Z"),
    ],
)
def test_utc_format_round_trip(dt: datetime, text: str) -> None:
    assert format_utc(dt) == text
    assert parse_utc(text) == dt


@pytest.mark.parametrize(
    "text", ["2025-11-30T12:00:00", "2025-11-30 12:00:00Z", "2025-11-30T12:00:00.5Z", "2025-13-01T00:00:00Z"]
)
def test_parse_utc_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_utc(text)


def test_format_utc_rejects_naive() -> None:
    with pytest.raises(ValueError, match="UTC"):
        format_utc(datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339_converts_any_offset_to_utc(text: str, moment: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == moment
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["2024-05-01T12:00:00", "2024-05-01", "20240501T120000Z", "2024-05-01T25:00:00Z"])
def test_parse_rfc3339_refuses_local_times_and_other_forms(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)
