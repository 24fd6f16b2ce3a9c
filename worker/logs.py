"""structlog JSON logging with bound context and secret redaction.

Why a redaction processor: settings and webhook headers carry tokens; a log
line must never be the place they leak. Keys are matched by name, so new
secret-bearing fields are covered if they follow the naming.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]

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


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr; context bound with ``structlog.contextvars``."""
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


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
