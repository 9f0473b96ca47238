"""A container backend that times its calls and reports its usage as metrics.

:class:`MeasuredBackend` wraps the container's backend when metrics are on.
It measures only the time spent inside the backend: a chunk's write is the
sum of its fragment writes and its commit, a read the sum of the steps that
fetch its fragments (not the time the reader takes between them), so slow
clients do not show as a slow disk. Every :meth:`~MeasuredBackend.usage` call
(each heartbeat, each ``Stat``) refreshes the capacity gauges.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from dynostore.container.backends.base import Backend, ChunkWriter, Usage
from dynostore.errors import DataLoss, NotFound
from dynostore.metrics import BACKEND_DURATION, BACKEND_ERRORS, CAPACITY, CHUNKS_STORED, FREE

# Failures that are the chunk's state, not the backend's: not counted as backend errors.
_CHUNK_STATES = (NotFound, DataLoss)


def _failed(operation: str, exc: BaseException) -> None:
    if isinstance(exc, Exception) and not isinstance(exc, _CHUNK_STATES):
        BACKEND_ERRORS.labels(operation).inc()


class _MeasuredWriter(ChunkWriter):
    """Adds up the time of a chunk's fragment writes and commit; records it once committed."""

    def __init__(self, writer: ChunkWriter, spent: float) -> None:
        self._writer = writer
        self._spent = spent

    async def write(self, data: bytes | memoryview, crc: int) -> None:
        started = time.perf_counter()
        try:
            await self._writer.write(data, crc)
        except BaseException as exc:
            _failed("write", exc)
            raise
        finally:
            self._spent += time.perf_counter() - started

    async def commit(self) -> None:
        started = time.perf_counter()
        try:
            await self._writer.commit()
        except BaseException as exc:
            _failed("write", exc)
            raise
        BACKEND_DURATION.labels("write").observe(self._spent + time.perf_counter() - started)

    async def abort(self) -> None:
        await self._writer.abort()


class MeasuredBackend(Backend):
    """``backend``, with its calls timed (``dynostore_backend_duration_seconds``) and its usage exported."""

    def __init__(self, backend: Backend) -> None:
        """Measure ``backend``; it keeps its name."""
        self.inner = backend
        self.name = backend.name

    async def _open(self, replace: bool, key: str, index: int) -> ChunkWriter:
        started = time.perf_counter()
        try:
            opener = self.inner.open_replacement if replace else self.inner.open_writer
            writer = await opener(key, index)
        except BaseException as exc:
            _failed("write", exc)
            raise
        return _MeasuredWriter(writer, time.perf_counter() - started)

    async def open_writer(self, key: str, index: int) -> ChunkWriter:
        return await self._open(False, key, index)

    async def open_replacement(self, key: str, index: int) -> ChunkWriter:
        return await self._open(True, key, index)

    async def read(
        self, key: str, index: int, offset: int = 0, length: int = 0
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        fragments = aiter(self.inner.read(key, index, offset, length))
        spent = 0.0
        try:
            while True:
                started = time.perf_counter()
                try:
                    fragment = await anext(fragments)
                except StopAsyncIteration:
                    break
                except BaseException as exc:
                    _failed("read", exc)
                    raise
                finally:
                    spent += time.perf_counter() - started
                yield fragment
            BACKEND_DURATION.labels("read").observe(spent)
        finally:
            close = getattr(fragments, "aclose", None)
            if close is not None:  # a reader that stopped early: let the backend release the chunk now
                await close()

    async def exists(self, key: str, index: int) -> bool:
        return await self.inner.exists(key, index)

    async def delete(self, key: str, index: int) -> bool:
        started = time.perf_counter()
        try:
            existed = await self.inner.delete(key, index)
        except BaseException as exc:
            _failed("delete", exc)
            raise
        BACKEND_DURATION.labels("delete").observe(time.perf_counter() - started)
        return existed

    def list_chunks(self) -> AsyncIterator[tuple[str, int]]:
        return self.inner.list_chunks()

    async def usage(self) -> Usage:
        usage = await self.inner.usage()
        CAPACITY.set(usage.capacity_bytes)
        FREE.set(usage.free_bytes)
        CHUNKS_STORED.set(usage.chunks)
        return usage

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()
