"""structlog JSON logging with bound context and secret redaction.

Why a redaction processor: settings and webhook headers carry tokens; a log
line must never be the place they leak. Keys are matched by name, so new
secret-bearing fields are covered if they follow the naming.

Why the standard library's logging goes through the same renderer: aiokafka, Faust (and
mode, its service library), aiohttp and botocore log with it; left alone, their lines come
out as plain text (or, with no handler, through logging's last resort) between our JSON
lines, and a log pipeline that parses JSON drops or mangles them. The root logger gets one
handler whose formatter runs those records through the processors below, so every line a
process writes on stderr is one JSON object. Faust replaces the root logger's handlers
when its worker starts; :func:`stdlib_config` is the configuration it is given instead.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger", "stdlib_config"]

_SECRET_MARKERS = ("token", "secret", "password", "authorization", "private_key", "signing_key")


def _scrub(value: Any, depth: int = 0) -> Any:
    """Redact secret-named keys at any depth (headers dicts, nested settings)."""
    if depth > 8:
        return value
    if isinstance(value, MutableMapping):
        return {
            k: "[redacted]" if isinstance(k, str) and any(m in k.lower() for m in _SECRET_MARKERS)
            else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    return value


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(m in key.lower() for m in _SECRET_MARKERS):
            event[key] = "[redacted]"
        else:
            event[key] = _scrub(event[key])
    return event


# Libraries whose DEBUG lines quote request headers and bodies (signatures, credentials in
# query strings, object contents): never below INFO, whatever KFM_LOG_LEVEL says. aiohttp's
# access log repeats what the receiver logs itself for every webhook.
_LIBRARY_FLOORS = {
    "botocore": logging.INFO, "aiobotocore": logging.INFO, "boto3": logging.INFO, "s3transfer": logging.INFO,
    "urllib3": logging.INFO, "lakefs_sdk": logging.INFO, "aiohttp.access": logging.WARNING,
}


def _add_logger_name(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if isinstance(record, logging.LogRecord):
        event["logger"] = record.name
    return event


def _stdlib_formatter() -> logging.Formatter:
    """A formatter that renders a standard-library record as our JSON line."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
    )


def stdlib_config(level: str = "INFO") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` form of the root logger's setup (Faust's ``logging_config``).

    ``level`` is the libraries' level: the worker gives them ``KFM_LOG_LEVEL`` (Faust's and
    aiokafka's lines about the consumer group are the worker's lifecycle); everything else
    gives them WARNING at least (:func:`configure_logging`).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": _stdlib_formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": sys.stderr, "formatter": "json"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            name: {"level": logging.getLevelName(max(floor, getattr(logging, level.upper())))}
            for name, floor in _LIBRARY_FLOORS.items()
        },
    }


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr, ours and the standard library's; context bound with ``structlog.contextvars``.

    The libraries log warnings and errors only (or what ``level`` says, if stricter): a
    command's stderr is for its own progress and errors, not botocore's "found credentials"
    or aiokafka's consumer-group notices. The worker gives them more (:func:`stdlib_config`).
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    libraries = max(logging.WARNING, getattr(logging, level.upper()))
    logging.config.dictConfig(stdlib_config(logging.getLevelName(libraries)))
    logging.captureWarnings(True)  # warnings.warn() output is a log record too, not a plain line


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
