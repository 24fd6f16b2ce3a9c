"""The registry bucket over aioboto3: conditional writes and streamed transfers.

Why conditional writes: bundles and attestations are immutable, and the
ledger has one writer; ``If-None-Match: *`` makes "never overwrite" a property
of the store rather than of our code, and ``If-Match`` makes a rewrite of the
index fail if someone else changed it since we read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aioboto3
import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import get_cert_path

from worker.config import Settings
from worker.errors import (
    AlreadyExistsError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    SettingRefusedError,
    TransientError,
)
from worker.ids import s3_key_in

if TYPE_CHECKING:
    from worker.progress import Progress

__all__ = ["Bucket", "BulkReader", "Head", "bulk_reader", "open_bucket"]

_POOL_CONNECTIONS = 32

_PART = 16 * 1024 * 1024


def _read_small(path: Path) -> tuple[bytes, str] | None:
    """The file's bytes and SHA-256 if it fits in one part; None if it does not."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size > _PART:
            return None
        data = f.read(_PART + 1)  # one byte more: a file that grew since is not cut short
    return None if len(data) > _PART else (data, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Head:
    size: int
    etag: str


def _setting_refused(code: str, status: int, what: str) -> SettingRefusedError | None:
    """A refusal whose fix is a setting: the message names it (``kfm`` exits 4, not 1, for it)."""
    if code == "NoSuchBucket":
        return SettingRefusedError(f"s3: {what}: no such bucket; check KFM_S3_BUCKET (or --s3-bucket)")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
        return SettingRefusedError(f"s3: {what}: {code} ({status}); check KFM_S3_ACCESS_KEY_ID and "
                                   "KFM_S3_SECRET_ACCESS_KEY")
    return None


def _refusal(code: str, status: int, what: str, kind: str) -> Exception:
    """The error for an S3 error response (``code`` from its body, ``kind`` when it has none)."""
    if refused := _setting_refused(code, status, what):
        return refused
    if code in ("NoSuchKey", "404", "NotFound") or status == 404:
        return NotFoundError(f"s3: {what}: not found")
    if code == "PreconditionFailed" or status == 412:
        return ConflictError(f"s3: {what}: precondition failed")
    if 400 <= status < 500 and status not in (408, 429):
        return IntegrityError(f"s3: {what}: {code} ({status})")
    return TransientError(f"s3: {what}: {code or kind} ({status})")


def _wrap(e: Exception, what: str) -> Exception:
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return _refusal(code, status, what, type(e).__name__)
    return TransientError(f"s3: {what}: {type(e).__name__}")


class Bucket:
    def __init__(self, client: Any, name: str):
        self._c = client
        self.name = name

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def key_of(self, uri: str) -> str | None:
        """The key that ``uri`` names in this bucket; ``None`` if it is not an ``s3://`` URI here."""
        return s3_key_in(uri, self.name)

    async def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write a small object; return its ETag.

        Raises:
            AlreadyExistsError: ``if_none_match`` and the key exists.
            ConflictError: ``if_match`` and the ETag differs.
        """
        kw: dict[str, Any] = {}
        if if_none_match:
            kw["IfNoneMatch"] = "*"
        if if_match is not None:
            kw["IfMatch"] = if_match
        try:
            r = await self._c.put_object(Bucket=self.name, Key=key, Body=data, **kw)
        except (ClientError, BotoCoreError) as e:
            err = _wrap(e, f"put {key}")
            if if_none_match and isinstance(err, ConflictError):
                raise AlreadyExistsError(f"s3: {key} already exists") from e
            raise err from e
        return str(r["ETag"])

    async def upload_file(
        self, key: str, path: Path, *, overwrite: bool = False, progress: Progress | None = None
    ) -> str:
        """Stream a file up with multipart; return its SHA-256.

        A file of at most one part goes up in a single PUT: the same condition, one
        round trip instead of three (a small commit's bundle is most of them, and each
        round trip is on its way to the ledger row).

        Refuses to overwrite an existing object unless ``overwrite`` (restores
        put model binaries back where production reads them).
        """
        small = await asyncio.to_thread(_read_small, path)
        if small is not None:
            await self.put(key, small[0], if_none_match=not overwrite)
            if progress is not None:
                progress.expect(len(small[0]))
                progress.advance(len(small[0]))
            return small[1]
        if progress is not None:
            progress.expect(path.stat().st_size)  # noqa: ASYNC240 (one stat, as open() below)
        h = hashlib.sha256()
        try:
            up = await self._c.create_multipart_upload(Bucket=self.name, Key=key)
            upload_id = up["UploadId"]
            parts = []
            try:
                with path.open("rb") as f:
                    n = 1
                    while True:
                        chunk = f.read(_PART)
                        if not chunk and n > 1:
                            break
                        h.update(chunk)
                        r = await self._c.upload_part(
                            Bucket=self.name, Key=key, UploadId=upload_id, PartNumber=n, Body=chunk
                        )
                        parts.append({"ETag": r["ETag"], "PartNumber": n})
                        if progress is not None:
                            progress.advance(len(chunk))
                        n += 1
                        if len(chunk) < _PART:
                            break
                await self._c.complete_multipart_upload(
                    Bucket=self.name,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **({} if overwrite else {"IfNoneMatch": "*"}),
                )
            except BaseException:
                with contextlib.suppress(ClientError, BotoCoreError):
                    await self._c.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)
                raise
        except (ClientError, BotoCoreError) as e:
            err = _wrap(e, f"upload {key}")
            if isinstance(err, ConflictError):
                raise AlreadyExistsError(f"s3: {key} already exists") from e
            raise err from e
        return h.hexdigest()

    async def get(self, key: str, max_bytes: int) -> tuple[bytes, str]:
        """Read a small object; return (bytes, ETag).

        Raises:
            NotFoundError: no such key.
            IntegrityError: larger than ``max_bytes``.
        """
        try:
            r = await self._c.get_object(Bucket=self.name, Key=key)
            body = r["Body"]
            try:
                if int(r["ContentLength"]) > max_bytes:
                    raise IntegrityError(f"s3: {key} is {r['ContentLength']} bytes, limit {max_bytes}")
                data = await body.read()
            finally:
                body.close()
        except (ClientError, BotoCoreError) as e:
            raise _wrap(e, f"get {key}") from e
        return bytes(data), str(r["ETag"])

    async def download(
        self, key: str, dest: Path, max_bytes: int, *, progress: Progress | None = None
    ) -> tuple[int, str]:
        """Stream an object to a file; return (size, sha256)."""
        h, n = hashlib.sha256(), 0
        try:
            r = await self._c.get_object(Bucket=self.name, Key=key)
            body = r["Body"]
            if progress is not None:
                progress.expect(int(r.get("ContentLength") or 0))
            try:
                with dest.open("wb") as f:
                    while chunk := await body.read(1 << 20):
                        n += len(chunk)
                        if n > max_bytes:
                            raise IntegrityError(f"s3: {key} exceeds {max_bytes} bytes")
                        h.update(chunk)
                        f.write(chunk)
                        if progress is not None:
                            progress.advance(len(chunk))
            finally:
                body.close()
        except (ClientError, BotoCoreError) as e:
            # Removing the partial file is one local unlink, kept synchronous so it
            # also completes while the task is being cancelled (no await to interrupt).
            dest.unlink(missing_ok=True)  # noqa: ASYNC240
            raise _wrap(e, f"download {key}") from e
        except BaseException:
            dest.unlink(missing_ok=True)  # noqa: ASYNC240 - as above
            raise
        return n, h.hexdigest()

    async def ping(self) -> None:
        """Readiness: the bucket exists and these credentials may use it (HeadBucket).

        Raises:
            TransientError: the server does not answer.
            IntegrityError, NotFoundError: it refuses the credentials or has no such bucket.
        """
        try:
            await self._c.head_bucket(Bucket=self.name)
        except (ClientError, BotoCoreError) as e:
            raise _wrap(e, f"head bucket {self.name}") from e

    async def head(self, key: str) -> Head | None:
        try:
            r = await self._c.head_object(Bucket=self.name, Key=key)
        except (ClientError, BotoCoreError) as e:
            err = _wrap(e, f"head {key}")
            if isinstance(err, NotFoundError):
                return None
            raise err from e
        return Head(size=int(r["ContentLength"]), etag=str(r["ETag"]))

    async def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            paginator = self._c.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
                keys.extend(o["Key"] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as e:
            raise _wrap(e, f"list {prefix}") from e
        return keys

    async def delete(self, key: str) -> None:
        try:
            await self._c.delete_object(Bucket=self.name, Key=key)
        except (ClientError, BotoCoreError) as e:
            raise _wrap(e, f"delete {key}") from e


@asynccontextmanager
async def open_bucket(settings: Settings, bucket: str | None = None) -> AsyncIterator[Bucket]:
    """A client for the registry bucket (or ``bucket``).

    An empty ``KFM_S3_ENDPOINT`` is the provider's own endpoint (AWS); empty keys
    leave credentials to botocore's default chain (AWS_* variables, profiles,
    container and instance roles).

    Raises:
        ConfigError: no bucket named (``KFM_S3_BUCKET`` unset).
    """
    if not bucket:
        settings.require("s3_bucket")
    session = aioboto3.Session()
    # S3-compatible servers on a host of their own mostly want path-style; AWS wants virtual-host.
    style = settings.s3_addressing_style or ("path" if settings.s3_endpoint else "virtual")
    cfg = Config(
        # Callers keep up to 16 small requests in flight (ledger tiles, a rollback's STAC
        # documents) beside a streamed download; botocore's default pool of 10 made the rest wait.
        max_pool_connections=_POOL_CONNECTIONS,
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": style},
    )
    creds = {}
    if settings.s3_access_key_id:
        creds = {
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": settings.s3_secret_access_key,
        }
    async with session.client(
        "s3", endpoint_url=settings.s3_endpoint or None, region_name=settings.s3_region or None, config=cfg,
        **creds
    ) as client:
        yield Bucket(client, bucket or settings.s3_bucket)


_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_BULK_ATTEMPTS = 2  # as botocore's retries={"max_attempts": 2} above


class BulkReader:
    """Plain signed GETs of many small objects over one connection pool: for bulk
    reads of objects whose bytes the caller checks itself (``kfm ledger verify``).

    Why not ``Bucket.get``: botocore's pipeline costs about 4 ms of CPU per GET
    (the S3 endpoint rules evaluated again for each key, the ``Last-Modified``
    date parsed, a CRC32 of the body, event hooks), which bounded verify's rows
    per second. Here a GET is one SigV4 signature and one aiohttp request, to
    the endpoint, addressing style, region, credentials and TLS settings of the
    client the reader was made from (its URL prefix is taken from one presigned
    URL). No checksum is asked for or checked: every byte read is hashed and
    checked against the signed checkpoint by the caller.
    """

    def __init__(self, client: Any, base: str, session: aiohttp.ClientSession) -> None:
        self._client = client
        self._base = base
        self._session = session
        self._region = client.meta.region_name or "us-east-1"

    async def _headers(self, url: str) -> dict[str, str]:
        creds = self._client._request_signer._credentials  # the client's own, refreshed as it refreshes them
        request = AWSRequest(method="GET", url=url)
        if creds is not None:  # anonymous (UNSIGNED) when the chain has none
            S3SigV4Auth(await creds.get_frozen_credentials(), "s3", self._region).add_auth(request)
        return dict(request.headers.items())

    async def get(self, key: str, max_bytes: int) -> bytes:
        """An object's bytes.

        Raises:
            NotFoundError: no such key.
            IntegrityError: larger than ``max_bytes``, or refused.
            SettingRefusedError: the bucket or the credentials are refused.
            TransientError: the server did not answer (after one retry).
        """
        url = self._base + quote(key, safe="/~")
        what = f"get {key}"
        for attempt in range(_BULK_ATTEMPTS):
            try:
                async with self._session.get(url, headers=await self._headers(url)) as r:
                    if r.status == 200:
                        if (r.content_length or 0) > max_bytes:
                            raise IntegrityError(f"s3: {key} is {r.content_length} bytes, limit {max_bytes}")
                        return await r.read()
                    found = _ERROR_CODE.search(await r.read())
                    err = _refusal(found[1].decode("ascii", "replace") if found else "", r.status, what, "HTTP")
            except (aiohttp.ClientError, TimeoutError) as e:
                err = TransientError(f"s3: {what}: {type(e).__name__}")
            if not isinstance(err, TransientError) or attempt + 1 == _BULK_ATTEMPTS:
                raise err
        raise AssertionError("unreachable")  # pragma: no cover


class _ViaBucket:
    """``Bucket.get`` behind the bulk reader's interface (a bucket that is not S3's: tests, the bench)."""

    def __init__(self, bucket: Any) -> None:
        self._bucket = bucket

    async def get(self, key: str, max_bytes: int) -> bytes:
        return bytes((await self._bucket.get(key, max_bytes))[0])


@asynccontextmanager
async def bulk_reader(bucket: Bucket) -> AsyncIterator[BulkReader | _ViaBucket]:
    """A :class:`BulkReader` for ``bucket``'s objects, made from its client's settings;
    any other bucket (an in-memory one) is read through its own ``get``."""
    if not isinstance(bucket, Bucket):
        yield _ViaBucket(bucket)
        return
    client = bucket._c
    probe = "kfm-probe"
    url = await client.generate_presigned_url("get_object", Params={"Bucket": bucket.name, "Key": probe})
    base = url.split("?", 1)[0].removesuffix(probe)
    verify = client._endpoint.http_session._verify  # True, False or a CA bundle's path, as botocore resolved it
    ssl_arg: ssl.SSLContext | bool = False
    if verify:
        ssl_arg = ssl.create_default_context(cafile=get_cert_path(verify))
    timeout = aiohttp.ClientTimeout(sock_connect=5, sock_read=60)
    connector = aiohttp.TCPConnector(limit=_POOL_CONNECTIONS, ssl=ssl_arg)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        yield BulkReader(client, base, session)
