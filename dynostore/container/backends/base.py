"""The interface every chunk storage backend implements."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from dynostore.errors import DataLoss, NotFound


@dataclass(frozen=True)
class Usage:
    """Space figures of a backend, in bytes."""

    capacity_bytes: int
    free_bytes: int
    chunks: int


class ChunkWriter(abc.ABC):
    """Receives the fragments of one chunk; nothing is visible before commit."""

    @abc.abstractmethod
    async def write(self, data: bytes | memoryview, crc: int) -> None:
        """Append one fragment whose CRC-32 the caller has verified.

        ``data`` may be a read-only view of the received message (no copy was
        made); it stays valid for as long as it is referenced.
        """

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the chunk durable and visible, replacing an older copy (damaged or not).

        The replacement is atomic: until the new copy is durable the old one
        stays in place, readable as it was; then readers find the new one.
        """

    @abc.abstractmethod
    async def abort(self) -> None:
        """Drop everything written; safe to call after a failed commit."""


class RemoteChunkWriter(ChunkWriter):
    """A writer whose commit, once started, runs to its end even if its caller is cancelled.

    The calls of a remote store (a part's upload, the head's or the
    multipart upload's completion) run in threads that cannot be stopped: a
    commit cancelled midway (a hedged put giving up on a lagging chunk, a
    deadline) would otherwise leave them running while :meth:`abort` removes
    what they build on. Here :meth:`abort` waits for a started commit, then
    discards the chunk unless that commit made it whole.
    """

    _committing: asyncio.Future[None] | None = None

    async def commit(self) -> None:
        if self._committing is None:
            self._committing = asyncio.ensure_future(self._commit())
        await asyncio.shield(self._committing)

    async def abort(self) -> None:
        if self._committing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._committing)
        await self._discard()

    @abc.abstractmethod
    async def _commit(self) -> None:
        """What :meth:`commit` does (see :meth:`ChunkWriter.commit`)."""

    @abc.abstractmethod
    async def _discard(self) -> None:
        """Drop everything written, unless a commit made the chunk whole."""


class Backend(abc.ABC):
    """Stores chunks named by object key and chunk index."""

    name: str = "backend"

    @abc.abstractmethod
    async def open_writer(self, key: str, index: int) -> ChunkWriter:
        """Start writing chunk ``index`` of object ``key``."""

    async def open_replacement(self, key: str, index: int) -> ChunkWriter:
        """Start writing chunk ``index`` of ``key`` over a copy that may be stored (repair's rewrite in place).

        The writers of :meth:`open_writer` replace atomically already, so this
        is the same by default; a backend that cannot tell at commit whether
        it replaced a copy (S3) overrides it to keep its usage figures right.
        """
        return await self.open_writer(key, index)

    @abc.abstractmethod
    def read(
        self, key: str, index: int, offset: int = 0, length: int = 0
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        """Yield ``(payload_offset, data, crc)`` of the fragments overlapping the range.

        ``data`` may be a read-only view of a larger buffer (no copy made).

        Raises:
            NotFound: the chunk is not stored here.
            DataLoss: the stored chunk fails verification.
        """

    async def exists(self, key: str, index: int) -> bool:
        """Whether the chunk is stored, damaged or not (backends override this with a cheaper check)."""
        try:
            async for _ in self.read(key, index, 0, 1):
                break
        except NotFound:
            return False
        except DataLoss:
            pass
        return True

    @abc.abstractmethod
    async def delete(self, key: str, index: int) -> bool:
        """Remove a chunk; return whether it existed."""

    @abc.abstractmethod
    def list_chunks(self) -> AsyncIterator[tuple[str, int]]:
        """Yield ``(key, index)`` of every stored chunk, in no particular order."""

    @abc.abstractmethod
    async def usage(self) -> Usage:
        """Capacity, free space and number of chunks."""

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Make sure the storage is reachable; called once when the container starts.

        Raises:
            Unavailable: the storage cannot be reached; the message names the settings to fix.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the backend."""
