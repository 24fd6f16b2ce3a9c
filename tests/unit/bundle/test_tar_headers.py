"""docs/bundles.md's "Tar headers" table and listing hold for the golden bundle, byte for byte.

The table is read from the doc itself, so a change to the writer's headers
fails here until the doc says the same, and a doc edit fails until the bytes agree.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.unit.bundle.helpers import GOLDEN_DIR, golden

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs/bundles.md").read_text()
BLOCK = 512
ROW = re.compile(r"^\| (\w+) \| (\d+) \| (\d+) \| (.+?) \| (.+?) \|$")


def _section(title: str) -> str:
    return DOC.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _table() -> list[tuple[str, int, int, str, str]]:
    rows = [m.groups() for line in _section("Tar headers").splitlines() if (m := ROW.match(line))]
    return [(name, int(off), int(length), member, pax) for name, off, length, member, pax in rows]


def _fixed(cell: str, length: int) -> bytes | None:
    """The exact bytes a table cell names, or None when it states a rule the test checks itself."""
    if cell == "all NUL":
        return bytes(length)
    if m := re.fullmatch(r'`(".*")`', cell):
        value = ast.literal_eval("b" + m.group(1))
        assert len(value) <= length, cell
        return value.ljust(length, b"\0")
    return None


def _octal(field: bytes) -> int:
    return int(field.rstrip(b"\0"), 8)


@pytest.fixture(scope="module")
def tar_bytes() -> bytes:
    with (GOLDEN_DIR / golden.BUNDLE_FILE).open("rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def _headers(data: bytes) -> tuple[list[tuple[bytes, bytes | None]], int]:
    """Each member's (ustar header, pax header or None), and where the end-of-archive zeros start."""
    out: list[tuple[bytes, bytes | None]] = []
    pax: bytes | None = None
    off = 0
    while data[off:off + BLOCK] != bytes(BLOCK):
        header = data[off:off + BLOCK]
        size = _octal(header[124:136])
        if header[156:157] == b"x":
            pax = header + data[off + BLOCK:off + BLOCK + size]
        else:
            out.append((header, pax))
            pax = None
        off += BLOCK + -(-size // BLOCK) * BLOCK
    return out, off


def test_the_table_covers_the_whole_header_block() -> None:
    rows = _table()
    assert [r[0] for r in rows][:3] == ["name", "mode", "uid"]
    ends = [off + length for _, off, length, _, _ in rows]
    assert [off for _, off, _, _, _ in rows] == [0, *ends[:-1]] and ends[-1] == BLOCK


def test_every_header_has_the_documented_fixed_values(tar_bytes: bytes) -> None:
    members, _ = _headers(tar_bytes)
    assert any(pax for _, pax in members), "the golden bundle must exercise a pax header"
    for header, pax in members:
        for field, off, length, member_cell, pax_cell in _table():
            want = _fixed(member_cell, length)
            if want is not None:
                assert header[off:off + length] == want, (field, header[:100])
            want = _fixed(pax_cell, length)
            if pax is not None and want is not None:
                assert pax[off:off + length] == want, (field, "pax")


def test_the_documented_rules_hold(tar_bytes: bytes) -> None:
    members, _ = _headers(tar_bytes)
    manifest = golden.manifest()
    names = ["manifest.json", *(m.path for m in manifest.members)]
    assert names[1:] == sorted(names[1:])
    sizes = {m.path: m.size for m in manifest.members}
    for (header, pax), name in zip(members, names, strict=True):
        encoded = name.encode()
        records = {}
        if pax is not None:
            body = pax[BLOCK:]
            while body:
                length = int(body.split(b" ", 1)[0])
                key, _, value = body[:length].partition(b" ")[2].rstrip(b"\n").partition(b"=")
                assert body[:length].endswith(b"\n")
                records[key] = value
                body = body[length:]
            assert _octal(pax[124:136]) == len(pax) - BLOCK  # size = the records' length
            assert pax[148:156] == b"%06o\0 " % _checksum(pax)
        needs_path = len(encoded) > 100 or not name.isascii()
        assert records == ({b"path": encoded} if needs_path else {})
        shown = name.encode("ascii", "replace")[:100] if needs_path else encoded
        assert header[0:100] == shown.ljust(100, b"\0")
        assert _octal(header[124:136]) == sizes.get(name, _octal(header[124:136]))
        assert _octal(header[136:148]) == manifest.commit_mtime
        assert header[148:156] == b"%06o\0 " % _checksum(header)


def _checksum(header: bytes) -> int:
    return sum(header[:148]) + 8 * 0x20 + sum(header[156:BLOCK])


def test_the_archive_ends_as_documented(tar_bytes: bytes) -> None:
    _, end = _headers(tar_bytes)
    assert len(tar_bytes) - end >= 2 * BLOCK
    assert tar_bytes[end:] == bytes(len(tar_bytes) - end)
    assert len(tar_bytes) % 10240 == 0


def test_python_tarfile_reads_what_the_doc_says(tmp_path: Path, tar_bytes: bytes) -> None:
    path = tmp_path / "golden.tar"
    path.write_bytes(tar_bytes)
    with tarfile.open(path) as tf:
        assert tf.format == tarfile.PAX_FORMAT
        for m in tf.getmembers():
            assert (m.type, m.mode, m.uid, m.gid, m.uname, m.gname) == (tarfile.REGTYPE, 0o644, 0, 0, "", "")
            assert m.mtime == golden.manifest().commit_mtime
            assert set(m.pax_headers) <= {"path", "size"}


def test_gnu_tar_lists_the_golden_bundle_as_the_doc_shows(tmp_path: Path, tar_bytes: bytes) -> None:
    tar = shutil.which("tar")
    assert tar, "GNU tar is needed to check the documented listing"
    path = tmp_path / "golden.tar"
    path.write_bytes(tar_bytes)
    listing = subprocess.run(
        [tar, "-tvv", "--full-time", "-f", str(path)], check=True, capture_output=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C.UTF-8"},
    ).stdout.decode()
    documented = _section("Tar headers").split("```\n", 2)[1]
    assert listing == documented
