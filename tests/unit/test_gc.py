"""Garbage collection spares chunks that no record names yet: a put in progress keeps them for gc_grace."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dynostore._proto import gateway_pb2
from dynostore.container import scrubber as scrubber_module
from dynostore.container.backends.memory import MemoryBackend
from dynostore.container.scrubber import DamageReporter, Scrubber
from dynostore.erasure.checksum import checksum

KEY = "a" * 32
GRACE = 600.0


class Records:
    """The gateway's CheckChunks: which chunks an object record relies on."""

    def __init__(self) -> None:
        self.committed: set[tuple[str, int]] = set()

    async def CheckChunks(self, request: gateway_pb2.CheckChunksRequest, **kwargs: Any) -> Any:
        referenced = [(c.key, c.index) in self.committed for c in request.chunks]
        return gateway_pb2.CheckChunksResponse(referenced=referenced)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def stored(backend: MemoryBackend, index: int) -> None:
    writer = await backend.open_writer(KEY, index)
    await writer.write(b"fragment", checksum(b"fragment"))
    await writer.commit()


def test_a_put_in_progress_keeps_its_chunks_for_gc_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(scrubber_module.time, "monotonic", clock)
    backend = MemoryBackend()
    scrubber = Scrubber(DamageReporter(backend, "c-1", "127.0.0.1:1", "token", None), interval=60, gc_grace=GRACE)
    records = Records()

    async def scrub_pass() -> int:  # what one scrub does with the chunks it finds
        still: dict[tuple[str, int], float] = {}
        found = [chunk async for chunk in backend.list_chunks()]
        deleted = await scrubber._collect(records, found, still)
        scrubber._unreferenced_since = still
        return deleted

    async def scenario() -> None:
        await stored(backend, 0)
        await stored(backend, 1)
        assert await scrub_pass() == 0  # written, not committed yet: first seen unreferenced now
        clock.now += GRACE - 1
        assert await scrub_pass() == 0  # still within the grace: the put may yet commit
        records.committed.add((KEY, 0))  # the put committed chunk 0's object; chunk 1 stays an orphan
        clock.now += 2
        assert await scrub_pass() == 1  # the orphan, unreferenced for longer than the grace, goes
        assert await backend.exists(KEY, 0)
        assert not await backend.exists(KEY, 1)
        records.committed.clear()  # evicted: its chunk is garbage only a whole grace later
        assert await scrub_pass() == 0
        clock.now += GRACE
        assert await scrub_pass() == 1
        assert not await backend.exists(KEY, 0)

    asyncio.run(scenario())


def test_no_garbage_collection_with_gc_grace_zero() -> None:
    backend = MemoryBackend()
    scrubber = Scrubber(DamageReporter(backend, "c-1", "127.0.0.1:1", "token", None), interval=60, gc_grace=0)

    async def scenario() -> None:
        await stored(backend, 0)
        assert await scrubber._collect(Records(), [(KEY, 0)], {}) == 0
        assert await backend.exists(KEY, 0)

    asyncio.run(scenario())
