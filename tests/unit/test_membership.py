"""Static group membership ids: configured, off, or <hostname>-<slot> held by a lock."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker import membership
from worker.config import Settings, load_settings
from worker.errors import ConfigError


def _settings(tmp_path: Path, instance_id: str = "") -> Settings:
    return load_settings({"KFM_WORK_DIR": str(tmp_path), "KFM_WORKER_INSTANCE_ID": instance_id})


@pytest.fixture(autouse=True)
def _release_slots() -> Iterator[None]:
    yield
    while membership._held:  # the locks this test took
        membership._held.pop().close()


def test_configured_id_is_used_as_is(tmp_path: Path) -> None:
    assert membership.group_instance_id(_settings(tmp_path, "worker-a.eu-1"), "g") == "worker-a.eu-1"


def test_off_means_dynamic_membership(tmp_path: Path) -> None:
    assert membership.group_instance_id(_settings(tmp_path, "off"), "g") is None


@pytest.mark.parametrize("bad", ["has space", "slash/no", "x" * 250])
def test_illegal_configured_id_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="KFM_WORKER_INSTANCE_ID"):
        membership.group_instance_id(_settings(tmp_path, bad), "g")


def test_derived_ids_are_distinct_per_process_slot_and_group(tmp_path: Path) -> None:
    host = socket.gethostname()
    s = _settings(tmp_path)
    assert membership.group_instance_id(s, "g") == f"{host}-0"
    assert membership.group_instance_id(s, "g") == f"{host}-1"  # a second worker of the group on this host
    assert membership.group_instance_id(s, "other") == f"{host}-0"  # slots are per group


def test_a_dead_workers_slot_is_taken_by_its_restart(tmp_path: Path) -> None:
    """The lock goes with the process (SIGKILL included), so a restart gets the same id."""
    code = (
        "import sys; from worker import membership; from worker.config import Settings, load_settings;"
        f"s = load_settings({{'KFM_WORK_DIR': {str(tmp_path)!r}}});"
        "print(membership.group_instance_id(s, 'g'))"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert first == again == f"{socket.gethostname()}-0\n"


def test_an_unwritable_work_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="KFM_WORKER_INSTANCE_ID"):
        membership.group_instance_id(_settings(blocker), "g")
