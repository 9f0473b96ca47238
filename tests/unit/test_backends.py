"""One conformance suite for every chunk backend."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dynostore.container.backends import Backend, FileSystemBackend, MemoryBackend
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss, NotFound

T = TypeVar("T")
KEY = "0123456789abcdef" * 2


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(params=["memory", "fs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factories: dict[str, Callable[[], Backend]] = {
        "memory": MemoryBackend,
        "fs": lambda: FileSystemBackend(tmp_path / "fs"),
    }
    return factories[request.param]()


async def write(backend: Backend, fragments: list[bytes], key: str = KEY, index: int = 0) -> None:
    writer = await backend.open_writer(key, index)
    for f in fragments:
        await writer.write(f, checksum(f))
    await writer.commit()


async def read(backend: Backend, key: str = KEY, index: int = 0, offset: int = 0, length: int = 0) -> list[bytes]:
    return [d async for _, d, _ in backend.read(key, index, offset, length)]


def test_round_trip(backend: Backend) -> None:
    fragments = [os.urandom(1000), os.urandom(1000), os.urandom(10)]
    run(write(backend, fragments))
    assert run(read(backend)) == fragments


def test_offset_reads(backend: Backend) -> None:
    fragments = [b"a" * 100, b"b" * 100, b"c" * 50]
    run(write(backend, fragments))
    assert run(read(backend, offset=100)) == fragments[1:]
    assert run(read(backend, offset=150, length=1)) == [fragments[1]]
    assert run(read(backend, offset=250)) == []


def test_uncommitted_writes_are_invisible(backend: Backend) -> None:
    async def scenario() -> None:
        writer = await backend.open_writer(KEY, 1)
        await writer.write(b"x", checksum(b"x"))
        with pytest.raises(NotFound):
            await read(backend, index=1)
        await writer.abort()
        with pytest.raises(NotFound):
            await read(backend, index=1)

    run(scenario())


def test_rewrite_replaces_whole_chunk(backend: Backend) -> None:
    run(write(backend, [b"old" * 10]))
    run(write(backend, [b"new"]))
    assert run(read(backend)) == [b"new"]


def test_missing_chunk_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        run(read(backend))


def test_delete_is_idempotent(backend: Backend) -> None:
    run(write(backend, [b"x"]))
    assert run(backend.delete(KEY, 0)) is True
    assert run(backend.delete(KEY, 0)) is False
    with pytest.raises(NotFound):
        run(read(backend))


def test_usage_counts_chunks(backend: Backend) -> None:
    run(write(backend, [b"x"], index=0))
    run(write(backend, [b"y"], index=1))
    usage = run(backend.usage())
    assert usage.chunks == 2
    assert 0 < usage.free_bytes <= usage.capacity_bytes


def test_fs_detects_bit_rot(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)
    run(write(backend, [b"hello world"]))
    (path,) = (tmp_path / "chunks").rglob(f"{KEY}.0")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataLoss):
        run(read(backend))


def test_fs_removes_leftovers_of_interrupted_writes(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)

    async def interrupted() -> None:
        writer = await backend.open_writer(KEY, 0)
        await writer.write(b"partial", checksum(b"partial"))

    run(interrupted())
    assert list((tmp_path / "incoming").iterdir())
    FileSystemBackend(tmp_path)  # a restart
    assert not list((tmp_path / "incoming").iterdir())
    with pytest.raises(NotFound):
        run(read(backend))


def test_fs_shards_by_key_prefix(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)
    run(write(backend, [b"x"]))
    assert (tmp_path / "chunks" / KEY[:2] / f"{KEY}.0").exists()
