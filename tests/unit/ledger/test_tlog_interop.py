"""Go's transparency-log client reads our tiles and checkpoints: an independent check of the format.

A ledger is grown through several checkpoints by our own tile writer
(:class:`worker.ledger.tiles.TreeEdge`: the full tiles an append completes,
then the partial tiles of the new size) into a directory laid out like the
bucket's ``ledger/`` prefix, and each checkpoint is signed by
:mod:`worker.ledger.checkpoint`. The checker, ``tests/interop/tlogcheck``, is Go
built on ``golang.org/x/mod/sumdb/tlog`` and ``sumdb/note``: it opens the
checkpoint with ``note.Open``, reads the tiles through ``tlog.TileHashReader``,
proves a record with ``tlog.ProveRecord``/``tlog.CheckRecord`` and recomputes the
root with ``tlog.TreeHash``. None of our code runs on the checking side, and the
checkpoint roots come from :func:`worker.ledger.merkle.root_from_hashes`, not from
the tile writer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unit.ledger.factories import fixed_key
from worker.ledger import merkle
from worker.ledger.checkpoint import sign_checkpoint, vkey
from worker.ledger.state import Tip, extend
from worker.ledger.tiles import LOG_PREFIX, TILE_WIDTH, entries_key, tile_key

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "deploy" / "local" / "build-tlogcheck.sh"
ORIGIN = NAME = "kfm.local/rollback-registry"
KEY = fixed_key(7)
VKEY = vkey(NAME, KEY.public_key())

# Checkpoint sizes, in the order the ledger grows: one leaf; one short of, at and
# past a full level-0 tile; around a full level-1 tile (2**16 leaves); the
# example size of c2sp.org/tlog-tiles (70,000: tiles 0/273.p/112, 1/001.p/17,
# 2/000.p/1); and past level-0 tile index 999, so that tile indexes take the
# x-prefixed form (0/x001/000.p/1).
SIZES = (1, 255, 256, 257, 65_535, 65_536, 65_537, 70_000, 256_001)
LAST = SIZES[-1]


def leaf(i: int) -> bytes:
    """Leaf data like a ledger row: one JSON line, varied length, non-ASCII, no newline."""
    return f'{{"seq":{i},"note":"ü{"x" * (i % 13)}"}}'.encode()


@dataclass
class Ledger:
    dir: Path
    scratch: Path
    leaves: list[bytes] = field(default_factory=list)
    checkpoints: dict[int, Path] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)


def _put(dir_: Path, key: str, data: bytes) -> None:
    """Write an immutable object (checked: rewriting it must not change it)."""
    assert key.startswith(LOG_PREFIX)
    path = dir_ / key.removeprefix(LOG_PREFIX)
    if path.exists():
        assert path.read_bytes() == data, f"immutable object {key} rewritten with other bytes"
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _grow(dir_: Path, scratch: Path) -> Ledger:
    """Grow the ledger batch by batch with the writer's own pure core (state.extend),
    writing every object each batch publishes."""
    ledger = Ledger(dir_, scratch)
    tip = Tip()
    for size in SIZES:
        batch = [leaf(i) for i in range(len(ledger.leaves), size)]
        ledger.leaves.extend(batch)
        tip, objects = extend(tip, batch, None)
        for tile, data in objects.tiles:
            _put(dir_, tile.key, data)
        for index, width, data in objects.bundles:
            _put(dir_, entries_key(index, width), data)
        root = merkle.root(ledger.leaves)
        assert tip.root() == root
        note = sign_checkpoint(ORIGIN, size, root, NAME, KEY)
        (dir_ / "checkpoint").write_bytes(note)  # the one mutable object
        ledger.checkpoints[size] = scratch / f"checkpoint-{size}"
        ledger.checkpoints[size].write_bytes(note)
        ledger.roots[size] = root
    return ledger


@pytest.fixture(scope="module")
def tlogcheck() -> Path:
    """The Go checker, built once by the build script (cached in .cache/bin)."""
    if shutil.which("go") is None:
        pytest.fail("the Go toolchain is needed to build tests/interop/tlogcheck (go 1.26+)")
    out = subprocess.run([str(BUILD)], capture_output=True, text=True, check=False, cwd=ROOT)
    assert out.returncode == 0, f"build-tlogcheck.sh failed:\n{out.stderr}"
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    base = tmp_path_factory.mktemp("tlog")
    (base / "scratch").mkdir()
    return _grow(base / "ledger", base / "scratch")


@pytest.fixture
def copy(ledger: Ledger, tmp_path: Path) -> Iterator[Ledger]:
    """A private copy of the ledger's directory, for tests that damage it."""
    shutil.copytree(ledger.dir, tmp_path / "ledger")
    yield Ledger(tmp_path / "ledger", ledger.scratch, ledger.leaves, ledger.checkpoints, ledger.roots)


def check(
    binary: Path,
    ledger: Ledger,
    index: int,
    *flags: str,
    size: int = LAST,
    data: bytes | None = None,
    checkpoint: Path | None = None,
) -> tuple[int, dict[str, object]]:
    """Run the Go checker; ``data`` is the leaf given with --leaf-file (default: the true leaf)."""
    args = [str(binary), "--dir", str(ledger.dir), "--vkey", VKEY, "--origin", ORIGIN]
    args += ["--index", str(index), "--checkpoint", str(checkpoint or ledger.checkpoints[size])]
    if "--rows" not in flags or data is not None:
        leaf_data = ledger.leaves[index] if data is None else data
        leaf_file = ledger.scratch / f"leaf-{hashlib.sha256(leaf_data).hexdigest()}"
        leaf_file.write_bytes(leaf_data)
        args += ["--leaf-file", str(leaf_file)]
    out = subprocess.run([*args, *flags], capture_output=True, text=True, check=False, timeout=120)
    lines = out.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {out.stdout!r} {out.stderr!r}"
    return out.returncode, json.loads(lines[0])


def _boundaries(size: int) -> list[int]:
    picks = {0, 1, 255, 256, 257, 65_535, 65_536, 65_537, 69_999, 255_999, 256_000, size // 2, size - 1}
    return sorted(i for i in picks if i < size)


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


# --- Go accepts what we write ---------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_go_proves_records_at_every_checkpoint(tlogcheck: Path, ledger: Ledger, size: int) -> None:
    # Older checkpoints are checked against the grown directory: the partial
    # tiles of every published size must still be there (c2sp.org/tlog-tiles).
    for index in _boundaries(size):
        for flags in ((), ("--rows",)):
            rc, out = check(tlogcheck, ledger, index, *flags, size=size)
            assert rc == 0, out
            assert out["ok"] is True and out["size"] == size and out["index"] == index
            assert out["root"] == out["tree_hash"] == _b64(ledger.roots[size])
            assert out["record_hash"] == _b64(merkle.leaf_hash(ledger.leaves[index]))
            assert "full_tile_fallbacks" not in out


def _tile_count(size: int) -> int:
    """Tiles a tree of ``size`` publishes: full and partial, every level."""
    count, level = 0, 0
    while size >> (8 * level):
        count += -(-(size >> (8 * level)) // TILE_WIDTH)
        level += 1
    return count


@pytest.mark.parametrize("size", SIZES)
def test_go_authenticates_every_tile_and_bundle(tlogcheck: Path, ledger: Ledger, size: int) -> None:
    rc, out = check(tlogcheck, ledger, size - 1, "--rows", "--all-tiles", size=size)
    assert rc == 0, out
    assert out["tiles_checked"] == _tile_count(size)
    assert out["bundles_checked"] == -(-size // TILE_WIDTH)


def test_latest_checkpoint_object_is_the_last_one(tlogcheck: Path, ledger: Ledger) -> None:
    args = [str(tlogcheck), "--dir", str(ledger.dir), "--vkey", VKEY, "--origin", ORIGIN]
    out = subprocess.run([*args, "--index", "123456", "--rows"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout
    assert json.loads(out.stdout)["size"] == LAST


def test_directory_holds_exactly_the_tiles_go_expects(tlogcheck: Path, ledger: Ledger) -> None:
    """The tiles of every published size (tlog.NewTiles, Go's naming), right length, nothing else."""
    expected = set(_go_paths(tlogcheck, [f"size {size}" for size in SIZES]))
    stored = {p.relative_to(ledger.dir).as_posix() for p in (ledger.dir / "tile").rglob("*") if p.is_file()}
    assert stored == expected
    bundles = {p.relative_to(ledger.dir).as_posix() for p in (ledger.dir / "rows").rglob("*") if p.is_file()}
    # One entry bundle per level-0 tile, with the same <N>[.p/<W>].
    assert bundles == {"rows/" + p.removeprefix("tile/0/") for p in expected if p.startswith("tile/0/")}
    for path in expected:
        width = int(path.rsplit("/", 1)[1]) if ".p/" in path else TILE_WIDTH
        assert (ledger.dir / path).stat().st_size == width * merkle.HASH_SIZE
        if path.startswith("tile/0/"):
            assert (ledger.dir / "rows" / path.removeprefix("tile/0/")).read_bytes().count(b"\n") == width


def _go_paths(binary: Path, lines: list[str]) -> list[str]:
    """Go's C2SP paths for "L N W" (one tile) or "size S" (all tiles of a tree) lines."""
    text = "".join(line + "\n" for line in lines)
    out = subprocess.run([str(binary), "--paths"], input=text, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_tile_and_bundle_keys_match_go_paths(tlogcheck: Path) -> None:
    tiles = [
        (level, n, w)
        for level in (0, 1, 2, 63)
        for n in (0, 1, 999, 1000, 1001, 1_234_067, 10**9, 2**40 + 7)
        for w in (1, 255, 256)
    ]
    go_paths = _go_paths(tlogcheck, [f"{level} {n} {w}" for level, n, w in tiles])
    for (level, n, w), path in zip(tiles, go_paths, strict=True):
        assert tile_key(level, n, w) == LOG_PREFIX + path
        if level == 0:
            assert entries_key(n, w) == f"{LOG_PREFIX}rows/{path.removeprefix('tile/0/')}"


# --- Go refuses what is wrong ---------------------------------------------------------------------

# Tiles read to prove record 0 at the last size (256,001 leaves): its level-0 and
# level-1 tiles (authenticated through their parents) and the right edge
# (authenticated against the checkpoint root).
PATH_TILES = ("tile/0/000", "tile/1/000", "tile/2/000.p/3", "tile/1/003.p/232", "tile/0/x001/000.p/1")


@pytest.mark.parametrize("tile", PATH_TILES)
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_flipped_byte_in_a_tile_fails(tlogcheck: Path, copy: Ledger, tile: str, where: str) -> None:
    path = copy.dir / tile
    data = bytearray(path.read_bytes())
    data[0 if where == "first" else -1] ^= 0x01
    path.write_bytes(bytes(data))
    rc, out = check(tlogcheck, copy, 0)
    assert rc == 1 and out["ok"] is False
    assert out["stage"] == "prove" and "inconsistent tile" in str(out["error"])


def test_a_flipped_byte_off_the_path_fails_the_full_check(tlogcheck: Path, copy: Ledger) -> None:
    path = copy.dir / "tile/0/500"
    data = bytearray(path.read_bytes())
    data[4000] ^= 0x80
    path.write_bytes(bytes(data))
    assert check(tlogcheck, copy, 0)[0] == 0  # not read for record 0
    rc, out = check(tlogcheck, copy, 0, "--all-tiles")
    assert rc == 1 and out["stage"] == "all_tiles" and "inconsistent tile" in str(out["error"])


def test_a_truncated_tile_fails(tlogcheck: Path, copy: Ledger) -> None:
    path = copy.dir / "tile/1/003.p/232"
    path.write_bytes(path.read_bytes()[:-32])
    rc, out = check(tlogcheck, copy, 0)
    assert rc == 1 and "bad result slice" in str(out["error"])


def test_a_missing_partial_tile_fails_unless_the_full_one_may_stand_in(tlogcheck: Path, copy: Ledger) -> None:
    # Size 257's level-0 partial tile 0/001.p/1 has since been completed as 0/001.
    (copy.dir / "tile/0/001.p/1").unlink()
    rc, out = check(tlogcheck, copy, 256, size=257)
    assert rc == 1 and out["stage"] == "prove"
    rc, out = check(tlogcheck, copy, 256, "--allow-full-fallback", size=257)
    assert rc == 0, out
    assert out["full_tile_fallbacks"] == ["tile/0/001.p/1 <- tile/0/001"]


@pytest.mark.parametrize(
    ("index", "data"),
    [
        (0, leaf(1)),  # another record
        (70_000, leaf(70_000) + b"\n"),  # the JSONL line with its newline is not the leaf
        (LAST - 1, leaf(LAST - 1)[:-1]),
        (12_345, b""),
    ],
    ids=["other record", "with newline", "truncated", "empty"],
)
def test_a_wrong_leaf_fails(tlogcheck: Path, ledger: Ledger, index: int, data: bytes) -> None:
    rc, out = check(tlogcheck, ledger, index, data=data)
    assert rc == 1 and out["stage"] == "check" and "invalid transparency proof" in str(out["error"])


def test_a_tampered_entry_bundle_fails(tlogcheck: Path, copy: Ledger) -> None:
    bundle = copy.dir / "rows/001"
    bundle.write_bytes(bundle.read_bytes().replace(b'"seq":300,', b'"seq":301,'))
    rc, out = check(tlogcheck, copy, 300, "--rows")  # the bundle's record is proven: it fails
    assert rc == 1 and out["stage"] == "check"
    rc, out = check(tlogcheck, copy, 300, "--rows", data=copy.leaves[300])  # differs from the given leaf
    assert rc == 1 and out["stage"] == "rows"
    rc, out = check(tlogcheck, copy, 0, "--rows", "--all-tiles")
    assert rc == 1 and out["stage"] == "all_tiles" and "record 300" in str(out["error"])


def _signed(ledger: Ledger, body: tuple[str, int, bytes], name: str = NAME, seed: int = 7) -> Path:
    path = ledger.scratch / f"checkpoint-{name.replace('/', '_')}-{seed}-{body[1]}-{body[0].replace('/', '_')}"
    path.write_bytes(sign_checkpoint(*body, name, fixed_key(seed)))
    return path


def test_a_checkpoint_signed_by_another_key_fails(tlogcheck: Path, ledger: Ledger) -> None:
    good = (ORIGIN, LAST, ledger.roots[LAST])
    for name, seed in ((NAME, 8), ("kfm.local/impostor", 7), ("kfm.local/impostor", 8)):
        rc, out = check(tlogcheck, ledger, 0, checkpoint=_signed(ledger, good, name, seed))
        assert rc == 1 and out["stage"] == "checkpoint" and "no verifiable signatures" in str(out["error"])


def test_a_checkpoint_whose_signature_does_not_verify_fails(tlogcheck: Path, ledger: Ledger) -> None:
    note = ledger.checkpoints[LAST].read_bytes().replace(f"\n{LAST}\n".encode(), f"\n{LAST - 1}\n".encode())
    path = ledger.scratch / "checkpoint-altered-size"
    path.write_bytes(note)
    rc, out = check(tlogcheck, ledger, 0, checkpoint=path)
    assert rc == 1 and out["stage"] == "checkpoint" and "invalid signature" in str(out["error"])


def test_a_checkpoint_our_key_signed_for_another_tree_fails(tlogcheck: Path, ledger: Ledger) -> None:
    other_root = merkle.root([b"not", b"our", b"tree"])
    for body, stage in (
        ((ORIGIN, LAST, other_root), "prove"),  # tiles do not hash to this root
        ((ORIGIN, LAST + 300, ledger.roots[LAST]), "prove"),  # tiles for this size are not there
        (("kfm.local/other-log", LAST, ledger.roots[LAST]), "checkpoint"),  # another log's origin
    ):
        rc, out = check(tlogcheck, ledger, 0, checkpoint=_signed(ledger, body))
        assert rc == 1 and out["stage"] == stage, out


def test_an_index_outside_the_tree_fails(tlogcheck: Path, ledger: Ledger) -> None:
    rc, out = check(tlogcheck, ledger, 256, size=256, data=leaf(256))
    assert rc == 1 and out["stage"] == "index"
