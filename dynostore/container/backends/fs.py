"""A backend on a POSIX file system (local disks, Lustre, NFS mounts).

Layout under ``root``: ``chunks/ab/<key>.<index>`` (256 shards by key prefix)
and ``incoming/`` for chunks being written. A chunk is written to
``incoming/``, fsynced, and renamed into place, so a reader sees either the
old chunk or the whole new one, never part of one. Each worker process of a
container with several (``--workers``) writes into ``incoming/w<N>/`` of its
own, so that a worker starting again clears only its own leftovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import io
import logging
import mmap
import os
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from dynostore.container.backends.base import Backend, ChunkWriter, Usage
from dynostore.erasure import format as chunk_format
from dynostore.errors import NotFound

log = logging.getLogger(__name__)

# Fragments are buffered in memory up to this size, then written in one call,
# in a thread, while the next ones arrive (one write in flight per chunk).
_BUFFER_BYTES = 8 * 1024 * 1024
# writev takes at most IOV_MAX (1024 on Linux) buffers.
_MAX_PIECES = 512
# Reads verify and hand over this many payload bytes per thread call, one call ahead.
_READ_BATCH_BYTES = 4 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2
# O_DIRECT writes go in whole blocks of this size, from page-aligned memory, at most this much a call;
# a few such buffers are kept for the next chunks (memory touched once, not fresh pages each time).
_BLOCK = 4096
_DIRECT_BUFFER_BYTES = 8 * 1024 * 1024
_KEPT_BUFFERS = 4
# With several workers writing, a worker's own count misses the others' chunks: count again this often.
RECOUNT_SECONDS = 30.0


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2), to start writeback early; None elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name, use_errno=True).sync_file_range if name else None
    except (OSError, AttributeError):
        return None
    if fn is None:
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _direct_writes_work(directory: Path) -> bool:
    """Whether files in ``directory`` take O_DIRECT writes (tmpfs, for one, refuses them)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    probe = directory / f"direct-probe-{secrets.token_hex(4)}"
    buffer = mmap.mmap(-1, _BLOCK)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
        try:
            os.write(fd, buffer)
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        buffer.close()
        probe.unlink(missing_ok=True)
    return True


def _write_all(fd: int, pieces: Sequence[bytes | memoryview], offset: int) -> None:
    """Write ``pieces`` at the end of ``fd`` (partial writes resumed), then start their writeback."""
    total = sum(len(p) for p in pieces)
    written = os.writev(fd, pieces)
    if written < total:  # rare on files, but allowed
        rest = memoryview(b"".join(pieces))[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]
    if _sync_file_range is not None:
        # Let the disk start on these pages now, so that the fsync at commit has little left to do.
        _sync_file_range(fd, offset, total, _SYNC_FILE_RANGE_WRITE)


def _write_direct(fd: int, pieces: Sequence[bytes | memoryview], buffer: mmap.mmap, *, last: bool) -> bytes:
    """Write ``pieces`` to ``fd`` (opened with O_DIRECT) in whole blocks, through the page-aligned ``buffer``.

    Returns the bytes past the last whole block, to go first in the next
    call; with ``last`` they are written too, padded to a block (the caller
    then cuts the file to its length).
    """
    view = memoryview(buffer)
    try:
        filled = 0
        for piece in pieces:
            data = memoryview(piece).cast("B")
            while data:
                taken = min(len(data), len(buffer) - filled)
                view[filled : filled + taken] = data[:taken]
                filled, data = filled + taken, data[taken:]
                if filled == len(buffer):  # a multiple of the block
                    _write_blocks(fd, view[:filled])
                    filled = 0
        whole = filled - filled % _BLOCK
        if last and filled > whole:
            view[filled : whole + _BLOCK] = bytes(whole + _BLOCK - filled)
            whole += _BLOCK
        _write_blocks(fd, view[:whole])
        return b"" if last else bytes(view[whole:filled])
    finally:
        view.release()


def _write_blocks(fd: int, blocks: memoryview) -> None:
    done = 0
    while done < len(blocks):
        done += os.write(fd, blocks[done:])


class _FileWriter(ChunkWriter):
    """Writes ``incoming/<name>`` with raw system calls, in a thread, overlapping the receipt of the next bytes."""

    def __init__(self, backend: FileSystemBackend, temp: Path, final: Path) -> None:
        self._backend = backend
        self._temp = temp
        self._final = final
        self._fd: int | None = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._pending: list[bytes | memoryview] = [chunk_format.MAGIC]
        self._buffered = 0
        self._written = 0
        self._in_flight: asyncio.Future[None] | None = None
        # Large chunks bypass the page cache (see FileSystemBackend.direct): then the bytes past
        # the last whole block written wait for the next write, and the buffer is the backend's.
        self._buffer: mmap.mmap | None = None
        self._tail: bytes = b""

    async def write(self, data: bytes | memoryview, crc: int) -> None:
        assert self._fd is not None
        self._pending += (chunk_format.record_header(len(data), crc), data)
        self._buffered += len(data)
        if self._buffered >= _BUFFER_BYTES or len(self._pending) >= _MAX_PIECES:
            await self._flush()

    async def _flush(self) -> None:
        """Wait for the write in flight, then start writing what is buffered."""
        await self._settle()
        fd = self._fd
        assert fd is not None
        if not self._written and self._buffered >= _BUFFER_BYTES:
            self._buffer = self._backend.direct_buffer(fd)
        pieces, self._pending, self._buffered = self._pending, [], 0
        offset = self._written
        self._written += sum(len(p) for p in pieces)
        if self._buffer is not None:
            self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._write_through, fd, [self._tail, *pieces]))
        else:
            self._in_flight = asyncio.ensure_future(asyncio.to_thread(_write_all, fd, pieces, offset))

    def _write_through(self, fd: int, pieces: list[bytes | memoryview], *, last: bool = False) -> None:
        """Write past the page cache, keeping what is past the last whole block for the next call.

        Where the file system refuses these writes after all (EINVAL, though
        it took the probe's), the rest of the chunk, and every later one, goes
        through the page cache.
        """
        assert self._buffer is not None
        start = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            self._tail = _write_direct(fd, pieces, self._buffer, last=last)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            self._backend.refuse_direct(exc)
            self._release_buffer()
            done = os.lseek(fd, 0, os.SEEK_CUR) - start  # whole blocks that went before the refusal
            self._tail = b""
            _write_all(fd, [memoryview(b"".join(pieces))[done:]], start + done)

    async def _settle(self) -> None:
        """Wait for the write in flight; raise its error.

        A caller cancelled meanwhile leaves the write in flight (its thread
        runs on), for :meth:`abort` to wait for before it closes the file,
        gives back the buffer or removes the file.
        """
        if self._in_flight is not None:
            await asyncio.shield(self._in_flight)
            self._in_flight = None

    async def commit(self) -> None:
        await self._settle()
        self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._commit))
        await self._settle()

    def _commit(self) -> None:
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            if self._buffer is not None:
                self._write_through(fd, [self._tail, *self._pending], last=True)
                os.ftruncate(fd, self._written + sum(len(p) for p in self._pending))
            elif self._pending:
                _write_all(fd, self._pending, self._written)
            os.fsync(fd)
        finally:
            os.close(fd)
            self._release_buffer()
        self._backend.ensure_dir(self._final.parent)
        replaced = self._final.exists()
        os.replace(self._temp, self._final)
        _fsync_dir(self._final.parent)
        if not replaced:
            self._backend.count_chunks(+1)

    async def abort(self) -> None:
        if self._in_flight is not None:  # never close the file under a write
            with contextlib.suppress(Exception):
                await asyncio.shield(self._in_flight)
            self._in_flight = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._release_buffer()
        self._pending = []
        self._temp.unlink(missing_ok=True)

    def _release_buffer(self) -> None:
        if self._buffer is not None:
            buffer, self._buffer = self._buffer, None
            self._backend.return_buffer(buffer)


class _RecordReader:
    """Reads the records of one chunk file overlapping a payload range, a batch per call."""

    def __init__(self, f: io.FileIO, offset: int, length: int, name: str) -> None:
        self._records = chunk_format.read_records(f, offset, length, name=name)
        self.done = False

    def batch(self) -> list[tuple[int, bytes, int]]:
        """The next records (each CRC verified), up to about ``_READ_BATCH_BYTES``; [] at the end.

        Raises:
            DataLoss: the file is not a chunk, is truncated, or a CRC does not match.
        """
        found: list[tuple[int, bytes, int]] = []
        size = 0
        for record in self._records:
            found.append(record)
            size += len(record[1])
            if size >= _READ_BATCH_BYTES:
                return found
        self.done = True
        return found


class FileSystemBackend(Backend):
    """Chunks as files under one directory."""

    name = "fs"

    def __init__(self, root: str | os.PathLike[str], worker: int | None = None, *, direct_writes: bool = True) -> None:
        """Use (and create) ``root``; leftovers of interrupted writes are removed.

        ``worker``: this process's number among several sharing ``root``
        (None: the only one); it clears only its own leftovers, and the chunk
        count is taken again every ``RECOUNT_SECONDS``. ``direct_writes``:
        chunks whose first 8 MiB arrive at once are written with O_DIRECT,
        past the page cache, if the file system takes it (``direct`` says).
        """
        self.root = Path(root)
        self._chunks = self.root / "chunks"
        self._chunks.mkdir(parents=True, exist_ok=True)
        incoming = self.root / "incoming"
        self._incoming = incoming if worker is None else incoming / f"w{worker}"
        shutil.rmtree(self._incoming, ignore_errors=True)
        self._incoming.mkdir(parents=True, exist_ok=True)
        if worker == 0:  # leftovers of a single-process run before
            for entry in incoming.iterdir():
                if not entry.is_dir():
                    entry.unlink(missing_ok=True)
        self._known_dirs: set[Path] = set()
        self.direct = direct_writes and _direct_writes_work(self._incoming)
        self._buffers: list[mmap.mmap] = []
        self._chunk_count: int | None = None  # counted once, then kept up to date
        self._counted_at = 0.0
        self._shared = worker is not None
        self._count_lock = threading.Lock()

    def count_chunks(self, change: int) -> None:
        """Adjust the chunk count after a chunk appeared (+1) or went (-1)."""
        with self._count_lock:
            if self._chunk_count is not None:
                self._chunk_count += change

    def direct_buffer(self, fd: int) -> mmap.mmap | None:
        """Switch ``fd`` to O_DIRECT and lend a page-aligned buffer for its writes; None where that cannot be."""
        if not self.direct:
            return None
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        except OSError:
            return None
        try:
            return self._buffers.pop()
        except IndexError:
            return mmap.mmap(-1, _DIRECT_BUFFER_BYTES)

    def refuse_direct(self, exc: OSError) -> None:
        """O_DIRECT writes failed with ``exc`` (EINVAL): write through the page cache from now on."""
        if self.direct:
            self.direct = False
            log.warning(
                "O_DIRECT writes under %s failed (%s); chunks go through the page cache from now on.", self.root, exc
            )

    def return_buffer(self, buffer: mmap.mmap) -> None:
        """Take back a buffer lent by :meth:`direct_buffer`, keeping a few for the next writes."""
        if len(self._buffers) < _KEPT_BUFFERS:
            self._buffers.append(buffer)
        else:
            buffer.close()

    def _path(self, key: str, index: int) -> Path:
        return self._chunks / key[:2] / f"{key}.{index}"

    def ensure_dir(self, path: Path) -> None:
        """Create a shard directory once per process."""
        if path not in self._known_dirs:
            path.mkdir(parents=True, exist_ok=True)
            self._known_dirs.add(path)

    async def open_writer(self, key: str, index: int) -> ChunkWriter:
        temp = self._incoming / f"{key}.{index}.{secrets.token_hex(8)}"
        return _FileWriter(self, temp, self._path(key, index))

    async def read(
        self, key: str, index: int, offset: int = 0, length: int = 0
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        """Read and verify batches of records in a thread, one batch ahead of the caller."""
        path = self._path(key, index)
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below, across yields
        except FileNotFoundError:
            raise NotFound(f"Chunk {index} of {key} is not stored here.") from None
        reader = _RecordReader(f, offset, length, f"Chunk {index} of {key}")
        ahead: asyncio.Future[list[tuple[int, bytes, int]]] | None = None
        try:
            batch = await asyncio.to_thread(reader.batch)
            while batch:
                ahead = None if reader.done else asyncio.ensure_future(asyncio.to_thread(reader.batch))
                for record in batch:
                    yield record
                if ahead is None:
                    return
                batch, ahead = await ahead, None
        finally:
            if ahead is not None:  # the caller stopped early: let the thread finish with the file
                with contextlib.suppress(Exception):
                    await asyncio.shield(ahead)
            f.close()

    async def exists(self, key: str, index: int) -> bool:
        return self._path(key, index).exists()

    async def delete(self, key: str, index: int) -> bool:
        try:
            self._path(key, index).unlink()
            self.count_chunks(-1)
        except FileNotFoundError:
            return False
        return True

    async def list_chunks(self) -> AsyncIterator[tuple[str, int]]:
        shards = sorted(await asyncio.to_thread(os.listdir, self._chunks))
        for shard in shards:
            try:
                names = await asyncio.to_thread(os.listdir, self._chunks / shard)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                key, _, index = name.rpartition(".")
                if key and index.isdigit():
                    yield key, int(index)

    async def usage(self) -> Usage:
        disk = shutil.disk_usage(self.root)
        stale = self._shared and time.monotonic() - self._counted_at > RECOUNT_SECONDS
        if self._chunk_count is None or stale:  # one scan per process; heartbeats then cost nothing
            counted = await asyncio.to_thread(lambda: sum(1 for _ in self._chunks.glob("*/*")))
            with self._count_lock:
                if self._chunk_count is None or stale:
                    self._chunk_count, self._counted_at = counted, time.monotonic()
        return Usage(disk.total, disk.free, self._chunk_count)
