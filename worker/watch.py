"""Which repositories and branches the reconciler watches, and its horizon date: parsing only.

``KFM_WATCHED_REPOS`` is a comma-separated list of ``repo`` or
``repo:branch1|branch2``. A repository listed without branches is watched on
the ``KFM_WATCHED_BRANCHES`` names, or on its default branch when that is empty
(see docs/coverage.md). No I/O here: :mod:`worker.config` validates with it at
start-up, the reconciler resolves defaults against lakeFS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.errors import ConfigError
from worker.ids import check_branch, check_repo
from worker.utc import parse_rfc3339

__all__ = ["WatchSpec", "parse_since", "parse_watched_repos"]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class WatchSpec:
    """One watched repository; ``branches`` empty means "the default branches"."""

    repo: str
    branches: tuple[str, ...] = ()


def parse_watched_repos(raw: str, what: str = "KFM_WATCHED_REPOS") -> list[WatchSpec]:
    """Parse ``repo[:b1|b2],...``; a repository named twice merges its branches.

    Raises:
        ConfigError: naming the bad entry.
    """
    specs: dict[str, list[str]] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        repo, sep, rest = entry.partition(":")
        repo = repo.strip()
        try:
            check_repo(repo)
        except ValueError:
            raise ConfigError(f"{what}: {repo!r} is not a lakeFS repository id") from None
        branches = [b.strip() for b in rest.split("|") if b.strip()] if sep else []
        if sep and not branches:
            raise ConfigError(f"{what}: {entry!r} names no branch after ':'")
        for b in branches:
            try:
                check_branch(b)
            except ValueError:
                raise ConfigError(f"{what}: {b!r} is not a lakeFS branch name") from None
        known = specs.setdefault(repo, [])
        known.extend(b for b in branches if b not in known)
    return [WatchSpec(repo, tuple(branches)) for repo, branches in specs.items()]


def parse_since(raw: str, what: str = "--since") -> datetime:
    """An RFC 3339 date-time (with ``Z`` or an offset) or a date (midnight UTC), as UTC.

    Raises:
        ConfigError: anything else (no local times: a horizon must mean one instant).
    """
    raw = raw.strip()
    try:
        if _DATE.fullmatch(raw):
            return datetime.fromisoformat(raw).replace(tzinfo=UTC)
        return parse_rfc3339(raw)
    except ValueError:
        pass
    raise ConfigError(f"{what}={raw!r}: expected an RFC 3339 date (2026-01-31) or date-time (2026-01-31T12:00:00Z)")
