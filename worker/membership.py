"""Static consumer-group membership (Kafka KIP-345) for ``kfm worker``.

Why: a worker that dies without leaving the group (SIGKILL, OOM, a lost host)
stays a member until the session timeout (``KFM_KAFKA_SESSION_TIMEOUT_S``,
default 30 s). When it is restarted as a new, dynamic member, its join starts
a rebalance that waits for the dead member to time out, so the restarted
worker (and every other worker of the group) consumes nothing for about that
long. A static member has a ``group.instance.id``; a restart with the same id
replaces the dead member at once and gets the same partitions back without a
rebalance (aiokafka >= 0.11 sends it in JoinGroup v5; faust-streaming passes
``consumer_group_instance_id`` through to the consumer).

The id is ``KFM_WORKER_INSTANCE_ID`` if set (``off`` turns static membership
off), else ``<hostname>-<slot>``: the slot is the lowest free number among the
worker processes of the same group on this host, held by an advisory lock on
``<KFM_WORK_DIR>/members/<group>/<slot>.lock``. The kernel drops the lock when
the process dies (SIGKILL included), so a restarted worker gets its slot, and
thus its id, back; two workers of one group on one host never share an id
(the broker would fence one of them).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
from pathlib import Path
from typing import IO

from worker.config import Settings
from worker.errors import ConfigError

__all__ = ["MAX_SLOTS", "group_instance_id"]

MAX_SLOTS = 1024
# Kafka's rule for group.instance.id (the same as for topic names).
_LEGAL = re.compile(r"[A-Za-z0-9._-]{1,249}")
_held: list[IO[bytes]] = []  # lock files kept open for the life of the process


def group_instance_id(settings: Settings, group: str) -> str | None:
    """The static member id for this worker process in ``group``; None for dynamic membership.

    Raises:
        ConfigError: if ``KFM_WORKER_INSTANCE_ID`` is not a legal id, or no slot is free.
    """
    configured = settings.worker_instance_id.strip()
    if configured.lower() == "off":
        return None
    if configured:
        if not _LEGAL.fullmatch(configured):
            raise ConfigError(
                f"KFM_WORKER_INSTANCE_ID={configured!r}: 1-249 characters of [A-Za-z0-9._-], or 'off'"
            )
        return configured
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:200] or "worker"
    work = Path(settings.work_dir or Path.cwd() / ".stack" / "work")
    return f"{host}-{_claim_slot(work / 'members' / group)}"


def _claim_slot(directory: Path) -> int:
    try:
        return _lowest_free(directory)
    except OSError as e:
        raise ConfigError(
            f"cannot take a worker slot in {directory} ({e.strerror}): make KFM_WORK_DIR writable "
            "or set KFM_WORKER_INSTANCE_ID"
        ) from e


def _lowest_free(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        f = (directory / f"{slot}.lock").open("ab")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        os.set_inheritable(f.fileno(), False)
        _held.append(f)
        return slot
    raise ConfigError(f"no free worker slot in {directory} ({MAX_SLOTS} held); set KFM_WORKER_INSTANCE_ID")
