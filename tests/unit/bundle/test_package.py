"""The worker.bundle package boundary."""

from __future__ import annotations

import subprocess
import sys


def test_bundle_package_imports_no_transport() -> None:
    # Verification code never imports Kafka, lakeFS or storage clients: callers move the bytes.
    code = (
        "import sys, worker.bundle, worker.keys;"
        "bad = {'aiokafka', 'faust', 'lakefs_sdk', 'aioboto3', 'botocore', 'aiohttp'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
