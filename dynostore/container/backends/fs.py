"""A backend on a POSIX file system (local disks, Lustre, NFS mounts).

Layout under ``root``: ``chunks/ab/cd/<key>.<index>`` (sharded by key prefix)
and ``incoming/`` for chunks being written. A chunk is written to
``incoming/``, fsynced, and renamed into place, so a reader sees either the
old chunk or the whole new one, never part of one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from dynostore.container.backends.base import Backend, ChunkWriter, Usage
from dynostore.erasure import format as chunk_format
from dynostore.errors import NotFound


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter(ChunkWriter):
    def __init__(self, temp: Path, final: Path) -> None:
        self._temp = temp
        self._final = final
        self._file: BinaryIO | None = open(temp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._file.write(chunk_format.MAGIC)

    async def write(self, data: bytes, crc: int) -> None:
        assert self._file is not None
        self._file.write(chunk_format.record_header(len(data), crc))
        self._file.write(data)

    async def commit(self) -> None:
        await asyncio.to_thread(self._commit)

    def _commit(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._temp, self._final)
        _fsync_dir(self._final.parent)

    async def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
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

    def _path(self, key: str, index: int) -> Path:
        return self._chunks / key[:2] / key[2:4] / f"{key}.{index}"

    async def open_writer(self, key: str, index: int) -> ChunkWriter:
        temp = self._incoming / f"{key}.{index}.{uuid.uuid4().hex}"
        return _FileWriter(temp, self._path(key, index))

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

    async def delete(self, key: str, index: int) -> bool:
        try:
            self._path(key, index).unlink()
        except FileNotFoundError:
            return False
        return True

    async def usage(self) -> Usage:
        disk = shutil.disk_usage(self.root)
        chunks = sum(1 for _ in self._chunks.glob("*/*/*"))
        return Usage(disk.total, disk.free, chunks)
