"""A put whose commit may have landed never deletes its chunks; a refused one cleans up.

The gateway's answer to ``CommitPut`` is lost here on purpose (the call goes
through, then the client sees ``UNAVAILABLE`` or is cancelled), which is what
a gateway killed between its etcd transaction and its reply looks like.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from dynostore.client.pipeline import Pipeline, PutItem
from dynostore.errors import PermissionDenied, Unavailable
from dynostore.local import LocalFabric
from tests.integration.conftest import chunk_paths

SIZE = 3 * 1024 * 1024 + 17  # four segments: a streamed put
WHOLE = 200 * 1024  # one segment: whole chunks, batched


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFabric]:
    with LocalFabric(containers=5, root=tmp_path_factory.mktemp("commit")) as fabric:
        yield fabric


@pytest.fixture(scope="module")
def token(fabric: LocalFabric) -> str:
    return fabric.create_user("committer")


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="failed to connect"
    )


def item(data: bytes) -> PutItem:
    async def segments(size: int) -> Any:
        for start in range(0, max(len(data), 1), size):
            yield data[start : start + size]

    return PutItem(segments, len(data))


async def read(pipeline: Pipeline, key: str, token: str) -> bytes:
    return b"".join([bytes(s) async for s in pipeline.get(key, token=token)])


class LostReply:
    """Wraps the stub's CommitPut: the first call lands, its answer is lost; then the gateway is 'down'."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        locate_down: bool,
        then: BaseException | None = None,
        retries_reach: bool = False,
    ) -> None:
        self.retries_reach = retries_reach
        stub = pipeline.gateway_stub()
        self.commit, self.locate = stub.CommitPut, stub.Locate
        self.stub, self.locate_down, self.then = stub, locate_down, then
        self.landed: list[str] = []

    async def lossy_commit(self, request: Any, **kwargs: Any) -> Any:
        if not self.landed:
            await self.commit(request, **kwargs)
            self.landed += [o.key for o in request.objects]
        elif self.retries_reach:
            return await self.commit(request, **kwargs)  # the gateway answers AlreadyExists
        raise self.then or unavailable()

    async def down_locate(self, request: Any, **kwargs: Any) -> Any:
        raise unavailable()

    def __enter__(self) -> LostReply:
        self.stub.CommitPut = self.lossy_commit
        if self.locate_down:
            self.stub.Locate = self.down_locate
        return self

    def __exit__(self, *exc: object) -> None:
        self.stub.CommitPut, self.stub.Locate = self.commit, self.locate


@pytest.mark.parametrize("retries_reach", [False, True], ids=["retries-lost", "retry-meets-its-commit"])
@pytest.mark.parametrize("size", [SIZE, WHOLE])
def test_lost_commit_reply_is_found_out(fabric: LocalFabric, token: str, size: int, retries_reach: bool) -> None:
    """The gateway still answers Locate: the client learns that its commit landed and returns the key."""
    data = os.urandom(size)

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway, retries=2)
        try:
            with LostReply(pipeline, locate_down=False, retries_reach=retries_reach) as lost:
                (key,) = await pipeline.put([item(data)], token=token, catalog="c")
            assert lost.landed == [key]
            assert await read(pipeline, key, token) == data
        finally:
            await pipeline.close()

    asyncio.run(run())


@pytest.mark.parametrize("size", [SIZE, WHOLE])
def test_unknown_commit_outcome_keeps_the_chunks(fabric: LocalFabric, token: str, size: int) -> None:
    """The gateway is gone after the commit landed: the put raises, and the object is whole later."""
    data = os.urandom(size)

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway, retries=2)
        try:
            with LostReply(pipeline, locate_down=True) as lost, pytest.raises(Unavailable, match="outcome is unknown"):
                await pipeline.put([item(data)], token=token, catalog="c")
            (key,) = lost.landed
            assert len(chunk_paths(fabric, key)) == 5
            assert await read(pipeline, key, token) == data
        finally:
            await pipeline.close()

    asyncio.run(run())


def test_cancelled_commit_keeps_the_chunks(fabric: LocalFabric, token: str) -> None:
    """A put cancelled while its commit is in flight may have been committed: nothing is deleted."""
    data = os.urandom(SIZE)

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway)
        try:
            with (
                LostReply(pipeline, locate_down=True, then=asyncio.CancelledError()) as lost,
                pytest.raises(asyncio.CancelledError),
            ):
                await pipeline.put([item(data)], token=token, catalog="c")
            (key,) = lost.landed
            assert await read(pipeline, key, token) == data
        finally:
            await pipeline.close()

    asyncio.run(run())


def test_refused_commit_removes_its_chunks(fabric: LocalFabric, token: str) -> None:
    """A commit the gateway refused surely did not land: its chunks are deleted at once."""
    data = os.urandom(SIZE)

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway)
        stub = pipeline.gateway_stub()
        commit = stub.CommitPut
        keys: list[str] = []

        async def forged(request: Any, **kwargs: Any) -> Any:
            keys.extend(o.key for o in request.objects)
            for o in request.objects:
                o.plan_ticket = "forged"
            return await commit(request, **kwargs)

        stub.CommitPut = forged
        try:
            with pytest.raises(PermissionDenied):
                await pipeline.put([item(data)], token=token, catalog="c")
            (key,) = keys
            assert chunk_paths(fabric, key) == []
        finally:
            await pipeline.close()

    asyncio.run(run())


@pytest.mark.parametrize("retries_reach", [False, True], ids=["retries-lost", "retry-meets-its-commit"])
@pytest.mark.parametrize("size", [100, WHOLE], ids=["inline", "chunked"])
def test_lost_reply_of_a_replacement_is_found_out(
    fabric: LocalFabric, token: str, size: int, retries_reach: bool
) -> None:
    """A replacement by key whose answer is lost is recognised as committed: its version is the key's."""
    data = os.urandom(size)

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway, retries=2)
        try:
            (key,) = await pipeline.put([item(os.urandom(size))], token=token, catalog="c")
            with LostReply(pipeline, locate_down=False, retries_reach=retries_reach) as lost:
                assert await pipeline.put([replacing(data, key)], token=token, catalog="c") == [key]
            assert len(lost.landed) == 1
            assert await read(pipeline, key, token) == data
        finally:
            await pipeline.close()

    asyncio.run(run())


def test_a_replacement_that_did_not_land_is_not_taken_for_another(fabric: LocalFabric, token: str) -> None:
    """Another put replaced the key meanwhile, with as many bytes (inline: no chunks to tell them apart).

    Only the version tells that the record is not ours: the put's outcome is unknown, not a success.
    """
    ours, theirs = os.urandom(100), os.urandom(100)

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway, retries=2)
        other = Pipeline(fabric.gateway)
        stub = pipeline.gateway_stub()
        commit = stub.CommitPut

        async def lost_before_landing(request: Any, **kwargs: Any) -> Any:
            await other.put([replacing(theirs, key)], token=token, catalog="c")
            raise unavailable()

        try:
            (key,) = await pipeline.put([item(os.urandom(100))], token=token, catalog="c")
            stub.CommitPut = lost_before_landing
            with pytest.raises(Unavailable, match="outcome is unknown"):
                await pipeline.put([replacing(ours, key)], token=token, catalog="c")
            stub.CommitPut = commit
            assert await read(pipeline, key, token) == theirs
        finally:
            stub.CommitPut = commit
            await pipeline.close()
            await other.close()

    asyncio.run(run())


def replacing(data: bytes, key: str) -> PutItem:
    """A put of ``data`` that replaces object ``key``."""
    return dataclasses.replace(item(data), replace_key=key)
