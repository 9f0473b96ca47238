"""A backend that keeps chunks in a dict: for unit tests and throwaway fabrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

from dynostore.container.backends.base import Backend, ChunkWriter, Usage
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss, NotFound

Fragments = list[tuple[bytes, int]]


class _MemoryWriter(ChunkWriter):
    def __init__(self, store: dict[tuple[str, int], Fragments], name: tuple[str, int]) -> None:
        self._store = store
        self._name = name
        self._fragments: Fragments = []

    async def write(self, data: bytes | memoryview, crc: int) -> None:
        self._fragments.append((bytes(data), crc))

    async def commit(self) -> None:
        self._store[self._name] = self._fragments

    async def abort(self) -> None:
        self._fragments = []


class MemoryBackend(Backend):
    """Chunks in process memory; gone when the process ends."""

    name = "memory"

    def __init__(self, capacity_bytes: int = 1 << 34) -> None:
        """Create an empty store that reports ``capacity_bytes`` of capacity."""
        self.chunks: dict[tuple[str, int], Fragments] = {}
        self._capacity = capacity_bytes

    async def open_writer(self, key: str, index: int) -> ChunkWriter:
        return _MemoryWriter(self.chunks, (key, index))

    async def read(
        self, key: str, index: int, offset: int = 0, length: int = 0
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        fragments = self.chunks.get((key, index))
        if fragments is None:
            raise NotFound(f"Chunk {index} of {key} is not stored here.")
        end = offset + length if length else None
        position = 0
        for data, crc in fragments:
            if end is not None and position >= end:
                return
            if position + len(data) > offset:
                if checksum(data) != crc:
                    raise DataLoss(f"Chunk {index} of {key} fails its checksum.")
                yield position, data, crc
            position += len(data)

    async def exists(self, key: str, index: int) -> bool:
        return (key, index) in self.chunks

    async def delete(self, key: str, index: int) -> bool:
        return self.chunks.pop((key, index), None) is not None

    async def list_chunks(self) -> AsyncIterator[tuple[str, int]]:
        for name in list(self.chunks):
            yield name

    async def usage(self) -> Usage:
        used = sum(len(d) for fragments in self.chunks.values() for d, _ in fragments)
        return Usage(self._capacity, max(self._capacity - used, 0), len(self.chunks))
