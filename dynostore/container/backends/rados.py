"""A backend on a Ceph RADOS pool through python-rados (Debian's ``python3-rados``).

A chunk is its record stream (``MAGIC`` + records of
``dynostore.erasure.format``) cut into RADOS objects of ``object_size`` bytes,
``<key>.<index>.<tag>.<n>``, plus a small head object ``<key>.<index>``
written last. ``tag`` is random per write, so a rewrite never touches the
objects of the chunk it replaces. The head is::

    DYNRHD01 | stream bytes (u64) | object size (u32) | tag (16 ASCII) | count (u32) | index | CRC-32 (u32)

where ``index`` holds each fragment's length (u32, big-endian, see
``layout.py``) and the CRC covers everything before it. Parts are written in
parallel while the next one fills; the head goes last with one ``write_full``
(atomic in RADOS), so a chunk is visible whole or not at all. A read fetches
the head, then only the byte range of the fragments it needs, part by part.
Parts of a write that failed are removed; parts of a container that crashed
mid-write stay as unreferenced objects until a garbage collector exists.

python-rados is not on PyPI. Debian builds it for its own Python 3.11; the
same extension loads in any CPython 3.11, so when ``import rados`` fails this
module loads just that file from ``/usr/lib/python3/dist-packages`` (override
with ``$DYNOSTORE_RADOS_PATH``), without adding Debian's other packages to the
path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.machinery
import importlib.util
import logging
import os
import secrets
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from dynostore.container.backends.base import Backend, ChunkWriter, RemoteChunkWriter, Usage
from dynostore.container.backends.layout import BlockReader, FragmentIndex
from dynostore.erasure import format as chunk_format
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss, InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
MiB = 1024 * 1024
DEBIAN_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
_HEAD = struct.Struct(">8sQI16sI")
_HEAD_MAGIC = b"DYNRHD01"
_CRC = struct.Struct(">I")
# Bytes read first from a head object: enough for chunks of up to ~16k fragments.
_HEAD_READ = 64 * 1024
_PARTS_IN_FLIGHT = 4
# Part reads in flight ahead of the one being sent.
_READS_AHEAD = 4
_USAGE_REFRESH = 60.0


def load_rados() -> ModuleType:
    """The ``rados`` module: importable as is, else Debian's extension loaded by path.

    Raises:
        ImportError: neither works.
    """
    with contextlib.suppress(ImportError):
        import rados

        return rados
    directory = Path(os.environ.get("DYNOSTORE_RADOS_PATH", DEBIAN_DIST_PACKAGES))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = directory / f"rados{suffix}"
        if path.exists():
            spec = importlib.util.spec_from_file_location("rados", path)
            if spec is None or spec.loader is None:
                break
            module = importlib.util.module_from_spec(spec)
            sys.modules["rados"] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules["rados"]
                raise
            return module
    raise ImportError(
        f"No module named 'rados' and no rados extension for Python {sys.version_info.major}."
        f"{sys.version_info.minor} in {directory}; install python3-rados (Debian) for the same Python minor version."
    )


rados = load_rados()


def _tag() -> str:
    return secrets.token_hex(8)


class _Head:
    """The decoded head object of a chunk."""

    def __init__(self, stream_bytes: int, object_size: int, tag: str, index: FragmentIndex) -> None:
        self.stream_bytes = stream_bytes
        self.object_size = object_size
        self.tag = tag
        self.index = index

    def encode(self) -> bytes:
        body = (
            _HEAD.pack(_HEAD_MAGIC, self.stream_bytes, self.object_size, self.tag.encode(), len(self.index.lengths))
            + self.index.encode()
        )
        return body + _CRC.pack(checksum(body))

    @property
    def parts(self) -> int:
        return -(-self.stream_bytes // self.object_size)

    @staticmethod
    def needed(raw: bytes) -> int:
        """Total head size, from its first bytes."""
        if len(raw) < _HEAD.size:
            return _HEAD.size + _CRC.size
        count = _HEAD.unpack_from(raw)[4]
        return _HEAD.size + 4 * count + _CRC.size

    @classmethod
    def decode(cls, raw: bytes, name: str) -> _Head:
        if len(raw) < _HEAD.size + _CRC.size or raw[:8] != _HEAD_MAGIC:
            raise DataLoss(f"{name} has a damaged head object.")
        _, stream_bytes, object_size, tag, count = _HEAD.unpack_from(raw)
        end = _HEAD.size + 4 * count
        if len(raw) < end + _CRC.size or _CRC.unpack_from(raw, end)[0] != checksum(raw[:end]):
            raise DataLoss(f"{name} has a damaged head object.")
        index = FragmentIndex.decode(raw[_HEAD.size : end], name=name)
        if object_size <= 0 or index.stream_bytes != stream_bytes:
            raise DataLoss(f"{name} has an inconsistent head object.")
        return cls(stream_bytes, object_size, tag.decode(), index)


class _RadosWriter(RemoteChunkWriter):
    """Cuts the record stream into parts, writes them in parallel, then the head."""

    def __init__(self, backend: RadosBackend, head: str) -> None:
        self._backend = backend
        self._head = head
        self._tag = _tag()
        # Pieces of the next part (views of the received fragments), joined once when it is sent.
        self._pieces: list[bytes | memoryview] = [chunk_format.MAGIC]
        self._buffered = len(chunk_format.MAGIC)
        self._index = FragmentIndex()
        self._parts: list[asyncio.Task[None]] = []
        self._stream_bytes = 0
        self._done = False

    def _part(self, n: int) -> str:
        return f"{self._head}.{self._tag}.{n}"

    def _take(self, size: int) -> bytes:
        """Join the first ``size`` buffered bytes into one part (one copy)."""
        taken: list[bytes | memoryview] = []
        needed = size
        while needed:
            piece = self._pieces.pop(0)
            if len(piece) > needed:
                view = memoryview(piece)
                taken.append(view[:needed])
                self._pieces.insert(0, view[needed:])
                needed = 0
            else:
                taken.append(piece)
                needed -= len(piece)
        self._buffered -= size
        return b"".join(taken)

    async def write(self, data: bytes | memoryview, crc: int) -> None:
        self._pieces += (chunk_format.record_header(len(data), crc), data)
        self._buffered += chunk_format.RECORD_HEADER_BYTES + len(data)
        self._index.lengths.append(len(data))
        size = self._backend.object_size
        while self._buffered >= size:
            await self._send(self._take(size))

    async def _send(self, body: bytes) -> None:
        busy = [task for task in self._parts if not task.done()]
        if len(busy) >= _PARTS_IN_FLIGHT:
            await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
        for task in self._parts:
            if task.done():
                task.result()  # raise the first failure now
        name = self._part(len(self._parts))
        self._stream_bytes += len(body)
        self._parts.append(asyncio.create_task(self._backend.call("write_full", name, body)))

    async def _commit(self) -> None:
        if self._buffered:
            await self._send(self._take(self._buffered))
        await asyncio.gather(*self._parts)
        head = _Head(self._stream_bytes, self._backend.object_size, self._tag, self._index)
        try:
            old = await self._backend.read_head(self._head, "old chunk", missing_ok=True)
        except DataLoss:
            old = None  # a damaged head is replaced; its parts, unknown, stay behind
        await self._backend.call("write_full", self._head, head.encode())
        self._done = True
        self._backend.count_commit(replaced=old is not None)
        if old is not None and old.tag != self._tag:
            await self._backend.remove_parts(self._head, old)

    async def _discard(self) -> None:
        if self._done:
            return
        self._done = True
        self._pieces, self._buffered = [], 0
        # Let part writes in flight land (their threads cannot be stopped), then remove them all.
        await asyncio.gather(*self._parts, return_exceptions=True)
        await self._backend.remove_objects([self._part(n) for n in range(len(self._parts))])


class RadosBackend(Backend):
    """Chunks as RADOS objects in one pool (and namespace)."""

    name = "rados"

    def __init__(
        self,
        pool: str,
        *,
        ceph_conf: Path | None = None,
        namespace: str = "",
        object_size: int = 4 * MiB,
        capacity_bytes: int | None = None,
        threads: int = 16,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        """Describe the pool; :meth:`check` connects.

        Args:
            pool: the pool (it must exist).
            ceph_conf: the cluster's ceph.conf; None for librados' search
                (``$CEPH_CONF``, ``/etc/ceph/ceph.conf``...).
            namespace: RADOS namespace of this container's objects.
            object_size: bytes per part object (64 KiB to 64 MiB).
            capacity_bytes: capacity to report; None for the cluster's.
            threads: RADOS calls in flight at once.
            timeout: seconds before a monitor or osd operation fails.
            connect_timeout: seconds to reach the monitors at start.

        Raises:
            InvalidArgument: ``object_size`` is out of range.
        """
        if not 64 * 1024 <= object_size <= 64 * MiB:
            raise InvalidArgument(f"rados_object_size must be between 64 KiB and 64 MiB, not {object_size}.")
        self.pool = pool
        self.ceph_conf = ceph_conf
        self.namespace = namespace
        self.object_size = object_size
        self.capacity_bytes = capacity_bytes
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rados")
        self._cluster: Any = None
        self._ioctx: Any = None
        self._chunks = 0
        self._listed_at: float | None = None

    # plumbing -----------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in the backend's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    async def call(self, operation: str, *args: Any) -> Any:
        """Run an ``Ioctx`` operation in a thread.

        Raises:
            NotFound: the object does not exist.
            Unavailable: RADOS failed or timed out.
        """
        if self._ioctx is None:
            raise Unavailable("The RADOS backend is not connected.")
        try:
            return await self.run(getattr(self._ioctx, operation), *args)
        except rados.ObjectNotFound:
            raise NotFound(f"{args[0] if args else self.pool} is not in pool {self.pool!r}.") from None
        except rados.Error as exc:
            raise Unavailable(f"RADOS {operation} in pool {self.pool!r} failed: {exc}") from None

    async def read_head(self, head: str, name: str, *, missing_ok: bool = False) -> _Head | None:
        """The decoded head object ``head``, or None when missing and ``missing_ok``.

        Raises:
            NotFound: there is no head and ``missing_ok`` is false.
            DataLoss: the head is damaged.
        """
        try:
            raw = bytes(await self.call("read", head, _HEAD_READ, 0))
            needed = _Head.needed(raw)
            if needed > len(raw) and len(raw) == _HEAD_READ:
                raw += bytes(await self.call("read", head, needed - len(raw), len(raw)))
        except NotFound:
            if missing_ok:
                return None
            raise NotFound(f"{name} is not stored here.") from None
        return _Head.decode(raw, name)

    async def remove_parts(self, head: str, old: _Head) -> None:
        """Remove the part objects of a replaced or deleted chunk (best effort)."""
        await self.remove_objects([f"{head}.{old.tag}.{n}" for n in range(old.parts)])

    async def remove_objects(self, names: list[str]) -> None:
        """Remove objects in parallel; missing ones are fine, failures are logged."""
        results = await asyncio.gather(*(self.call("remove_object", n) for n in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, Unavailable):
                log.warning("Could not remove %s: %s", name, result)
            elif isinstance(result, BaseException) and not isinstance(result, NotFound):
                raise result

    def count_commit(self, *, replaced: bool) -> None:
        """Account a committed chunk (until the next listing)."""
        if not replaced:
            self._chunks += 1

    @staticmethod
    def _head(key: str, index: int) -> str:
        return f"{key}.{index}"

    # life cycle -----------------------------------------------------------------

    def _connect(self) -> None:
        timeout, connect_timeout = str(int(self._timeout)), int(self._connect_timeout)
        cluster = rados.Rados(
            conffile=str(self.ceph_conf) if self.ceph_conf else "",
            conf={
                "rados_osd_op_timeout": timeout,
                "rados_mon_op_timeout": timeout,
                "client_mount_timeout": str(connect_timeout),
            },
        )
        try:
            cluster.connect(timeout=connect_timeout)
            ioctx = cluster.open_ioctx(self.pool)
        except BaseException:
            cluster.shutdown()
            raise
        ioctx.set_namespace(self.namespace)
        self._cluster, self._ioctx = cluster, ioctx

    async def check(self) -> None:
        """Connect to the cluster and open the pool.

        Raises:
            Unavailable: the cluster or the pool cannot be reached with these settings.
        """
        conf = self.ceph_conf or "librados' default search ($CEPH_CONF, /etc/ceph/ceph.conf)"
        try:
            await self.run(self._connect)
        except rados.ObjectNotFound:
            raise Unavailable(
                f"Ceph pool {self.pool!r} does not exist in the cluster of {conf} (setting rados_pool)."
            ) from None
        except (rados.Error, OSError) as exc:
            raise Unavailable(
                f"Cannot reach the Ceph cluster of {conf} (settings ceph_conf / rados_pool): {exc}"
            ) from None

    async def close(self) -> None:
        ioctx, cluster, self._ioctx, self._cluster = self._ioctx, self._cluster, None, None
        if ioctx is not None:
            await self.run(ioctx.close)
        if cluster is not None:
            await self.run(cluster.shutdown)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # Backend ----------------------------------------------------------------------

    async def open_writer(self, key: str, index: int) -> ChunkWriter:
        return _RadosWriter(self, self._head(key, index))

    async def read(
        self, key: str, index: int, offset: int = 0, length: int = 0
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        name = f"Chunk {index} of {key}"
        head_name = self._head(key, index)
        head = await self.read_head(head_name, name)
        assert head is not None
        first, count, payload_offset, start = head.index.span(offset, length)
        if count == 0:
            return
        stop = start + head.index.stream_length(first, count)
        if first == 0:
            start = 0  # include MAGIC, checked below
        pending: list[asyncio.Task[bytes]] = []
        reader = BlockReader(self._blocks(head_name, head, start, stop, name, pending), name)
        try:
            if first == 0 and await reader.read_exactly(len(chunk_format.MAGIC)) != chunk_format.MAGIC:
                raise DataLoss(f"{name} is not a DynoStore chunk (bad magic or version).")
            async for record in reader.records(payload_offset, count):
                yield record
        finally:
            for task in pending:  # a reader that stops early leaves a read-ahead behind
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _blocks(
        self, head_name: str, head: _Head, start: int, stop: int, name: str, pending: list[asyncio.Task[bytes]]
    ) -> Callable[[], Awaitable[bytes]]:
        """A block source over stream bytes ``[start, stop)``, reading one part ahead into ``pending``."""
        pieces = []
        position = start
        while position < stop:
            n, within = divmod(position, head.object_size)
            size = min(head.object_size - within, stop - position)
            pieces.append((f"{head_name}.{head.tag}.{n}", within, size))
            position += size

        async def fetch(obj: str, within: int, size: int) -> bytes:
            try:
                data = bytes(await self.call("read", obj, size, within))
            except NotFound:
                raise Unavailable(f"{name} was replaced or deleted while it was read.") from None
            if len(data) != size:
                raise DataLoss(f"{name} is truncated.")
            return data

        async def next_block() -> bytes:
            while len(pending) < _READS_AHEAD and pieces:
                pending.append(asyncio.create_task(fetch(*pieces.pop(0))))
            if not pending:
                return b""
            return await pending.pop(0)

        return next_block

    async def delete(self, key: str, index: int) -> bool:
        head_name = self._head(key, index)
        try:
            head = await self.read_head(head_name, head_name, missing_ok=True)
        except DataLoss:
            head = None
        try:
            await self.call("remove_object", head_name)
        except NotFound:
            return False
        if head is not None:
            await self.remove_parts(head_name, head)
        self._chunks = max(self._chunks - 1, 0)
        return True

    async def list_chunks(self) -> AsyncIterator[tuple[str, int]]:
        if self._ioctx is None:
            raise Unavailable("The RADOS backend is not connected.")
        objects = self._ioctx.list_objects()

        def batch() -> list[str]:
            return [obj.key for _, obj in zip(range(1000), objects, strict=False)]

        while True:
            try:
                names = await self.run(batch)
            except rados.Error as exc:
                raise Unavailable(f"Listing pool {self.pool!r} failed: {exc}") from None
            if not names:
                return
            for name in names:
                key, dot, index = name.partition(".")
                if dot and index.isdigit():  # heads only: parts have more dots
                    yield key, int(index)

    async def usage(self) -> Usage:
        now = time.monotonic()
        if self._listed_at is None or now - self._listed_at > _USAGE_REFRESH:
            self._chunks = await self.run(self._count_heads)
            self._listed_at = now
        if self._cluster is None:
            raise Unavailable("The RADOS backend is not connected.")
        try:
            stats = await self.run(self._cluster.get_cluster_stats)
            pool = await self.run(self._ioctx.get_stats)
        except rados.Error as exc:
            raise Unavailable(f"Cannot read the usage of pool {self.pool!r}: {exc}") from None
        # Without a ceph-mgr the cluster reports no space figures (0): then only capacity_bytes counts.
        total, available = int(stats["kb"]) * 1024, int(stats["kb_avail"]) * 1024
        capacity = self.capacity_bytes or total
        free = capacity - int(pool["num_bytes"])
        if total:
            free = min(free, available)
        return Usage(capacity, max(free, 0), self._chunks)

    def _count_heads(self) -> int:
        try:
            return sum(1 for obj in self._ioctx.list_objects() if obj.key.count(".") == 1)
        except rados.Error as exc:
            raise Unavailable(f"Listing pool {self.pool!r} failed: {exc}") from None
