"""The receiver's process-level choices: its read timeout setting and one-line logs of bad HTTP."""

from __future__ import annotations

import logging
import sys

import pytest
from aiohttp.http_exceptions import BadHttpMessage
from structlog.testing import capture_logs

from hooks.server import _OneLineClientFaults
from worker.config import load_settings
from worker.errors import ConfigError


def test_read_timeout_defaults_to_ten_seconds_and_is_configurable() -> None:
    assert load_settings({}).hooks_read_timeout_s == 10.0
    assert load_settings({"KFM_HOOKS_READ_TIMEOUT_S": "0.5"}).hooks_read_timeout_s == 0.5


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_read_timeout_that_is_not_positive_stops_the_process(value: str) -> None:
    with pytest.raises(ConfigError, match="KFM_HOOKS_READ_TIMEOUT_S"):
        load_settings({"KFM_HOOKS_READ_TIMEOUT_S": value})


def _record(exc: BaseException | None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                             ("127.0.0.1",), exc_info)


def test_a_request_aiohttp_cannot_parse_is_one_log_line_without_the_raw_request() -> None:
    exc = BadHttpMessage("Invalid header value char:\n\n  b'X-KFM-Hook-Token: secret\\x01'\n  ^")
    with capture_logs() as logs:
        assert _OneLineClientFaults().filter(_record(exc)) is False  # aiohttp's traceback is not printed
    assert logs == [
        {"event": "webhook.bad_http", "log_level": "info", "status": 400, "reason": "Invalid header value char:"}
    ]


@pytest.mark.parametrize("exc", [None, RuntimeError("a bug of ours")])
def test_other_aiohttp_errors_keep_their_traceback(exc: BaseException | None) -> None:
    assert _OneLineClientFaults().filter(_record(exc)) is True


def test_the_filter_sees_the_exception_aiohttp_logs() -> None:
    try:
        raise BadHttpMessage("Too many headers received")
    except BadHttpMessage:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    assert _OneLineClientFaults().filter(record) is False
