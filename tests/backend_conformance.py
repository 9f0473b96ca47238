"""The conformance suite every chunk backend passes.

A test module subclasses :class:`BackendConformance` as ``Test...`` and
provides a ``backend`` fixture (usually parametrized over backends): memory and
fs in ``tests/unit``, S3 and RADOS against real servers in ``tests/integration``.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import pytest

from dynostore._proto import container_pb2 as pb
from dynostore.container.backends import Backend
from dynostore.container.servicer import ContainerServicer
from dynostore.erasure.checksum import checksum
from dynostore.errors import AlreadyExists, DataLoss, NotFound
from dynostore.tickets import TicketVerifier

T = TypeVar("T")
KEY = "0123456789abcdef" * 2
MiB = 1024 * 1024


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def write(backend: Backend, fragments: list[bytes], key: str = KEY, index: int = 0) -> None:
    writer = await backend.open_writer(key, index)
    for f in fragments:
        await writer.write(f, checksum(f))
    await writer.commit()


async def read(backend: Backend, key: str = KEY, index: int = 0, offset: int = 0, length: int = 0) -> list[bytes]:
    return [bytes(d) async for _, d, _ in backend.read(key, index, offset, length)]


async def read_records(
    backend: Backend, key: str = KEY, index: int = 0, offset: int = 0, length: int = 0
) -> list[tuple[int, bytes, int]]:
    return [(o, bytes(d), c) async for o, d, c in backend.read(key, index, offset, length)]


def expected(fragments: list[bytes], offset: int, length: int) -> list[tuple[int, bytes]]:
    """The ``(payload_offset, data)`` a read of the range must return."""
    end = offset + length if length else None
    found, position = [], 0
    for f in fragments:
        if (end is None or position < end) and position + len(f) > offset:
            found.append((position, f))
        position += len(f)
    return found


class BackendConformance:
    """Tests every backend must pass; subclasses provide the ``backend`` fixture."""

    def test_round_trip(self, backend: Backend) -> None:
        fragments = [os.urandom(1000), os.urandom(1000), os.urandom(10)]
        run(write(backend, fragments))
        assert run(read(backend)) == fragments

    def test_empty_chunk(self, backend: Backend) -> None:
        run(write(backend, []))
        assert run(read(backend)) == []

    def test_offset_reads(self, backend: Backend) -> None:
        fragments = [b"a" * 100, b"b" * 100, b"c" * 50]
        run(write(backend, fragments))
        assert run(read(backend, offset=100)) == fragments[1:]
        assert run(read(backend, offset=150, length=1)) == [fragments[1]]
        assert run(read(backend, offset=99, length=2)) == fragments[:2]
        assert run(read(backend, offset=250)) == []

    def test_large_chunk_with_random_ranges(self, backend: Backend) -> None:
        """A chunk bigger than any part or object size, read whole and at random ranges."""
        rng = random.Random(4)
        fragments = [os.urandom(MiB + rng.randrange(-1000, 1000)) for _ in range(14)]
        run(write(backend, fragments, index=2))
        records = run(read_records(backend, index=2))
        assert [d for _, d, _ in records] == fragments
        assert all(crc == checksum(d) for _, d, crc in records)
        total = sum(map(len, fragments))
        ranges = [(0, 1), (total - 1, 0), (5 * MiB, 3 * MiB), (8 * MiB - 3, 6), (total, 0)]
        ranges += [(rng.randrange(total), rng.randrange(3 * MiB)) for _ in range(5)]
        for offset, length in ranges:
            got = [(o, d) for o, d, _ in run(read_records(backend, index=2, offset=offset, length=length))]
            assert got == expected(fragments, offset, length), (offset, length)

    def test_uncommitted_writes_are_invisible(self, backend: Backend) -> None:
        async def scenario() -> None:
            writer = await backend.open_writer(KEY, 1)
            for _ in range(7):  # past the first part of multipart backends
                data = os.urandom(MiB)
                await writer.write(data, checksum(data))
            with pytest.raises(NotFound):
                await read(backend, index=1)
            await writer.abort()
            await writer.abort()  # idempotent
            with pytest.raises(NotFound):
                await read(backend, index=1)

        run(scenario())

    def test_aborted_rewrite_keeps_the_old_chunk(self, backend: Backend) -> None:
        run(write(backend, [b"old"]))

        async def scenario() -> None:
            writer = await backend.open_writer(KEY, 0)
            for _ in range(6):
                data = os.urandom(MiB)
                await writer.write(data, checksum(data))
            await writer.abort()

        run(scenario())
        assert run(read(backend)) == [b"old"]

    def test_rewrite_replaces_whole_chunk(self, backend: Backend) -> None:
        big = [os.urandom(MiB) for _ in range(9)]
        run(write(backend, [b"old" * 10]))
        run(write(backend, big))
        assert run(read(backend)) == big
        run(write(backend, [b"new"]))
        assert run(read(backend)) == [b"new"]

    def test_a_damaged_chunk_is_replaced_in_place(self, backend: Backend) -> None:
        """Repair's rewrite: the damaged copy stays until the replacement is durable, then the new one is there."""
        big = [os.urandom(MiB) for _ in range(6)]  # past the first part of multipart backends
        servicer = ContainerServicer(backend, "c-test", "site", TicketVerifier())

        async def fragments(chunk: list[bytes]) -> AsyncIterator[pb.Fragment]:
            for data in chunk:
                yield pb.Fragment(data=data, crc32=checksum(data))

        async def scenario() -> None:
            rotten = await backend.open_writer(KEY, 3)
            await rotten.write(b"rotten bytes", checksum(b"rotten bytes") ^ 1)  # as if they rotted on disk
            await rotten.commit()
            before = await backend.usage()
            with pytest.raises(DataLoss):
                await read(backend, index=3)
            with pytest.raises(AlreadyExists):  # written once, unless the write asks to replace
                await servicer._write(KEY, 3, fragments(big))
            writer = await backend.open_replacement(KEY, 3)
            for data in big[:4]:
                await writer.write(data, checksum(data))
            with pytest.raises(DataLoss):  # not gone before its replacement is stored
                await read(backend, index=3)
            assert await backend.exists(KEY, 3)
            await writer.abort()
            with pytest.raises(DataLoss):  # nor after a replacement that failed
                await read(backend, index=3)
            reply = await servicer._write(KEY, 3, fragments(big), replace=True)
            assert (reply.size, reply.fragments) == (6 * MiB, 6)
            assert await read(backend, index=3) == big
            assert {name async for name in backend.list_chunks()} == {(KEY, 3)}
            assert (await backend.usage()).chunks == before.chunks  # one chunk, replaced
            await servicer._write(KEY, 4, fragments([b"new"]), replace=True)  # nothing to replace is fine
            assert await read(backend, index=4) == [b"new"]

        run(scenario())

    def test_chunks_are_independent(self, backend: Backend) -> None:
        other = "f" * 32
        run(write(backend, [b"zero"], index=0))
        run(write(backend, [b"one"], index=1))
        run(write(backend, [b"other"], key=other, index=0))
        assert run(read(backend, index=1)) == [b"one"]
        assert run(read(backend, key=other)) == [b"other"]
        assert run(backend.delete(KEY, 0)) is True
        assert run(read(backend, key=other)) == [b"other"]

    def test_missing_chunk_is_not_found(self, backend: Backend) -> None:
        with pytest.raises(NotFound):
            run(read(backend))
        with pytest.raises(NotFound):
            run(read(backend, offset=10, length=10))

    def test_exists(self, backend: Backend) -> None:
        assert run(backend.exists(KEY, 0)) is False
        run(write(backend, [b""]))
        assert run(backend.exists(KEY, 0)) is True
        assert run(backend.exists(KEY, 1)) is False
        run(backend.delete(KEY, 0))
        assert run(backend.exists(KEY, 0)) is False

    def test_delete_is_idempotent(self, backend: Backend) -> None:
        run(write(backend, [b"x"]))
        assert run(backend.delete(KEY, 0)) is True
        assert run(backend.delete(KEY, 0)) is False
        with pytest.raises(NotFound):
            run(read(backend))

    def test_list_chunks(self, backend: Backend) -> None:
        async def listed() -> set[tuple[str, int]]:
            return {name async for name in backend.list_chunks()}

        other = "f" * 32
        assert run(listed()) == set()
        run(write(backend, [b"a" * 100], index=0))
        run(write(backend, [os.urandom(MiB) for _ in range(7)], index=4))  # several parts or objects
        run(write(backend, [b"c"], key=other, index=1))
        assert run(listed()) == {(KEY, 0), (KEY, 4), (other, 1)}
        run(backend.delete(KEY, 4))
        assert run(listed()) == {(KEY, 0), (other, 1)}

    def test_usage_counts_chunks(self, backend: Backend) -> None:
        before = run(backend.usage())
        run(write(backend, [b"x"], index=0))
        run(write(backend, [b"y"], index=1))
        usage = run(backend.usage())
        assert usage.chunks == before.chunks + 2
        assert 0 < usage.free_bytes <= usage.capacity_bytes

    def test_concurrent_writers(self, backend: Backend) -> None:
        async def scenario() -> None:
            data = {i: [os.urandom(300 * 1024) for _ in range(i + 1)] for i in range(6)}
            await asyncio.gather(*(write(backend, fragments, index=i) for i, fragments in data.items()))
            for i, fragments in data.items():
                assert await read(backend, index=i) == fragments

        run(scenario())
