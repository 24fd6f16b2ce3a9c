"""Secret redaction in structured logs: keys naming a secret never reach the output."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from worker.logs import _redact, configure_logging, get_logger, stdlib_config

SECRET = "hunter2-very-secret-value"


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "hook_token",
        "KFM_HOOK_TOKEN",
        "access_token",
        "secret",
        "lakefs_secret_access_key",
        "password",
        "db_Password",
        "authorization",
        "Authorization",
        "private_key",
        "signing_key",
    ],
)
def test_secret_keys_are_redacted(key: str) -> None:
    event = {"event": "hello", key: SECRET}
    out = _redact(None, "info", event)
    assert out[key] == "[redacted]"
    assert out["event"] == "hello"


@pytest.mark.parametrize("key", ["event", "repo", "commit_id", "public_key_id", "user", "level"])
def test_other_keys_are_kept(key: str) -> None:
    out = _redact(None, "info", {key: "value"})
    assert out == {key: "value"}


def test_redaction_replaces_every_matching_key_and_keeps_the_rest() -> None:
    out = _redact(None, "info", {"event": "x", "token": "a", "password": "b", "repo": "repo-one", "n": 3})
    assert out == {"event": "x", "token": "[redacted]", "password": "[redacted]", "repo": "repo-one", "n": 3}


@pytest.fixture
def json_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The project's processor chain, ours and the standard library's, writing to a buffer instead of stderr."""
    yield from _configured("INFO", monkeypatch)


def _configured(level: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in _LIBRARIES}
    monkeypatch.setattr(sys, "stderr", out)  # the standard library's handler writes to stderr as it is now
    configure_logging(level)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    yield out
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    logging.captureWarnings(False)
    root.handlers[:], root.level = saved[0], saved[1]
    for name, lvl in saved[2].items():
        logging.getLogger(name).setLevel(lvl)


_LIBRARIES = ("aiokafka", "botocore", "aiohttp.access", "mode", "faust")


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line]


def test_configured_pipeline_redacts_before_rendering(json_logging: io.StringIO) -> None:
    get_logger("kfm.test").info("webhook received", hook_token=SECRET, repo="repo-one")
    (line,) = _lines(json_logging)
    assert line["hook_token"] == "[redacted]"
    assert line["repo"] == "repo-one"
    assert line["event"] == "webhook received"
    assert line["level"] == "info"


def test_bound_context_is_redacted_too(json_logging: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(authorization=f"Bearer {SECRET}", request_id="req-1")
    get_logger("kfm.test").bind(s3_secret_access_key=SECRET).warning("retrying")
    err = json_logging.getvalue()
    assert SECRET not in err
    (line,) = [json.loads(x) for x in err.splitlines()]
    assert line["authorization"] == "[redacted]"
    assert line["s3_secret_access_key"] == "[redacted]"
    assert line["request_id"] == "req-1"


def test_level_filter(json_logging: io.StringIO) -> None:
    log = get_logger("kfm.test")
    log.debug("hidden")
    log.info("shown")
    assert [line["event"] for line in _lines(json_logging)] == ["shown"]


def test_secrets_nested_in_mappings_and_lists_are_redacted() -> None:
    out = _redact(None, "info", {"headers": {"Authorization": "Basic abc", "X": "1"}, "items": [{"token": "t"}]})
    assert out["headers"] == {"Authorization": "[redacted]", "X": "1"}
    assert out["items"] == [{"token": "[redacted]"}]


def test_standard_library_records_are_json_lines_too(json_logging: io.StringIO) -> None:
    """aiokafka, Faust and mode log through the standard library: the same renderer, one JSON object a line."""
    structlog.contextvars.bind_contextvars(request_id="req-7")
    logging.getLogger("aiokafka").error('Unable connect to "127.0.0.1:1": [Errno 111] Connect call failed')
    logging.getLogger("faust.worker").warning("[^Worker]: Starting...\nsecond line of the same record")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("mode.services").exception("crashed")
    lines = _lines(json_logging)
    assert len(lines) == 3 == len(json_logging.getvalue().splitlines())
    kafka, faust, mode = lines
    assert kafka["logger"] == "aiokafka" and kafka["level"] == "error" and kafka["event"].startswith("Unable connect")
    assert kafka["request_id"] == "req-7" and "timestamp" in kafka
    assert faust["logger"] == "faust.worker" and faust["level"] == "warning" and "second line" in faust["event"]
    assert mode["level"] == "error" and "RuntimeError: boom" in mode["exception"]


def test_python_warnings_become_json_lines(json_logging: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)  # catch_warnings saved showwarning before configure_logging set it
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    (line,) = _lines(json_logging)
    assert line["logger"] == "py.warnings" and "deprecated thing" in line["event"]


def test_library_debug_lines_that_quote_requests_stay_off_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's DEBUG lines quote request headers (the signature) and bodies: never logged, even
    in the worker, whose libraries log at KFM_LOG_LEVEL."""
    for out in _configured("DEBUG", monkeypatch):
        logging.config.dictConfig(stdlib_config("DEBUG"))  # what the worker gives Faust
        logging.getLogger("botocore.endpoint").debug("Making request with headers {'Authorization': 'AWS4 x'}")
        logging.getLogger("aiohttp.access").info('127.0.0.1 "POST /lakefs/webhook HTTP/1.1" 202')
        logging.getLogger("aiokafka.conn").debug("kept: aiokafka's debug lines carry no credentials")
        get_logger("kfm.test").debug("ours too")
        assert [line["event"] for line in _lines(out)] == [
            "kept: aiokafka's debug lines carry no credentials", "ours too"]


def test_a_commands_stderr_gets_only_the_libraries_warnings(json_logging: io.StringIO) -> None:
    """A CLI verb's stderr is its own: botocore's "found credentials" and aiokafka's notices stay out."""
    logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")
    logging.getLogger("aiokafka").warning("Topic kfm.x is not available during auto-create initialization")
    get_logger("kfm.test").info("ours")
    assert [line["event"] for line in _lines(json_logging)] == [
        "Topic kfm.x is not available during auto-create initialization", "ours"]
