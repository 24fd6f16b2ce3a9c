"""The lean bulk reader `kfm ledger verify` reads entry bundles and tiles with, against the stack's S3.

It signs its own GETs instead of going through botocore's pipeline, so these
check that it reads what the registry's client wrote, under keys that need
quoting, and refuses a missing key, an object over the limit and a
missing bucket with the same errors as ``Bucket.get``.
"""

from __future__ import annotations

import pytest

from tests.integration.helpers import isolated_registry, unique
from worker._internal.s3 import BulkReader, bulk_reader, open_bucket
from worker.config import Settings
from worker.errors import IntegrityError, NotFoundError, SettingRefusedError

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return isolated_registry(stack_env, unique("bulk") + ".")


async def test_bulk_reads_equal_the_clients_reads(settings: Settings) -> None:
    objects = {
        "ledger/rows/000": b'{"seq":0}\n' * 1000,
        "ledger/tiles/0/x001/234.p/7": bytes(range(224)),
        "odd keys/a+b=c~d%e&f": b"quoted",
        "empty": b"",
    }
    async with open_bucket(settings) as b:
        for key, data in objects.items():
            await b.put(key, data)
        async with bulk_reader(b) as bulk:
            assert isinstance(bulk, BulkReader)
            for key, data in objects.items():
                assert await bulk.get(key, 1 << 20) == data == (await b.get(key, 1 << 20))[0]


async def test_bulk_refuses_like_the_client(settings: Settings) -> None:
    async with open_bucket(settings) as b:
        await b.put("big", b"x" * 100)
        async with bulk_reader(b) as bulk:
            with pytest.raises(NotFoundError, match=r"^s3: get ledger/rows/999: not found$"):
                await bulk.get("ledger/rows/999", 1 << 20)
            with pytest.raises(IntegrityError, match=r"^s3: big is 100 bytes, limit 99$"):
                await bulk.get("big", 99)
    # The error code in the response's body names the setting to fix, as for the client.
    async with open_bucket(settings, "no-such-bucket-kfm") as b, bulk_reader(b) as bulk:
        with pytest.raises(SettingRefusedError, match=r"^s3: get big: no such bucket; check KFM_S3_BUCKET"):
            await bulk.get("big", 1 << 20)
