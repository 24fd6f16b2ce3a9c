"""Secret redaction in structured logs: keys naming a secret never reach the output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from worker.logs import _redact, configure_logging, get_logger

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
def json_logging() -> Iterator[io.StringIO]:
    """The project's processor chain, with only the output file swapped for a buffer."""
    configure_logging("INFO")
    out = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    yield out
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


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
