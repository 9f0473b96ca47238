"""Fragment indexes and record parsing of the object-store backends (S3, RADOS)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from dynostore.container.backends.layout import BlockReader, FragmentIndex, ReadAhead, end_marker
from dynostore.erasure import format as chunk_format
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss


def blocks(data: bytes, size: int) -> Callable[[], Awaitable[bytes]]:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]

    async def next_block() -> bytes:
        return pieces.pop(0) if pieces else b""

    return next_block


def stream(fragments: list[bytes], *, end: bool = True) -> bytes:
    records = b"".join(chunk_format.record_header(len(f), checksum(f)) + f for f in fragments)
    return chunk_format.MAGIC + records + (end_marker(len(fragments)) if end else b"")


async def parse(data: bytes, block: int, count: int | None = None) -> list[tuple[int, bytes, int]]:
    reader = BlockReader(blocks(data, block), "chunk")
    assert await reader.read_exactly(8) == chunk_format.MAGIC
    return [(o, bytes(d), c) async for o, d, c in reader.records(0, count)]


def test_index_bytes_are_pinned() -> None:
    index = FragmentIndex([1, 256, 0])
    assert index.encode() == bytes.fromhex("00000001 00000100 00000000")
    assert FragmentIndex.decode(index.encode()) == index
    assert end_marker(3) == bytes.fromhex("ffffffff 00000003")
    with pytest.raises(DataLoss):
        FragmentIndex.decode(b"\0\0\0")


def test_span() -> None:
    index = FragmentIndex([100, 100, 50])
    assert index.stream_bytes == 8 + 3 * 8 + 250
    assert index.span(0, 0) == (0, 3, 0, 8)
    assert index.span(100, 0) == (1, 2, 100, 8 + 8 + 100)
    assert index.span(150, 1) == (1, 1, 100, 116)
    assert index.span(99, 2) == (0, 2, 0, 8)
    assert index.span(250, 0)[1] == 0
    assert index.stream_length(1, 2) == 16 + 150


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_records_parse_at_any_block_size(block: int) -> None:
    fragments = [b"abc", b"", b"x" * 1000]
    got = asyncio.run(parse(stream(fragments), block))
    assert [(o, d) for o, d, _ in got] == [(0, b"abc"), (3, b""), (3, b"x" * 1000)]


def test_truncation_and_corruption_are_data_loss() -> None:
    data = stream([b"hello", b"world"])
    with pytest.raises(DataLoss, match="truncated"):
        asyncio.run(parse(data[:-12], 3))
    with pytest.raises(DataLoss, match="truncated"):
        asyncio.run(parse(stream([b"hello"], end=False), 3))  # no end marker
    corrupt = bytearray(data)
    corrupt[20] ^= 1
    with pytest.raises(DataLoss, match="checksum"):
        asyncio.run(parse(bytes(corrupt), 3))
    wrong_count = stream([b"hello"], end=False) + end_marker(2)
    with pytest.raises(DataLoss, match="end marker"):
        asyncio.run(parse(wrong_count, 5))


@pytest.mark.parametrize("block", [1, 7, 4096, 1 << 20])
def test_records_parse_through_read_ahead(block: int) -> None:
    fragments = [bytes([i]) * (1000 * i) for i in range(8)]

    async def go() -> list[tuple[int, bytes, int]]:
        source = ReadAhead(blocks(stream(fragments), block))
        reader = BlockReader(source, "chunk")
        assert await reader.read_exactly(8) == chunk_format.MAGIC
        found = [(o, bytes(d), c) async for o, d, c in reader.records(0, None)]
        assert await source() == b""  # stays ended
        await source.aclose()
        return found

    assert [d for _, d, _ in asyncio.run(go())] == fragments


def test_read_ahead_close_waits_for_the_fetch_in_flight() -> None:
    fetched: list[int] = []

    async def slow() -> bytes:
        await asyncio.sleep(0.01)
        fetched.append(1)
        return b"x"

    async def go() -> None:
        source = ReadAhead(slow)
        assert await source() == b"x"  # and one more fetch starts
        await source.aclose()
        assert len(fetched) == 2

    asyncio.run(go())
