"""etcd transactions whose answer was lost after they landed, while other gateways changed what they wrote.

The etcd client sends such a transaction again on the next member; its
compares are false then, and it must find out whether the first copy landed.
Reading the keys it writes is not enough when another gateway changed one of
them since (a user's usage counter): etcd's history tells. Real etcd; the lost
answer is made by a stub that lets the transaction through, lets the other
gateway's commit land, then fails UNAVAILABLE as a dying member does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from aetcd import rpc

from dynostore.local import LocalFabric
from dynostore.registry import ObjectRecord, Registry, Usage
from tests.integration.test_group_commit import record


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFabric]:
    with LocalFabric(containers=0, root=tmp_path_factory.mktemp("lost")) as made:
        yield made


async def lose_next_answer(registry: Registry, meddle: Callable[[], Awaitable[Any]]) -> list[int]:
    """Make ``registry``'s next guarded etcd transaction land, then ``meddle``, then fail UNAVAILABLE.

    Returns a list that gets the revision of each answer lost.
    """
    await registry.etcd.get(b"/test/connected")  # the client makes its stubs on its first call
    kv = registry.etcd.kvstub
    real_stub = kv._stub
    lost: list[int] = []

    class Losing:
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        async def Txn(self, request: Any, **kwargs: Any) -> Any:
            reply = await self._real.Txn(request, **kwargs)
            if not lost and request.compare and reply.succeeded:
                lost.append(reply.header.revision)
                await meddle()
                empty = grpc.aio.Metadata()
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, empty, empty, "injected: the answer lost")
            return reply

    kv._stub = lambda index: Losing(real_stub(index))  # type: ignore[method-assign]
    return lost


def run_with_two_gateways(fabric: LocalFabric, work: Callable[[Registry, Registry], Awaitable[Any]]) -> Any:
    """Run ``work(registry, other)`` on two registries of one etcd, as two gateways have."""

    async def main() -> Any:
        registry, other = Registry(fabric.etcd_address), Registry(fabric.etcd_address)
        try:
            return await work(registry, other)
        finally:
            await registry.close()
            await other.close()

    return asyncio.run(main())


@pytest.mark.parametrize("batch", [False, True])
def test_an_evict_whose_answer_was_lost_after_it_landed_says_the_object_existed(
    fabric: LocalFabric, batch: bool
) -> None:
    """Before: the object was gone, yet the evict said it had not existed (and left its chunks to the scrub)."""
    owner = f"eve{int(batch)}"

    async def work(registry: Registry, other: Registry) -> tuple[list[int], list[ObjectRecord | None], Usage]:
        mine = record(owner)
        await registry.commit([mine])
        await registry.usage(owner)  # counted once up front, as a gateway has
        lost = await lose_next_answer(registry, lambda: other.commit([record(owner)]))
        removed = await registry.delete_objects([mine.key]) if batch else [await registry.delete_object(mine.key)]
        assert await registry.get_objects([mine.key], fresh=True) == [None]
        return lost, removed, await other.usage(owner)

    lost, removed, usage = run_with_two_gateways(fabric, work)
    assert len(lost) == 1
    assert removed[0] is not None  # the record, so the gateway deletes the chunks it names
    assert usage == Usage(1, 1)  # only the other gateway's object is left


def test_a_transaction_whose_answer_was_lost_is_found_in_etcd_history(fabric: LocalFabric) -> None:
    """The etcd client itself reports success, at the revision it landed at, though a key it wrote changed since."""

    async def work(registry: Registry, other: Registry) -> tuple[list[int], bool, list[Any]]:
        tx = registry.etcd.transactions
        key, counter = f"/test/lost/{uuid.uuid4().hex}".encode(), b"/test/lost/counter"

        async def bump() -> None:
            await other.etcd.put(counter, b"another gateway's")

        lost = await lose_next_answer(registry, bump)
        ok, replies = await registry.etcd.transaction(
            compare=[tx.create(key) == 0],
            success=[tx.put(key, b"mine"), tx.put(counter, b"mine")],
            failure=[],
        )
        return lost, ok, replies

    lost, ok, replies = run_with_two_gateways(fabric, work)
    assert ok
    assert replies[0].response_put.header.revision == lost[0]


def test_a_lost_answer_whose_history_was_compacted_is_reported_failed_not_raised(fabric: LocalFabric) -> None:
    """With the history gone the outcome cannot be told from another's write: failed, as before (never an error)."""

    async def work(registry: Registry, other: Registry) -> tuple[bool, bytes | None]:
        tx = registry.etcd.transactions
        key, counter = f"/test/lost/{uuid.uuid4().hex}".encode(), b"/test/lost/compacted"

        async def bump_and_compact() -> None:
            await other.etcd.put(counter, b"another gateway's")
            now = (await other.etcd.get(counter)).mod_revision
            await other.etcd.kvstub.Compact(rpc.CompactionRequest(revision=now, physical=True))

        await lose_next_answer(registry, bump_and_compact)
        ok, _ = await registry.etcd.transaction(
            compare=[tx.create(key) == 0],
            success=[tx.put(key, b"mine"), tx.put(counter, b"mine")],
            failure=[],
        )
        found = await registry.etcd.get(key)
        return ok, found.value if found else None

    ok, value = run_with_two_gateways(fabric, work)
    assert not ok
    assert value == b"mine"  # it did land: the answer is the one the lost history allows
