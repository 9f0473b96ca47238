"""A get that races an evict of its key is NotFound, never DataLoss."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from dynostore._proto import gateway_pb2
from dynostore.client.pipeline import Pipeline
from dynostore.client.repair import repair
from dynostore.errors import NotFound
from dynostore.local import LocalFabric
from tests.integration.conftest import chunk_paths, eventually

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFabric]:
    with LocalFabric(containers=5, root=tmp_path_factory.mktemp("races")) as fabric:
        yield fabric


@pytest.fixture(scope="module")
def token(fabric: LocalFabric) -> str:
    return fabric.create_user("racer")


@pytest.mark.parametrize("size", [100 * 1024, 3 * MiB])
def test_get_of_an_object_evicted_after_locate_is_not_found(fabric: LocalFabric, token: str, size: int) -> None:
    """Located, then evicted and its chunks deleted, then read: NotFound, by get and by get_many."""
    with fabric.client() as client:
        keys = [client.put(data=os.urandom(size), token_user=token, catalog="races") for _ in range(2)]

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway)
        try:
            locations = await pipeline.locate(keys, token)
            for key in keys:
                assert await pipeline.evict(key, token)
            assert eventually(lambda: not any(chunk_paths(fabric, key) for key in keys))
            original = pipeline.locate
            asked_fresh: list[bool] = []

            async def recorded_locate(asked: list[str], given: str, *, fresh: bool = False) -> list[object]:
                asked_fresh.append(fresh)
                return list(await original(asked, given, fresh=fresh))

            pipeline.locate = recorded_locate  # type: ignore[assignment,method-assign]
            with pytest.raises(NotFound, match="evicted while it was read"):
                _ = [s async for s in pipeline.read_checked(locations[0], token)]
            # Asked past the gateway's cache, which may not know yet of an evict made through another gateway.
            assert asked_fresh == [True]

            async def stale_locate(asked: list[str], given: str) -> list[object]:
                pipeline.locate = original  # type: ignore[method-assign]
                return list(locations)

            pipeline.locate = stale_locate  # type: ignore[assignment,method-assign]
            assert await pipeline.get_many(keys, token) == [None, None]
        finally:
            await pipeline.close()

    asyncio.run(run())


def test_mixed_threads_never_see_data_loss(fabric: LocalFabric, token: str) -> None:
    """16 threads put, get, test and evict a shared set of keys; a get is bytes or NotFound, nothing else."""
    rng = random.Random(1412)
    print(f"seed 1412, {fabric.gateway}")
    objects: dict[str, bytes] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    with fabric.client() as client:

        def work(seed: int) -> None:
            rnd = random.Random(seed)
            try:
                for _ in range(25):
                    action = rnd.random()
                    with lock:
                        key = rnd.choice(list(objects)) if objects else None
                    if key is None or action < 0.3:
                        data = os.urandom(rnd.choice([10, 50_000, 400_000, 2 * MiB]))
                        new = client.put(data=data, token_user=token, catalog="races")
                        with lock:
                            objects[new] = data
                    elif action < 0.75:
                        with lock:
                            expected = objects.get(key)
                        try:
                            got = client.get(key=key, token_user=token)
                        except NotFound:
                            continue
                        assert expected is None or got == expected
                    elif action < 0.85:
                        client.exists(key=key, token_user=token)
                    else:
                        client.evict(key=key, token_user=token)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(rng.random(),)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_a_repair_of_an_object_evicted_meanwhile_is_not_found(fabric: LocalFabric, token: str) -> None:
    """Planned, then evicted and its chunks deleted before the repair reads them: NotFound, not DataLoss."""
    with fabric.client() as client:
        key = client.put(data=os.urandom(300_000), token_user=token, catalog="races")
    chunk_paths(fabric, key)[0].unlink()  # something for the repair to rebuild

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway)
        original = pipeline.read

        async def evicted_first(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
            assert await pipeline.evict(key, token)
            assert eventually(lambda: not chunk_paths(fabric, key))
            async for segment in original(*args, **kwargs):
                yield segment

        pipeline.read = evicted_first  # type: ignore[method-assign]
        try:
            with pytest.raises(NotFound, match="evicted while it was repaired"):
                await repair(pipeline, key, token, verify=True)
        finally:
            await pipeline.close()

    asyncio.run(run())


def test_a_read_of_moved_chunks_with_one_container_away_locates_again(fabric: LocalFabric, token: str) -> None:
    """A stale location (chunks moved since, one container away): not Unavailable, but the new places read."""
    data = os.urandom(300_000)
    with fabric.client() as client:
        key = client.put(data=data, token_user=token, catalog="races")

    async def run() -> None:
        pipeline = Pipeline(fabric.gateway)
        try:
            location = await pipeline.locate_one(key, token)
            stale = gateway_pb2.Location()
            stale.CopyFrom(location)
            # Chunks 1 and 2 as if moved since (each where the other is), chunk 0 out of reach: at most m gone
            # and one away, so the read alone would say Unavailable.
            stale.chunks[0].address = "127.0.0.1:1"
            stale.chunks[1].address, stale.chunks[2].address = location.chunks[2].address, location.chunks[1].address
            assert b"".join([s async for s in pipeline.read_checked(stale, token)]) == data
        finally:
            await pipeline.close()

    asyncio.run(run())
