"""Found by the fault matrix, reduced to one deterministic case: a chunk stream whose container dies while idle.

A streamed put feeds each container's ``PutChunk`` stream from a bounded
queue through an async generator (``ChunkWriter._messages``), which gRPC's
request-consumer task iterates. When the container dies while that
generator waits for the next fragment (``queue.get()``), the call fails
but nothing ends the generator: the consumer task stays pending, and once
the put is over and the call is collected, asyncio logged "Task was destroyed
but it is pending!" and closing the generator failed with "aclose():
asynchronous generator is already running". The outage and mixed scenarios
met it when a container was killed between two segments of a put. Fixed:
a writer whose stream failed wakes the generator so that it ends.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dynostore.client.chunks import ChunkWriter
from dynostore.client.pipeline import Pipeline, PutItem
from dynostore.local import LocalFabric
from tests.faults.harness import ABANDONED
from tests.faults.ledger import SEGMENT

pytestmark = pytest.mark.integration


def writers() -> list[ChunkWriter]:
    """The chunk writers whose streams are still open, found through their tasks."""
    found = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if inspect.iscoroutine(coro) and coro.__qualname__ == "ChunkWriter._run" and coro.cr_frame is not None:
            found.append(coro.cr_frame.f_locals["self"])
    return found


async def until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Poll ``check`` every 10 ms until it is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.01)


def test_a_stream_whose_container_dies_while_idle_leaves_nothing_pending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    data = os.urandom(2 * SEGMENT)  # two segments: each chunk is a stream of two fragments
    with LocalFabric(containers=5, root=tmp_path / "fabric") as fabric:
        token = fabric.create_user("streams")

        async def run() -> None:
            pipeline = Pipeline(fabric.gateway)
            gate = asyncio.Event()

            async def segments(size: int) -> AsyncIterator[bytes]:
                yield data[:size]
                await gate.wait()  # the put stalls between its segments
                yield data[size:]

            put = asyncio.create_task(pipeline.put([PutItem(segments, len(data))], token=token, catalog="c"))
            try:
                await until(lambda: len(writers()) == 5, "five chunk streams open")
                # Every stream sent its first fragment and waits for the next one.
                await until(lambda: all(w._queue.empty() for w in writers()), "first fragments taken")
                fabric.containers[0].kill()
                await until(lambda: len(writers()) == 4, "the dead container's stream failed")
                gate.set()
                await put  # four chunks stored: the put succeeds
            finally:
                gate.set()
                await asyncio.gather(put, return_exceptions=True)
                gc.collect()  # the failed call and its generator are collected here
                await asyncio.sleep(0)
                await pipeline.close()

        asyncio.run(run())
    abandoned = [r.getMessage() for r in caplog.records if any(p in r.getMessage() for p in ABANDONED)]
    assert not abandoned, abandoned
