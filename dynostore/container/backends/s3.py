"""A backend on an S3 bucket (AWS, Ceph RGW, MinIO, moto...) through boto3.

Each chunk is one object, ``<prefix>chunks/<key[:2]>/<key>.<index>``, whose
bytes are::

    MAGIC | records | END | index | FOOTER

``MAGIC`` and the records are the chunk format of ``dynostore.erasure.format``;
``END`` is a record header with length ``0xFFFFFFFF`` and the fragment count;
``index`` holds each fragment's length (u32, big-endian); ``FOOTER`` is 16
bytes: CRC-32 of ``index`` (u32), fragment count (u32), ``DYNIDX01``.

A whole-chunk read is one streaming GET parsed up to ``END``. A read at an
offset first GETs the object's tail (footer and index), then one ranged GET of
just the records it needs, pinned to the same object version with
``If-Match``. A chunk is written with one PUT when small, else as a multipart
upload with parts of ``part_size`` bytes (at least 5 MiB) uploaded while the
next part fills, so at most a few parts are held in memory. Both become
visible atomically when they complete; a failed write aborts the upload.

boto3 blocks, so every call runs in the backend's own thread pool and the
container's event loop stays responsive. S3 has no notion of capacity: usage
reports the configured capacity minus the bytes of the chunks under the prefix.
A container owns its prefix: on start it aborts multipart uploads left there by
an earlier run that crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dynostore.container.backends.base import Backend, ChunkWriter, RemoteChunkWriter, Usage
from dynostore.container.backends.layout import BlockReader, FragmentIndex, ReadAhead, end_marker
from dynostore.erasure import format as chunk_format
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss, InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
MiB = 1024 * 1024
MIN_PART_BYTES = 5 * MiB
_FOOTER = struct.Struct(">II8s")
_FOOTER_MAGIC = b"DYNIDX01"
# Bytes fetched from the end of an object to find the footer and (usually) the whole index.
_TAIL_BYTES = 64 * 1024
_READ_BLOCK = 4 * MiB
# Parts of one chunk uploaded at the same time.
_PARTS_IN_FLIGHT = 3
# Seconds between listings of the bucket for usage(); commits and deletes adjust it in between.
_USAGE_REFRESH = 60.0
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}


class _ChangedError(Exception):
    """The object was replaced between two ranged reads."""


class _S3Writer(RemoteChunkWriter):
    """Buffers records into parts; uploads each full part while the next one fills."""

    def __init__(self, backend: S3Backend, name: str, *, replacing: bool = False) -> None:
        self._backend = backend
        self._name = name
        # Whether a copy may be stored already (then its bytes are counted out at commit).
        self._replacing = replacing
        # Pieces of the next part, joined (one copy) when it is sent.
        self._pieces: list[bytes | memoryview] = [chunk_format.MAGIC]
        self._buffered = len(chunk_format.MAGIC)
        self._index = FragmentIndex()
        self._upload_id: str | None = None
        self._parts: list[asyncio.Task[dict[str, Any]]] = []
        self._size = 0
        self._closed = False

    def _take(self) -> bytes:
        body = b"".join(self._pieces)
        self._pieces, self._buffered = [], 0
        return body

    async def write(self, data: bytes | memoryview, crc: int) -> None:
        self._pieces += (chunk_format.record_header(len(data), crc), data)
        self._buffered += chunk_format.RECORD_HEADER_BYTES + len(data)
        self._index.lengths.append(len(data))
        if self._buffered >= self._backend.part_size:
            await self._send_part()

    async def _send_part(self) -> None:
        backend = self._backend
        if self._upload_id is None:
            reply = await backend.call("create_multipart_upload", Key=self._name)
            self._upload_id = str(reply["UploadId"])
        busy = [task for task in self._parts if not task.done()]
        if len(busy) >= _PARTS_IN_FLIGHT:
            await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
        for task in self._parts:
            if task.done():
                task.result()  # raise the first failure now, not at commit
        body = self._take()
        self._size += len(body)
        number = len(self._parts) + 1
        self._parts.append(asyncio.create_task(self._upload_part(number, body)))

    async def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        reply = await self._backend.call(
            "upload_part", Key=self._name, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        return {"ETag": reply["ETag"], "PartNumber": number}

    async def _commit(self) -> None:
        replaced = await self._backend.stored_size(self._name) if self._replacing else None
        index = self._index.encode()
        count = len(self._index.lengths)
        self._pieces += (end_marker(count), index, _FOOTER.pack(checksum(index), count, _FOOTER_MAGIC))
        if self._upload_id is None:
            body = self._take()
            await self._backend.call("put_object", Key=self._name, Body=body)
            size = len(body)
        else:
            await self._send_part()
            parts = await asyncio.gather(*self._parts)
            await self._backend.call(
                "complete_multipart_upload",
                Key=self._name,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
            size = self._size
        self._closed = True
        self._backend.count_commit(size, replaced)

    async def _discard(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pieces, self._buffered = [], 0
        # Let part uploads in flight finish (their threads cannot be stopped), then abort.
        await asyncio.gather(*self._parts, return_exceptions=True)
        if self._upload_id is not None:
            try:
                await self._backend.call("abort_multipart_upload", Key=self._name, UploadId=self._upload_id)
            except (Unavailable, NotFound) as exc:
                # The upload stays invisible; a restart of the container aborts it.
                log.warning("Could not abort the upload of %s: %s", self._name, exc)


class S3Backend(Backend):
    """Chunks as objects in one S3 bucket, under a prefix."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        prefix: str = "",
        access_key: str | None = None,
        secret_key: str | None = None,
        capacity_bytes: int = 1 << 40,
        part_size: int = 8 * MiB,
        threads: int = 16,
        timeout: float = 30.0,
    ) -> None:
        """Describe the bucket; :meth:`check` connects.

        Args:
            bucket: bucket name (it must exist).
            endpoint: endpoint URL, e.g. ``http://rgw.site:7480``; None for AWS.
            region: region name; None for boto3's default.
            prefix: object-name prefix of this container's chunks.
            access_key: access key id; None for boto3's default credential chain
                (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``~/.aws``...).
            secret_key: secret access key, with ``access_key``.
            capacity_bytes: the capacity to report (S3 has none).
            part_size: multipart part size in bytes (at least 5 MiB).
            threads: boto3 calls in flight at once.
            timeout: seconds to connect and to wait for each reply.

        Raises:
            InvalidArgument: ``part_size`` is below 5 MiB or the keys are given by halves.
        """
        if part_size < MIN_PART_BYTES:
            raise InvalidArgument(f"The S3 part size must be at least 5 MiB, not {part_size} bytes.")
        if (access_key is None) != (secret_key is None):
            raise InvalidArgument("Give both the S3 access key and the secret key, or neither.")
        self.bucket = bucket
        self.endpoint = endpoint
        self.prefix = prefix
        self._chunk_prefix = f"{prefix}chunks/"
        self.part_size = part_size
        self.capacity_bytes = capacity_bytes
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3")
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                max_pool_connections=threads,
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        self._used_bytes = 0
        self._chunks = 0
        self._listed_at: float | None = None

    # plumbing ---------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call in the backend's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """Run an S3 client operation on the bucket in a thread.

        Raises:
            NotFound: the object does not exist.
            Unavailable: S3 failed or could not be reached.
        """
        try:
            reply: dict[str, Any] = await self.run(getattr(self._client, operation), Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise NotFound(f"{kwargs.get('Key', self.bucket)} is not in S3 bucket {self.bucket!r}.") from None
            if code in ("PreconditionFailed", "412"):
                raise _ChangedError from None
            raise Unavailable(f"S3 {operation} on bucket {self.bucket!r} failed: {exc}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"S3 {operation} on bucket {self.bucket!r} failed: {exc}") from None
        return reply

    def _object(self, key: str, index: int) -> str:
        return f"{self._chunk_prefix}{key[:2]}/{key}.{index}"

    def _pages(self) -> Iterator[dict[str, Any]]:
        """Pages of the listing of this container's chunks (each ``next`` is a request)."""
        paginator = self._client.get_paginator("list_objects_v2")
        return iter(paginator.paginate(Bucket=self.bucket, Prefix=self._chunk_prefix))

    def count_commit(self, size: int, replaced: int | None = None) -> None:
        """Account a committed chunk of ``size`` bytes that replaced one of ``replaced`` bytes, if any.

        The figures hold until the next listing.
        """
        self._used_bytes = max(self._used_bytes + size - (replaced or 0), 0)
        if replaced is None:
            self._chunks += 1

    async def stored_size(self, name: str) -> int | None:
        """Bytes of object ``name`` in the bucket; None when it is not there."""
        try:
            head = await self.call("head_object", Key=name)
        except NotFound:
            return None
        return int(head.get("ContentLength", 0))

    # life cycle ---------------------------------------------------------------

    async def check(self) -> None:
        """Reach the bucket, then abort multipart uploads an earlier run left behind.

        Raises:
            Unavailable: the bucket cannot be reached with these settings.
        """
        where = self.endpoint or "the AWS default endpoint"
        try:
            await self.call("head_bucket")
        except (Unavailable, NotFound) as exc:
            raise Unavailable(
                f"Cannot reach S3 bucket {self.bucket!r} at {where} "
                f"(settings s3_bucket / s3_endpoint / s3_region / S3 credentials): {exc}"
            ) from None
        try:
            uploads = await self.call("list_multipart_uploads", Prefix=self._chunk_prefix)
        except (Unavailable, NotFound) as exc:  # e.g. not allowed to list uploads: not fatal
            log.warning("Cannot list unfinished uploads in bucket %r: %s", self.bucket, exc)
            return
        for upload in uploads.get("Uploads", []):
            with contextlib.suppress(Unavailable, NotFound):
                await self.call("abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"])

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # Backend ----------------------------------------------------------------

    async def open_writer(self, key: str, index: int) -> ChunkWriter:
        return _S3Writer(self, self._object(key, index))

    async def open_replacement(self, key: str, index: int) -> ChunkWriter:
        return _S3Writer(self, self._object(key, index), replacing=True)

    async def read(
        self, key: str, index: int, offset: int = 0, length: int = 0
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        name = f"Chunk {index} of {key}"
        try:
            if offset == 0 and length == 0:
                async for record in self._read_whole(key, index, name):
                    yield record
                return
            for attempt in range(3):
                try:
                    plan = await self._plan_range(key, index, offset, length, name)
                    break
                except _ChangedError:
                    if attempt == 2:
                        raise Unavailable(f"{name} keeps changing while it is read.") from None
            async for record in self._read_range(key, index, name, *plan):
                yield record
        except NotFound:
            raise NotFound(f"{name} is not stored here.") from None

    async def _read_whole(self, key: str, index: int, name: str) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        reply = await self.call("get_object", Key=self._object(key, index))
        body = reply["Body"]
        blocks = ReadAhead(functools.partial(self._read_body, body))
        try:
            reader = BlockReader(blocks, name)
            if await reader.read_exactly(len(chunk_format.MAGIC)) != chunk_format.MAGIC:
                raise DataLoss(f"{name} is not a DynoStore chunk (bad magic or version).")
            async for record in reader.records(0, None):
                yield record
        finally:
            await blocks.aclose()
            body.close()

    async def _read_body(self, body: Any) -> bytes:
        try:
            return bytes(await self.run(body.read, _READ_BLOCK))
        except (BotoCoreError, OSError) as exc:
            raise Unavailable(f"Reading from S3 bucket {self.bucket!r} failed: {exc}") from None

    async def _plan_range(
        self, key: str, index: int, offset: int, length: int, name: str
    ) -> tuple[str, int, int, int, int]:
        """Find the records of a payload range: ``(etag, payload_offset, count, start, stop)``."""
        obj = self._object(key, index)
        reply = await self.call("get_object", Key=obj, Range=f"bytes=-{_TAIL_BYTES}")
        etag = str(reply["ETag"])
        tail = await self.run(reply["Body"].read)
        total = int(str(reply.get("ContentRange", f"/{len(tail)}")).rsplit("/", 1)[1])
        if len(tail) < _FOOTER.size:
            raise DataLoss(f"{name} is truncated.")
        index_crc, count, magic = _FOOTER.unpack(tail[-_FOOTER.size :])
        if magic != _FOOTER_MAGIC:
            raise DataLoss(f"{name} has no fragment index (bad footer).")
        index_bytes = 4 * count
        if index_bytes + _FOOTER.size <= len(tail):
            raw = tail[-_FOOTER.size - index_bytes : -_FOOTER.size]
        else:
            start = total - _FOOTER.size - index_bytes
            part = await self.call(
                "get_object", Key=obj, Range=f"bytes={start}-{total - _FOOTER.size - 1}", IfMatch=etag
            )
            raw = await self.run(part["Body"].read)
        if checksum(raw) != index_crc:
            raise DataLoss(f"{name} has a damaged fragment index.")
        fragments = FragmentIndex.decode(raw, name=name)
        first, n, payload_offset, start = fragments.span(offset, length)
        return etag, payload_offset, n, start, start + fragments.stream_length(first, n)

    async def _read_range(
        self, key: str, index: int, name: str, etag: str, payload_offset: int, count: int, start: int, stop: int
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        if count == 0:
            return
        try:
            reply = await self.call(
                "get_object", Key=self._object(key, index), Range=f"bytes={start}-{stop - 1}", IfMatch=etag
            )
        except _ChangedError:
            raise Unavailable(f"{name} was replaced while it was read; read it again.") from None
        body = reply["Body"]
        blocks = ReadAhead(functools.partial(self._read_body, body))
        try:
            reader = BlockReader(blocks, name)
            async for record in reader.records(payload_offset, count):
                yield record
        finally:
            await blocks.aclose()
            body.close()

    async def delete(self, key: str, index: int) -> bool:
        obj = self._object(key, index)
        size = await self.stored_size(obj)
        if size is None:
            return False
        await self.call("delete_object", Key=obj)
        self._used_bytes = max(self._used_bytes - size, 0)
        self._chunks = max(self._chunks - 1, 0)
        return True

    async def list_chunks(self) -> AsyncIterator[tuple[str, int]]:
        pages = self._pages()
        while True:
            try:
                page = await self.run(next, pages, None)
            except (BotoCoreError, ClientError) as exc:
                raise Unavailable(f"Listing S3 bucket {self.bucket!r} failed: {exc}") from None
            if page is None:
                return
            for item in page.get("Contents", []):
                key, _, index = str(item["Key"]).rsplit("/", 1)[-1].rpartition(".")
                if key and index.isdigit():
                    yield key, int(index)

    async def usage(self) -> Usage:
        now = time.monotonic()
        if self._listed_at is None or now - self._listed_at > _USAGE_REFRESH:
            self._used_bytes, self._chunks = await self.run(self._list_usage)
            self._listed_at = now
        return Usage(self.capacity_bytes, max(self.capacity_bytes - self._used_bytes, 0), self._chunks)

    def _list_usage(self) -> tuple[int, int]:
        used = chunks = 0
        try:
            for page in self._pages():
                for item in page.get("Contents", []):
                    used += int(item["Size"])
                    chunks += 1
        except (BotoCoreError, ClientError) as exc:
            raise Unavailable(f"Listing S3 bucket {self.bucket!r} failed: {exc}") from None
        return used, chunks
