"""Group commit: concurrent commits of one user share etcd transactions, each keeping its own outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from dynostore.errors import AlreadyExists, ResourceExhausted
from dynostore.local import LocalFabric
from dynostore.registry import ObjectRecord, Registry, Usage, User


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFabric]:
    with LocalFabric(containers=0, root=tmp_path_factory.mktemp("group")) as made:
        yield made


def record(owner: str, key: str | None = None) -> ObjectRecord:
    """An inline object of one byte."""
    return ObjectRecord(
        key=key or uuid.uuid4().hex,
        owner=owner,
        catalog="c",
        name="",
        size=1,
        k=0,
        m=0,
        segment_size=0,
        inline=True,
        crc32=zlib.crc32(b"x"),
        data=b"x",
    )


class CountedRegistry(Registry):
    """A registry that counts the etcd transactions it sends with comparisons (the writes of commits)."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.writes = 0
        transaction = self.etcd.transaction

        async def counted(**kwargs: Any) -> Any:
            self.writes += bool(kwargs["compare"])
            return await transaction(**kwargs)

        self.etcd.transaction = counted


def run(fabric: LocalFabric, work: Any) -> Any:
    async def with_registry() -> Any:
        registry = CountedRegistry(fabric.etcd_address)
        try:
            return await work(registry)
        finally:
            await registry.close()

    return asyncio.run(with_registry())


def test_concurrent_commits_of_one_user_share_transactions(fabric: LocalFabric) -> None:
    async def work(registry: CountedRegistry) -> tuple[int, list[ObjectRecord | None], Usage]:
        records = [record("gina") for _ in range(40)]
        await registry.usage("gina")  # counted once up front, as a gateway has
        await asyncio.gather(*(registry.commit([r]) for r in records))
        found = await registry.get_objects([r.key for r in records])
        return registry.writes, found, await registry.usage("gina")

    writes, found, usage = run(fabric, work)
    assert all(r is not None for r in found)
    assert usage == Usage(40, 40)
    assert writes < 40  # one transaction each, and retries, before group commit


def test_an_existing_key_refuses_only_its_own_commit(fabric: LocalFabric) -> None:
    async def work(registry: CountedRegistry) -> tuple[list[BaseException | None], list[ObjectRecord | None], Usage]:
        taken = record("hal")
        await registry.commit([taken])
        groups = [[record("hal")] for _ in range(6)] + [[record("hal"), record("hal", taken.key)]]
        outcomes = await asyncio.gather(*(registry.commit(g) for g in groups), return_exceptions=True)
        found = await registry.get_objects([r.key for g in groups[:-1] for r in g] + [groups[-1][0].key])
        return outcomes, found, await registry.usage("hal")

    outcomes, found, usage = run(fabric, work)
    assert outcomes[:-1] == [None] * 6
    assert isinstance(outcomes[-1], AlreadyExists)
    assert found[-1] is None  # none of the refused group is committed
    assert all(r is not None for r in found[:-1])
    assert usage == Usage(7, 7)


def test_grouped_commits_never_exceed_the_quota_together(fabric: LocalFabric) -> None:
    quota = User(name="ida", quota_objects=5, quota_bytes=0)

    async def work(registry: CountedRegistry) -> tuple[list[BaseException | None], Usage]:
        outcomes = await asyncio.gather(
            *(registry.commit([record("ida")], quota=quota) for _ in range(12)), return_exceptions=True
        )
        return outcomes, await registry.usage("ida")

    outcomes, usage = run(fabric, work)
    assert outcomes.count(None) == 5
    assert all(isinstance(o, ResourceExhausted) for o in outcomes if o is not None)
    assert usage == Usage(5, 5)


def test_a_lone_commit_is_one_transaction(fabric: LocalFabric) -> None:
    async def work(registry: CountedRegistry) -> int:
        await registry.usage("jo")
        await registry.commit([record("jo")])
        return registry.writes

    assert run(fabric, work) == 1


def test_a_commit_that_lands_while_a_replace_by_name_looks_up_the_name_is_replaced(fabric: LocalFabric) -> None:
    """A plain put of the name, committed by this gateway during the replacement's lookup, does not outlive it."""

    plain, replacing = (dataclasses.replace(record("kim"), name="n") for _ in range(2))

    async def work(registry: CountedRegistry) -> tuple[list[str], list[ObjectRecord | None], Usage]:
        await registry.usage("kim")  # counted up front, as a gateway has
        look_up = registry._named

        async def racing(*args: Any) -> Any:
            found = await look_up(*args)
            if (await registry.get_objects([plain.key]))[0] is None:  # the first lookup only
                await registry.commit([plain])  # lands after the lookup, before the replacement's transaction
            return found

        registry._named = racing  # type: ignore[method-assign,assignment]
        replaced = await registry.commit_replacing(replacing, replace_name=True)
        found = await registry.get_objects([plain.key, replacing.key])
        return [r.key for r in replaced], found, await registry.usage("kim")

    replaced, found, usage = run(fabric, work)
    assert replaced == [plain.key]
    assert found[0] is None
    assert found[1] is not None
    assert usage == Usage(1, 1)


class LostAnswerRegistry(Registry):
    """A registry whose next commit transaction once ``armed`` lands but is answered as failed: an answer lost.

    Before that answer, another gateway's commit of the same user lands. That is
    what happens when the etcd leader dies after applying a commit: the etcd
    client's read-back finds the usage counter changed by the other commit, so
    it cannot tell the transaction landed, and answers that it failed.
    """

    def __init__(self, address: str, meddle: Any) -> None:
        super().__init__(address)
        self.armed = True
        self.lost = 0
        transaction = self.etcd.transaction

        async def losing(**kwargs: Any) -> Any:
            ok, replies = await transaction(**kwargs)
            if ok and kwargs["compare"] and self.armed:
                self.armed = False
                self.lost += 1
                await meddle()
                return False, []
            return ok, replies

        self.etcd.transaction = losing


def run_losing_an_answer(fabric: LocalFabric, owner: str, work: Any) -> tuple[int, Any]:
    """Run ``work`` on a :class:`LostAnswerRegistry` beside another gateway; (answers lost, what ``work`` returned)."""

    async def with_registries() -> tuple[int, Any]:
        other = Registry(fabric.etcd_address)
        registry = LostAnswerRegistry(fabric.etcd_address, lambda: other.commit([record(owner)]))
        try:
            await registry.usage(owner)  # counted once up front, as a gateway has
            done = await work(registry)
            return registry.lost, done
        finally:
            await registry.close()
            await other.close()

    return asyncio.run(with_registries())


def test_a_commit_whose_answer_was_lost_after_it_landed_succeeds(fabric: LocalFabric) -> None:
    """Before: ``AlreadyExists`` for the object just committed, and the put failed though it was whole."""
    mine = [[record("lou")], [record("lou"), record("lou")]]

    async def work(registry: LostAnswerRegistry) -> tuple[list[ObjectRecord | None], Usage]:
        await asyncio.gather(*(registry.commit(group) for group in mine))  # the groups share one transaction
        return await registry.get_objects([r.key for group in mine for r in group]), await registry.usage("lou")

    lost, (found, usage) = run_losing_an_answer(fabric, "lou", work)
    assert lost == 1
    assert [r.key if r else None for r in found] == [r.key for group in mine for r in group]
    assert usage == Usage(4, 4)  # each counted once: the other gateway's and these three


def test_a_replacement_whose_answer_was_lost_after_it_landed_succeeds(fabric: LocalFabric) -> None:
    old = dataclasses.replace(record("max"), name="n")
    new = dataclasses.replace(record("max"), name="n")

    async def work(registry: LostAnswerRegistry) -> tuple[list[str], list[ObjectRecord | None], Usage]:
        registry.armed = False
        await registry.commit([old])
        registry.armed = True
        replaced = await registry.commit_replacing(new, replace_name=True)
        return [r.key for r in replaced], await registry.get_objects([old.key, new.key]), await registry.usage("max")

    lost, (replaced, found, usage) = run_losing_an_answer(fabric, "max", work)
    assert lost == 1
    assert replaced == [old.key]  # its chunks are the caller's to delete
    assert found[0] is None
    assert found[1] is not None
    assert usage == Usage(2, 2)  # the other gateway's object and the new version
