"""Group commit for the SDK: concurrent single calls of one client gathered into batch calls.

Workflows put and get small objects one at a time from many threads or
tasks; each call alone costs control round trips and chunk calls. A
:class:`Coalescer` runs a lone call at once, but a call that arrives while
``max_in_flight`` calls of its group are already running joins a forming
batch instead, which goes when a running call ends or ``max_wait`` seconds
after its first member, whichever comes first (so none waits longer than
that for company), or as soon as it holds ``max_batch`` members.

A batch's runner returns one outcome per member, a result or an error, so a
member that fails fails alone: the runners here fall back to one call per
member when a batch call fails as a whole (a put batch is atomic: nothing of
it was committed), except where the failure leaves open whether the batch
landed (its members then get that error, as a single call would).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from dynostore.errors import DynoStoreError

Item = TypeVar("Item")
Result = TypeVar("Result")

# A batch's runner: given the group and its members, one outcome per member (its result, or its error).
Runner = Callable[[Hashable, list[Item]], Awaitable[Sequence[Result | DynoStoreError]]]


@dataclass
class _Group(Generic[Item, Result]):
    """The calls of one group (e.g. puts of one token into one catalog)."""

    running: int = 0
    forming: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Coalescer(Generic[Item, Result]):
    """Run calls alone when their group is idle, else gathered into batches (see the module docstring)."""

    def __init__(
        self, run: Runner[Item, Result], *, max_batch: int = 256, max_wait: float = 0.002, max_in_flight: int = 2
    ) -> None:
        """Batches go to ``run(group, items)``, which returns one outcome per item, in order."""
        if max_batch < 1 or max_in_flight < 1 or max_wait < 0:
            raise ValueError("max_batch and max_in_flight must be at least 1, max_wait at least 0.")
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_in_flight = max_in_flight
        self._groups: dict[Hashable, _Group[Item, Result]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # How many batches (of two or more) and members went; for tests and benchmarks.
        self.batches = 0
        self.batched = 0

    async def submit(self, group: Hashable, item: Item) -> Result:
        """The outcome of ``item``: run alone, or as a member of a batch of its group."""
        state = self._groups.setdefault(group, _Group())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        state.forming.append((item, future))
        if state.running < self.max_in_flight or len(state.forming) >= self.max_batch:
            self._flush(group, state)
        elif state.timer is None:
            state.timer = asyncio.get_running_loop().call_later(self.max_wait, self._flush, group, state)
        return await future

    def _flush(self, group: Hashable, state: _Group[Item, Result]) -> None:
        """Send the forming batch of ``group`` now."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        members, state.forming = state.forming[: self.max_batch], state.forming[self.max_batch :]
        if not members:
            return
        if len(members) > 1:
            self.batches += 1
            self.batched += len(members)
        state.running += 1
        task = asyncio.get_running_loop().create_task(self._send(group, state, members))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, group: Hashable, state: _Group[Item, Result], members: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        try:
            outcomes: Sequence[Result | DynoStoreError] = await self._run(group, [item for item, _ in members])
            if len(outcomes) != len(members):
                raise AssertionError(f"A batch of {len(members)} came back with {len(outcomes)} outcomes.")
        except BaseException as exc:  # the runner itself failed (a bug, or cancelled): everyone hears of it
            for _, future in members:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), outcome in zip(members, outcomes, strict=True):
                if future.done():
                    continue  # its caller was cancelled
                if isinstance(outcome, DynoStoreError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        finally:
            state.running -= 1
            if state.forming:
                self._flush(group, state)
            elif not state.running and self._groups.get(group) is state:
                del self._groups[group]

    async def close(self) -> None:
        """Wait for the batches on their way."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def each_alone(call: Callable[[Item], Awaitable[Result]], items: Sequence[Item]) -> list[Result | DynoStoreError]:
    """Run ``call`` for every item at once; each outcome its result or its error."""

    async def one(item: Item) -> Result | DynoStoreError:
        try:
            return await call(item)
        except DynoStoreError as exc:
            return exc

    return list(await asyncio.gather(*(one(item) for item in items)))
