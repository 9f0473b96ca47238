"""The backend conformance suite over the in-process backends, and fs specifics."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from dynostore._proto import container_pb2 as pb
from dynostore.container.backends import Backend, ChunkWriter, FileSystemBackend, MemoryBackend, Usage
from dynostore.container.backends import fs as fs_backend
from dynostore.container.servicer import ContainerServicer
from dynostore.erasure.checksum import checksum
from dynostore.errors import AlreadyExists, DataLoss, NotFound, Unavailable
from dynostore.tickets import TicketVerifier
from tests.backend_conformance import KEY, BackendConformance, read, run, write


@pytest.fixture(params=["memory", "fs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factories: dict[str, Callable[[], Backend]] = {
        "memory": MemoryBackend,
        "fs": lambda: FileSystemBackend(tmp_path / "fs"),
    }
    return factories[request.param]()


class TestInProcessBackends(BackendConformance):
    """memory and fs."""


class _FailingWriter(ChunkWriter):
    def __init__(self, inner: ChunkWriter, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.writes = 0
        self.aborted = False

    async def write(self, data: bytes | memoryview, crc: int) -> None:
        self.writes += 1
        if self.writes == self.fail_at:
            raise Unavailable("The storage went away.")
        await self.inner.write(data, crc)

    async def commit(self) -> None:
        if self.fail_at == 0:
            raise Unavailable("The storage went away at commit.")
        await self.inner.commit()

    async def abort(self) -> None:
        self.aborted = True
        await self.inner.abort()


class _FailingBackend(Backend):
    """Wraps a backend; its writers fail at the given write (0: at commit)."""

    def __init__(self, inner: Backend, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.writers: list[_FailingWriter] = []

    async def open_writer(self, key: str, index: int) -> ChunkWriter:
        writer = _FailingWriter(await self.inner.open_writer(key, index), self.fail_at)
        self.writers.append(writer)
        return writer

    def read(
        self, key: str, index: int, offset: int = 0, length: int = 0
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        return self.inner.read(key, index, offset, length)

    async def delete(self, key: str, index: int) -> bool:
        return await self.inner.delete(key, index)

    def list_chunks(self) -> AsyncIterator[tuple[str, int]]:
        return self.inner.list_chunks()

    async def usage(self) -> Usage:
        return await self.inner.usage()


@pytest.mark.parametrize("fail_at", [1, 3, 0])
def test_backend_failing_mid_stream_fails_the_chunk_cleanly(backend: Backend, fail_at: int) -> None:
    run(write(backend, [b"old"]))
    failing = _FailingBackend(backend, fail_at)
    servicer = ContainerServicer(failing, "c-test", "site", TicketVerifier())

    async def fragments() -> AsyncIterator[pb.Fragment]:
        for _ in range(4):
            data = os.urandom(1000)
            yield pb.Fragment(data=data, crc32=checksum(data))

    with pytest.raises(Unavailable):
        run(servicer._write(KEY, 2, fragments()))
    assert failing.writers[0].aborted
    with pytest.raises(NotFound):  # nothing of the failed write
        run(read(backend, index=2))
    assert run(read(backend)) == [b"old"]
    with pytest.raises(AlreadyExists):  # chunks are written once through the RPCs
        run(servicer._write(KEY, 0, fragments()))
    assert run(read(backend)) == [b"old"]
    with pytest.raises(Unavailable):
        run(servicer._write(KEY, 1, fragments()))
    with pytest.raises(NotFound):
        run(read(backend, index=1))


def test_fs_detects_bit_rot_and_the_damaged_chunk_still_exists(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)
    run(write(backend, [b"hello world"]))
    (path,) = (tmp_path / "chunks").rglob(f"{KEY}.0")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataLoss):
        run(read(backend))
    # The default ``exists`` (S3 and RADOS use it) reads the first fragment: damage is not absence.
    assert run(Backend.exists(backend, KEY, 0)) is True
    assert run(Backend.exists(backend, KEY, 1)) is False


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


def test_fs_workers_clear_only_their_own_leftovers_and_share_the_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = FileSystemBackend(tmp_path, worker=0), FileSystemBackend(tmp_path, worker=1)

    async def interrupted(backend: FileSystemBackend, index: int) -> None:
        writer = await backend.open_writer(KEY, index)
        await writer.write(b"partial", checksum(b"partial"))

    run(interrupted(first, 0))
    run(interrupted(second, 1))
    assert run(first.usage()).chunks == 0
    FileSystemBackend(tmp_path, worker=0)  # worker 0 starts again, worker 1 writes on
    assert not list((tmp_path / "incoming" / "w0").iterdir())
    assert list((tmp_path / "incoming" / "w1").iterdir())
    run(write(second, [b"written by worker 1"], index=2))
    assert run(read(first, index=2)) == [b"written by worker 1"]
    assert run(first.usage()).chunks == 0  # its own count, until the next recount
    monkeypatch.setattr("dynostore.container.backends.fs.RECOUNT_SECONDS", 0.0)
    assert run(first.usage()).chunks == 1
    FileSystemBackend(tmp_path)  # a single process again clears every leftover
    assert not list((tmp_path / "incoming").iterdir())


def test_fs_shards_by_key_prefix(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)
    run(write(backend, [b"x"]))
    assert (tmp_path / "chunks" / KEY[:2] / f"{KEY}.0").exists()


def test_fs_chunk_count_is_kept_without_rescanning(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)
    run(write(backend, [b"a"], index=0))
    assert run(backend.usage()).chunks == 1  # the one scan
    run(write(backend, [b"b"], index=1))
    run(write(backend, [b"c"], index=1))  # replaces: no new chunk
    assert run(backend.usage()).chunks == 2
    run(backend.delete(KEY, 0))
    run(backend.delete(KEY, 0))
    assert run(backend.usage()).chunks == 1
    assert run(FileSystemBackend(tmp_path).usage()).chunks == 1  # a restart scans again


def test_fs_many_small_fragments_and_large_ones(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)
    small = [os.urandom(10) for _ in range(2000)]  # more buffers than one writev takes
    run(write(backend, small, index=0))
    assert run(read(backend, index=0)) == small
    large = [os.urandom(3 << 20) for _ in range(5)]  # several writes in flight, several read batches
    run(write(backend, large, index=1))
    assert run(read(backend, index=1)) == large
    assert run(read(backend, index=1, offset=(7 << 20), length=1)) == [large[2]]


@pytest.mark.parametrize(
    "sizes",
    [
        [(3 << 20) + 7] * 4,  # the buffer's 8 MiB first reached mid-fragment, a tail of a few bytes left
        [(9 << 20) + 3, 1],  # one fragment larger than the buffer
        [(8 << 20) + 1] + [4096] * 700,  # then whole blocks, flushed by the piece count
    ],
    ids=["odd", "larger-than-buffer", "then-many-small"],
)
def test_fs_large_chunks_written_past_the_page_cache_are_the_same_files(tmp_path: Path, sizes: list[int]) -> None:
    """A chunk past 8 MiB goes with O_DIRECT where the file system takes it: byte for byte the buffered file."""
    backend = FileSystemBackend(tmp_path)
    if not backend.direct:
        pytest.skip(f"{tmp_path} does not take O_DIRECT writes")
    lent: list[mmap.mmap | None] = []
    direct_buffer = backend.direct_buffer

    def lend(fd: int) -> mmap.mmap | None:
        lent.append(direct_buffer(fd))
        return lent[-1]

    backend.direct_buffer = lend  # type: ignore[method-assign]
    fragments = [os.urandom(size) for size in sizes]
    run(write(backend, fragments, index=0))
    assert len(lent) == 1, "one buffer lent for the chunk"
    assert lent[0] is not None, "no write went past the page cache: this test would not see its mistakes"
    backend.direct = False
    run(write(backend, fragments, index=1))
    (direct,) = (tmp_path / "chunks").rglob(f"{KEY}.0")
    (buffered,) = (tmp_path / "chunks").rglob(f"{KEY}.1")
    assert direct.read_bytes() == buffered.read_bytes()
    assert run(read(backend, index=0)) == fragments
    assert run(read(backend, index=0, offset=sum(sizes) - 1, length=1)) == fragments[-1:]


@pytest.mark.parametrize("refused_at", [1, 2])
def test_fs_direct_writes_refused_midway_go_on_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_at: int
) -> None:
    """A file system that took the probe but refuses a write (EINVAL): the chunk is whole, later ones buffered."""
    backend = FileSystemBackend(tmp_path)
    if not backend.direct:
        pytest.skip(f"{tmp_path} does not take O_DIRECT writes")
    calls = 0
    write_direct = fs_backend._write_direct

    def refusing(*args: Any, **kwargs: Any) -> bytes:
        nonlocal calls
        calls += 1
        if calls == refused_at:
            raise OSError(errno.EINVAL, "Invalid argument")
        return write_direct(*args, **kwargs)

    monkeypatch.setattr(fs_backend, "_write_direct", refusing)
    fragments = [os.urandom((3 << 20) + 7) for _ in range(4)]  # a direct write at 8 MiB, the rest at commit
    run(write(backend, fragments, index=0))
    assert calls == refused_at
    assert not backend.direct
    run(write(backend, fragments, index=1))
    assert calls == refused_at  # the next chunk went through the page cache
    (first,) = (tmp_path / "chunks").rglob(f"{KEY}.0")
    (second,) = (tmp_path / "chunks").rglob(f"{KEY}.1")
    assert first.read_bytes() == second.read_bytes()
    assert run(read(backend, index=0)) == fragments


def open_chunk_files(directory: Path) -> list[str]:
    """Files under ``directory`` that this process holds open (its descriptors in /proc/self/fd)."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(str(directory)):
                held.append(target)
    return held


def test_fs_reader_stopped_early_releases_the_file(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)
    run(write(backend, [os.urandom(3 << 20) for _ in range(4)]))

    async def first() -> tuple[bytes, list[str]]:
        reader = backend.read(KEY, 0)
        async for _, data, _ in reader:
            while_reading = open_chunk_files(tmp_path)
            await reader.aclose()  # type: ignore[attr-defined]
            return bytes(data), while_reading
        raise AssertionError("no fragment")

    data, while_reading = run(first())
    assert len(data) == 3 << 20
    assert while_reading, "the reader held no file open: this test would not see a leak"
    assert open_chunk_files(tmp_path) == []
    assert run(backend.delete(KEY, 0))


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_fs_a_commit_cancelled_midway_finishes_before_the_abort_touches_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """A cancelled put (a hedged write given up) aborts: never under the commit's thread, its file or its buffer."""
    backend = FileSystemBackend(tmp_path, direct_writes=direct)
    started, release = threading.Event(), threading.Event()
    commit = fs_backend._FileWriter._commit

    def held(self: Any) -> None:
        started.set()
        release.wait(30)
        commit(self)

    monkeypatch.setattr(fs_backend._FileWriter, "_commit", held)
    fragments = [os.urandom((3 << 20) + 7) for _ in range(4)]

    async def cancelled() -> tuple[bool, list[mmap.mmap]]:
        writer = await backend.open_writer(KEY, 0)
        for f in fragments:
            await writer.write(f, checksum(f))
        committing = asyncio.ensure_future(writer.commit())
        await asyncio.to_thread(started.wait, 30)
        committing.cancel()
        aborting = asyncio.ensure_future(writer.abort())
        await asyncio.sleep(0.05)
        waited = not aborting.done()  # the commit's thread is held: the abort must still wait for it
        release.set()
        await aborting
        with contextlib.suppress(asyncio.CancelledError):
            await committing
        return waited, list(backend._buffers)

    waited, kept = run(cancelled())
    assert waited
    assert len({id(b) for b in kept}) == len(kept)  # no buffer given back twice
    assert not list((tmp_path / "incoming").iterdir())
    # The commit ran to its end: the chunk is whole (an orphan, for the scrub's garbage collection).
    assert run(read(backend)) == fragments


def test_fs_abort_waits_for_the_write_in_flight(tmp_path: Path) -> None:
    backend = FileSystemBackend(tmp_path)

    async def aborted() -> None:
        writer = await backend.open_writer(KEY, 0)
        for _ in range(3):
            data = os.urandom(4 << 20)
            await writer.write(data, checksum(data))
        await writer.abort()

    run(aborted())
    assert not list((tmp_path / "incoming").iterdir())
    with pytest.raises(NotFound):
        run(read(backend))
