"""A backend on a POSIX file system (local disks, Lustre, NFS mounts).

Layout under ``root``: ``chunks/ab/<key>.<index>`` (256 shards by key prefix)
and ``incoming/`` for chunks being written. A chunk is written to
``incoming/``, fsynced, and renamed into place, so a reader sees either the
old chunk or the whole new one, never part of one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from dynostore.container.backends.base import Backend, ChunkWriter, Usage
from dynostore.erasure import format as chunk_format
from dynostore.errors import NotFound

# Fragments are buffered in memory up to this size, then written in one call.
_BUFFER_BYTES = 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter(ChunkWriter):
    """Writes ``incoming/<name>`` with raw system calls (they are costly in sandboxes)."""

    def __init__(self, backend: FileSystemBackend, temp: Path, final: Path) -> None:
        self._backend = backend
        self._temp = temp
        self._final = final
        self._fd: int | None = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._pending: list[bytes | memoryview] = [chunk_format.MAGIC]
        self._size = 0

    async def write(self, data: bytes | memoryview, crc: int) -> None:
        assert self._fd is not None
        self._pending += (chunk_format.record_header(len(data), crc), data)
        self._size += len(data)
        if self._size >= _BUFFER_BYTES:
            os.writev(self._fd, self._pending)
            self._pending = []

    async def commit(self) -> None:
        await asyncio.to_thread(self._commit)

    def _commit(self) -> None:
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            if self._pending:
                os.writev(fd, self._pending)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._backend.ensure_dir(self._final.parent)
        replaced = self._final.exists()
        os.replace(self._temp, self._final)
        _fsync_dir(self._final.parent)
        if not replaced:
            self._backend.count_chunks(+1)

    async def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._temp.unlink(missing_ok=True)


class FileSystemBackend(Backend):
    """Chunks as files under one directory."""

    name = "fs"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Use (and create) ``root``; leftovers of interrupted writes are removed."""
        self.root = Path(root)
        self._chunks = self.root / "chunks"
        self._incoming = self.root / "incoming"
        self._chunks.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._incoming, ignore_errors=True)
        self._incoming.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()
        self._chunk_count: int | None = None  # counted once, then kept up to date
        self._count_lock = threading.Lock()

    def count_chunks(self, change: int) -> None:
        """Adjust the chunk count after a chunk appeared (+1) or went (-1)."""
        with self._count_lock:
            if self._chunk_count is not None:
                self._chunk_count += change

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
    ) -> AsyncIterator[tuple[int, bytes, int]]:
        path = self._path(key, index)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, across yields
        except FileNotFoundError:
            raise NotFound(f"Chunk {index} of {key} is not stored here.") from None
        with f:
            for record in chunk_format.read_records(f, offset, length, name=f"Chunk {index} of {key}"):
                yield record

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
        if self._chunk_count is None:  # one scan per process; heartbeats then cost nothing
            counted = await asyncio.to_thread(lambda: sum(1 for _ in self._chunks.glob("*/*")))
            with self._count_lock:
                if self._chunk_count is None:
                    self._chunk_count = counted
        return Usage(disk.total, disk.free, self._chunk_count)
