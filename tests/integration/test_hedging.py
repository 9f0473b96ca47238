"""Hedged reads and writes against a frozen (SIGSTOPped) container, on a fabric of this module's own.

A frozen container keeps its connections open and answers nothing: without
hedging a read of its chunk waits ``fragment_timeout`` (20 s by default)
before it turns to parity, and a put waits as long for its chunk. Each call
here gets a deadline well inside that; hedging must finish inside it, and
without hedging the same get must not.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from dynostore._proto.common_pb2 import ContainerInfo
from dynostore.client import AsyncClient, Client
from dynostore.client.latency import HedgePolicy, LatencyTracker
from dynostore.local import ContainerHandle, LocalFabric
from tests.integration.conftest import eventually

MiB = 1024 * 1024
# A call's deadline: far above what a hedged call needs, far below the 20 s fragment_timeout.
DEADLINE = 8.0
# 5000 bytes is one coded segment (whole chunks, one unary call each); 8 MiB streams three segments.
SIZES = [5000, 8 * MiB]


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFabric]:
    """Containers stay registered while frozen (a 60 s lease); repair sweeps run every second."""
    with LocalFabric(
        5,
        tmp_path_factory.mktemp("hedging"),
        repair_interval=1.0,
        gateway_args=["--container-ttl", "60"],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def token(fabric: LocalFabric) -> str:
    return fabric.create_user("hedger")


@contextmanager
def frozen(container: ContainerHandle) -> Iterator[None]:
    """The container stopped (SIGSTOP) for the duration, continued (SIGCONT) after, even on failure."""
    pid = container.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def holder(fabric: LocalFabric, token: str, key: str, index: int) -> ContainerHandle:
    """The container holding chunk ``index`` of ``key``."""
    with fabric.client() as client:
        (chunk,) = [c for c in client.stat(key=key, token_user=token).chunks if c.index == index]
    (container,) = [c for c in fabric.containers if c.container_id == chunk.container_id]
    return container


async def leftover_tasks() -> list[asyncio.Task[object]]:
    """Tasks on this loop other than the caller's, once gRPC's own have had a few turns to end."""
    for _ in range(100):
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not left:
            break
        await asyncio.sleep(0.01)
    return left


@pytest.mark.parametrize("size", SIZES)
def test_hedged_get_reads_around_a_frozen_data_chunk(fabric: LocalFabric, token: str, size: int) -> None:
    """Clients connected to every container before it froze: a hedged get reads parity, a plain one waits."""
    data = os.urandom(size)
    with fabric.client() as client:
        key = client.put(data=data, token_user=token, catalog="hedge")
    stuck = holder(fabric, token, key, 0)

    async def scenario() -> None:
        async with (
            AsyncClient(fabric.gateway) as hedged,
            AsyncClient(fabric.gateway) as batched,
            AsyncClient(fabric.gateway, hedging=False) as plain,
        ):
            for client in (hedged, batched, plain):  # connected (a connection to a frozen process fails at once)
                assert await client.get(key=key, token_user=token) == data
            for client in (hedged, batched):  # forget the warm-up (connection set-up times): no chunk is avoided
                client._pipeline.latency = LatencyTracker()
            with frozen(stuck):
                assert await asyncio.wait_for(hedged.get(key=key, token_user=token), DEADLINE) == data
                assert hedged.hedge_counts.extra_reads >= 1
                batch = await asyncio.wait_for(batched.get_batch([key, key], token_user=token), DEADLINE)
                assert batch == [data, data]
                assert await leftover_tasks() == []
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(plain.get(key=key, token_user=token), DEADLINE)
            assert await leftover_tasks() == []

    asyncio.run(scenario())


def test_far_chunks_get_a_spare_read_up_front(fabric: LocalFabric, token: str) -> None:
    """Chunks expected to be slow (here: always) get a spare read beside the k; it carries a frozen one's part."""
    data = os.urandom(5000)  # one segment: read whole, batched
    with fabric.client() as client:
        key = client.put(data=data, token_user=token, catalog="hedge")
    stuck = holder(fabric, token, key, 0)

    async def scenario() -> None:
        async with (
            AsyncClient(fabric.gateway, hedge=HedgePolicy(spare_after=0.0)) as spared,
            AsyncClient(fabric.gateway) as near,
        ):
            for client in (spared, near):
                assert await client.get_batch([key], token_user=token) == [data]  # connected
            assert spared.hedge_counts.spare_reads >= 1
            assert near.hedge_counts.spare_reads == 0  # these containers answer in milliseconds: no spare
            spared._pipeline.latency = LatencyTracker()  # no chunk avoided: chunk 0 is among those read
            before = spared.hedge_counts.spare_reads
            with frozen(stuck):
                batch = await asyncio.wait_for(spared.get_batch([key], token_user=token), DEADLINE)
                spared._pipeline.latency = LatencyTracker()
                alone = await asyncio.wait_for(spared.get(key=key, token_user=token), DEADLINE)
            assert batch == [data]
            assert alone == data
            assert spared.hedge_counts.spare_reads == before + 2  # the batched read, and the lone get's
            assert spared.hedge_counts.extra_reads == 0  # the spares' chunks sufficed: no lag, no second round
            assert await leftover_tasks() == []

    asyncio.run(scenario())


class InOrder:
    """Chunk i goes to container i (so a put places a chunk on the frozen one)."""

    def __init__(self, fabric: LocalFabric) -> None:
        self.fabric = fabric

    def place(self, containers: Sequence[ContainerInfo], n: int, chunk_bytes: int) -> list[ContainerInfo]:
        return [ContainerInfo(id=c.container_id, address=c.address) for c in self.fabric.containers[:n]]


@pytest.mark.parametrize("size", SIZES)
def test_put_records_a_frozen_chunk_missing_and_the_sweep_rebuilds_it(
    fabric: LocalFabric, token: str, size: int
) -> None:
    data = os.urandom(size)
    stuck = fabric.containers[1]  # holds data chunk 1

    async def put() -> str:
        async with AsyncClient(fabric.gateway, placement=InOrder(fabric)) as client:
            await client.put(data=data, token_user=token, catalog="hedge")  # connected to every container
            with frozen(stuck):
                key = await asyncio.wait_for(client.put(data=data, token_user=token, catalog="hedge"), DEADLINE)
                assert await leftover_tasks() == []
                assert client.hedge_counts.writes_given_up == 1
                stat = await client.stat(key=key, token_user=token)
                assert [(c.container_id, c.stored) for c in stat.chunks] == [
                    (c.container_id, c is not stuck) for c in fabric.containers
                ]
                assert await client.get(key=key, token_user=token) == data  # from the other four meanwhile
                if size <= 5000:  # a batch: each object committed with its frozen chunk missing
                    putting = client.put_batch([data] * 3, token_user=token, catalog="h")
                    batch = await asyncio.wait_for(putting, DEADLINE)
                    assert client.hedge_counts.writes_given_up == 4
                    for other in batch:
                        stat = await client.stat(key=other, token_user=token)
                        assert [c.stored for c in stat.chunks] == [c is not stuck for c in fabric.containers]
            return key

    key = asyncio.run(put())
    with Client(fabric.gateway) as client:
        assert eventually(lambda: not client.stat(key=key, token_user=token).degraded, within=40)
        assert all(c.stored for c in client.stat(key=key, token_user=token).chunks)
        assert client.get(key=key, token_user=token) == data
        assert client.repair(key, token_user=token, verify=True) == 0  # the rebuilt chunk is sound
