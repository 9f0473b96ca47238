"""The coalescer: lone calls at once, concurrent ones in batches, each member's outcome its own."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import pytest

from dynostore.client.coalesce import Coalescer
from dynostore.errors import DynoStoreError, NotFound


class Recorder:
    """A runner that records its batches and answers each item after ``delay``; items named 'bad' fail."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.batches: list[tuple[Hashable, list[str]]] = []

    async def __call__(self, group: Hashable, items: list[str]) -> Sequence[str | DynoStoreError]:
        self.batches.append((group, list(items)))
        await asyncio.sleep(self.delay)
        return [NotFound(f"no {item}") if item == "bad" else item.upper() for item in items]


def test_a_lone_call_goes_at_once_alone() -> None:
    async def main() -> None:
        runner = Recorder()
        coalescer: Coalescer[str, str] = Coalescer(runner, max_wait=10.0)
        assert await coalescer.submit("g", "a") == "A"
        assert await coalescer.submit("g", "b") == "B"
        assert runner.batches == [("g", ["a"]), ("g", ["b"])]
        assert coalescer.batches == 0

    asyncio.run(main())


def test_concurrent_calls_join_batches_and_fail_alone() -> None:
    async def main() -> None:
        runner = Recorder()
        coalescer: Coalescer[str, str] = Coalescer(runner, max_in_flight=1, max_wait=10.0)
        items = ["a", "b", "bad", "c", "d"]
        outcomes = await asyncio.gather(*(coalescer.submit("g", i) for i in items), return_exceptions=True)
        assert outcomes[:2] == ["A", "B"]
        assert isinstance(outcomes[2], NotFound)
        assert outcomes[3:] == ["C", "D"]
        # The first went alone; the others, arriving while it ran, went together when it ended.
        assert runner.batches == [("g", ["a"]), ("g", ["b", "bad", "c", "d"])]
        assert (coalescer.batches, coalescer.batched) == (1, 4)

    asyncio.run(main())


def test_groups_never_mix_and_batches_are_bounded() -> None:
    async def main() -> None:
        runner = Recorder()
        coalescer: Coalescer[str, str] = Coalescer(runner, max_in_flight=1, max_batch=2, max_wait=10.0)
        calls = [coalescer.submit(group, item) for group in ("x", "y") for item in ("a", "b", "c", "d")]
        assert await asyncio.gather(*calls) == ["A", "B", "C", "D"] * 2
        for group, items in runner.batches:
            assert len(items) <= 2
            assert group in ("x", "y")
        assert sorted(i for g, items in runner.batches if g == "x" for i in items) == ["a", "b", "c", "d"]

    asyncio.run(main())


def test_nobody_waits_longer_than_max_wait_for_company() -> None:
    async def main() -> None:
        runner = Recorder(delay=30.0)  # the first batch would hold the slot for 30 s
        coalescer: Coalescer[str, str] = Coalescer(runner, max_in_flight=1, max_wait=0.01)
        first = asyncio.ensure_future(coalescer.submit("g", "slow"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(coalescer.submit("g", "next"))
        # The second goes once max_wait is over, though the first still runs.
        for _ in range(200):
            if len(runner.batches) == 2:
                break
            await asyncio.sleep(0.01)
        assert runner.batches == [("g", ["slow"]), ("g", ["next"])]
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)

    asyncio.run(main())


def test_a_runner_that_breaks_fails_its_members_and_is_not_swallowed() -> None:
    async def broken(group: Hashable, items: list[str]) -> Sequence[str | DynoStoreError]:
        raise RuntimeError("bug")

    async def main() -> None:
        coalescer: Coalescer[str, str] = Coalescer(broken)
        with pytest.raises(RuntimeError, match="bug"):
            await coalescer.submit("g", "a")

    asyncio.run(main())
