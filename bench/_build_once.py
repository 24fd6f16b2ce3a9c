"""One bundle build as its own process (timed whole by bench_build.py): manifest + staged files -> .tar.zst.

Usage: python bench/_build_once.py MANIFEST.json STAGED_DIR LEVEL OUT
(member path P is the file STAGED_DIR/P; the manifest was made beforehand, as
the bundler's staging makes it while downloading.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.bundle.manifest import BundleManifest  # noqa: E402
from worker.bundle.tarzst import write_bundle  # noqa: E402


def main() -> int:
    manifest_path, staged, level, out = sys.argv[1:5]
    manifest = BundleManifest.from_bytes(Path(manifest_path).read_bytes())
    files = {m.path: Path(staged, m.path) for m in manifest.members}
    with Path(out).open("wb") as f:
        d = write_bundle(f, manifest, files, mtime=manifest.commit_mtime, zstd_level=int(level))
    print(d.sha256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
