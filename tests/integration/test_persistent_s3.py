"""The stack's persistent S3 server (KFM_STACK_S3_SERVER=seaweedfs) through the registry's own client.

Starts its own SeaweedFS with the stack script, under its own state dir and
ports (the shared stack is not touched), and checks what the ledger relies on:
``If-None-Match: *`` and ``If-Match`` on PUT, ``If-None-Match: *`` on
CompleteMultipartUpload, and objects surviving ``stop-s3`` / ``start-s3``.

The first run builds ``weed`` from the Go module proxy (several minutes, cached
in ``.cache/bin``); later runs take about 15 s.
"""

from __future__ import annotations

import os
import random
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker._internal.s3 import open_bucket
from worker.config import Settings, load_settings
from worker.errors import AlreadyExistsError, ConflictError

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack"
PORTS = 10  # the S3 port and the nine internal ports after it (see s3_up_seaweedfs)
# The module fixture may build `weed` on a cold cache; whichever test sets it up needs the time.
first_build = pytest.mark.timeout(1800)


def _free_port_block() -> int:
    """A base port below the ephemeral range with ``PORTS`` consecutive free ports."""
    for _ in range(50):
        base = random.randrange(20000, 30000, PORTS)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + PORTS):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def _read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export ") :].partition("=")
            out[k] = shlex.split(v)[0] if v else ""
    return out


class SeaweedStack:
    def __init__(self, state: Path, port: int):
        self.state = state
        self.env = {
            **os.environ,
            "KFM_STACK_DIR": str(state),
            "KFM_STACK_S3_SERVER": "seaweedfs",
            "KFM_STACK_S3_PORT": str(port),
        }

    def run(self, *args: str, timeout: float = 60) -> None:
        r = subprocess.run(
            [str(STACK), *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        if r.returncode != 0:
            log = self.state / "logs" / "s3.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise AssertionError(f"stack {' '.join(args)} failed ({r.returncode}):\n{r.stderr}\n{tail}")

    def settings(self) -> Settings:
        return load_settings({**os.environ, **_read_env(self.state / "env")})


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedStack]:
    # Build (or find the cached) binary first, so the build alone gets the long timeout.
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / "build-s3.sh")],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=1800,
    )
    stack = SeaweedStack(tmp_path_factory.mktemp("seaweedfs-stack"), _free_port_block())
    try:
        stack.run("up", "s3")
        yield stack
    finally:
        stack.run("down")


@first_build
async def test_if_none_match_refuses_an_existing_key(seaweed: SeaweedStack) -> None:
    async with open_bucket(seaweed.settings()) as b:
        etag = await b.put("inm/bundle", b"first", if_none_match=True)
        with pytest.raises(AlreadyExistsError):
            await b.put("inm/bundle", b"second", if_none_match=True)
        assert await b.get("inm/bundle", 100) == (b"first", etag)


@first_build
async def test_if_match_refuses_another_etag_and_accepts_the_current_one(seaweed: SeaweedStack) -> None:
    async with open_bucket(seaweed.settings()) as b:
        etag = await b.put("ifm/index", b"v1")
        assert etag.strip('"')
        with pytest.raises(ConflictError) as wrong:
            await b.put("ifm/index", b"v2", if_match='"0123456789abcdef0123456789abcdef"')
        assert not isinstance(wrong.value, AlreadyExistsError)
        etag2 = await b.put("ifm/index", b"v2", if_match=etag)
        assert etag2 != etag
        with pytest.raises(ConflictError):
            await b.put("ifm/index", b"v3", if_match=etag)  # stale: someone else wrote v2
        assert await b.get("ifm/index", 100) == (b"v2", etag2)


@first_build
async def test_multipart_upload_refuses_an_existing_key(seaweed: SeaweedStack, tmp_path: Path) -> None:
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(16 * 1024 * 1024 + 1024))  # two parts
    small = tmp_path / "other.bin"
    small.write_bytes(b"other")
    async with open_bucket(seaweed.settings()) as b:
        digest = await b.upload_file("mpu/model.bin", big)
        with pytest.raises(AlreadyExistsError):
            await b.upload_file("mpu/model.bin", small)
        head = await b.head("mpu/model.bin")
        assert head is not None and head.size == big.stat().st_size
        await b.upload_file("mpu/model.bin", small, overwrite=True)
        assert (await b.get("mpu/model.bin", 100))[0] == b"other"
        dest = tmp_path / "back.bin"
        await b.upload_file("mpu/again.bin", big)
        assert await b.download("mpu/again.bin", dest, 1 << 30) == (big.stat().st_size, digest)


@first_build
async def test_objects_survive_a_restart(seaweed: SeaweedStack, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(1024 * 1024))
    written: dict[str, tuple[bytes, str]] = {}
    async with open_bucket(seaweed.settings()) as b:
        for i in range(5):
            data = f"row {i}".encode()
            written[f"restart/rows/{i:03d}"] = (data, await b.put(f"restart/rows/{i:03d}", data, if_none_match=True))
        digest = await b.upload_file("restart/blob.bin", blob)

    seaweed.run("stop-s3")
    seaweed.run("start-s3")

    async with open_bucket(seaweed.settings()) as b:
        assert sorted(await b.list_keys("restart/rows/")) == sorted(written)
        for key, expected in written.items():
            assert await b.get(key, 100) == expected
        assert await b.download("restart/blob.bin", tmp_path / "back.bin", 1 << 30) == (blob.stat().st_size, digest)
        with pytest.raises(AlreadyExistsError):  # the conditions still see what was written before the restart
            await b.put("restart/rows/000", b"again", if_none_match=True)
        data, etag = written["restart/rows/001"]
        await b.put("restart/rows/001", b"updated", if_match=etag)
