"""Run `kfm` as a person in a terminal would: stdout and stderr on one pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import time
from dataclasses import dataclass

from tests.integration.helpers import KFM, ROOT

ROWS, COLS = 40, 120


@dataclass(frozen=True)
class TerminalRun:
    returncode: int
    screen: str
    """Everything the terminal received (stdout and stderr interleaved, as a person sees them)."""

    def lines(self) -> list[str]:
        """The lines as they end on screen: a carriage return redraws its line in place."""
        out = []
        for raw in self.screen.replace("\r\n", "\n").split("\n"):
            out.append(raw.rsplit("\r", 1)[-1])
        return out


def run_in_terminal(env: dict[str, str], *args: str, timeout: float = 600) -> TerminalRun:
    """`kfm ARGS` with a pseudo-terminal of ROWS x COLS as its stdin, stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    full = {**os.environ, **env, "TERM": "xterm", "COLUMNS": str(COLS), "LINES": str(ROWS)}
    proc = subprocess.Popen(
        [*KFM, *args],
        env=full,
        cwd=ROOT,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"kfm {' '.join(args)} did not finish in {timeout} s: {b''.join(chunks)!r}")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child side closed (the process ended)
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    rc = proc.wait(timeout=60)
    return TerminalRun(rc, b"".join(chunks).decode("utf-8", "replace"))


def run_piped(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`kfm ARGS` with stdout and stderr each a pipe (a script or a log), stdin closed."""
    full = {**os.environ, **env}
    return subprocess.run(
        [*KFM, *args],
        check=False,
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
