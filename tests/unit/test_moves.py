"""Choosing where moved chunks go, chunk sizes, bandwidth limits and the words drains print."""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import Counter

import pytest

from dynostore._proto import common_pb2, gateway_pb2
from dynostore.cli.parser import container_parser
from dynostore.client import moves
from dynostore.client.moves import MIN_BANDWIDTH, Bandwidth, _targets, chunk_size
from dynostore.client.placement import SpreadPlacement
from dynostore.client.status import MoveStatus
from dynostore.erasure import Codec
from dynostore.errors import InvalidArgument


class _Placing:
    """The one part of a pipeline that target choice uses."""

    placement = SpreadPlacement(random.Random(7))


def _plan(
    chunks: list[str], live: dict[str, str], draining: dict[str, str] | None = None
) -> gateway_pb2.PlanRepairResponse:
    """A PlanRepair reply: chunk ``i`` on container ``chunks[i]``; ``live``/``draining``: container id -> site."""

    def info(cid: str, site: str) -> common_pb2.ContainerInfo:
        return common_pb2.ContainerInfo(id=cid, site=site, address=f"{cid}:1")

    plan = gateway_pb2.PlanRepairResponse(
        containers=[info(c, s) for c, s in live.items()],
        draining=[info(c, s) for c, s in (draining or {}).items()],
    )
    plan.location.chunks.extend(
        common_pb2.ChunkLocation(index=i, container_id=c, address=f"{c}:1", stored=True) for i, c in enumerate(chunks)
    )
    return plan


def _choose(plan: gateway_pb2.PlanRepairResponse, source: str, **options: object) -> tuple[list[str], list[int]]:
    leaving = [c for c in plan.location.chunks if c.container_id == source]
    chosen, stuck = _targets(_Placing(), plan, leaving, 1000, options.get("allowed"), bool(options.get("keep_sites")))  # type: ignore[arg-type]
    return [t.container.id for t, _ in chosen], stuck


def test_a_drained_chunk_goes_to_a_container_holding_none_on_the_emptiest_site() -> None:
    # Chunks on a1 (draining), a2, a4, b1, b2: a3, b3 and c1 hold none; site c holds none of its chunks.
    live = {"a2": "a", "a3": "a", "a4": "a", "b1": "b", "b2": "b", "b3": "b", "c1": "c"}
    plan = _plan(["a1", "a2", "a4", "b1", "b2"], live, {"a1": "a"})
    for _ in range(20):
        assert _choose(plan, "a1") == (["c1"], [])


def test_a_chunk_with_nowhere_to_go_is_reported_stuck() -> None:
    plan = _plan(["a", "b", "c"], {"b": "s", "c": "s"}, {"a": "s"})
    assert _choose(plan, "a") == ([], [0])


def test_two_chunks_leaving_one_container_go_to_two_different_ones() -> None:
    plan = _plan(["a", "a", "b"], {"b": "1", "c": "2", "d": "3"}, {"a": "0"})
    targets, stuck = _choose(plan, "a")
    assert sorted(targets) == ["c", "d"]
    assert stuck == []


def test_a_rebalance_never_concentrates_an_object_on_a_site() -> None:
    # The source's site holds one chunk; the only free container is on a site already holding one.
    plan = _plan(["x1", "y1"], {"x1": "x", "y1": "y", "y2": "y"})
    assert _choose(plan, "x1", keep_sites=True) == ([], [0])
    assert _choose(plan, "x1") == (["y2"], [])  # a drain does move it: durability before spread
    assert _choose(plan, "x1", allowed=["y1"]) == ([], [0])  # y1 holds a chunk of it already


def test_targets_spread_over_sites_across_many_objects() -> None:
    live = {f"{s}{i}": s for s in "abc" for i in range(3)}
    counts: Counter[str] = Counter()
    for _ in range(60):
        plan = _plan(["a0", "b0", "c0", "a1", "b1"], live)
        counts.update(_choose(plan, "c0")[0])
    # Once c0's chunk leaves, site c holds none of the object, a and b two each: it stays on site c.
    assert set(counts) == {"c1", "c2"}


@pytest.mark.parametrize("size", [0, 1, 50_000, 3 << 20, (3 << 20) + 5, 7 << 20])
def test_chunk_size_is_the_bytes_a_chunk_holds(size: int) -> None:
    codec, segment = Codec(3, 2), 3 << 20
    data = random.Random(size).randbytes(size)
    segments = [data[i : i + segment] for i in range(0, size, segment)] or [b""]
    assert chunk_size(codec, segment, size) == sum(len(codec.encode(s)[0]) for s in segments)


def test_bandwidth_limits_are_checked() -> None:
    for bad in (-1, 1, MIN_BANDWIDTH - 1):
        with pytest.raises(InvalidArgument):
            Bandwidth(bad)
    assert Bandwidth(0).rate == 0
    assert Bandwidth(MIN_BANDWIDTH).rate == MIN_BANDWIDTH


def test_a_drain_describes_what_moved_and_what_is_left() -> None:
    running = MoveStatus(
        "c1", active=True, running=True, started=100.0, updated=110.0, objects_moved=3, chunks_moved=3,
        bytes_moved=10 << 20, chunks_left=5, bytes_left=20 << 20, bandwidth=2 << 20,
    )  # fmt: skip
    assert running.rate == pytest.approx(1 << 20)
    assert running.describe() == (
        "running: 3 objects, 3 chunks, 10.0 MiB moved at 1.0 MiB/s, limit 2.0 MiB/s, "
        "5 chunks (20.0 MiB) left, about 20 s left"
    )
    stuck = MoveStatus("c1", active=True, done=False, started=1.0, updated=2.0, stuck_objects=2)
    assert stuck.describe().startswith("wanted, waiting for a gateway: ")
    assert stuck.describe().endswith("; 2 object(s) stuck (no container can take their chunk)")
    assert MoveStatus("c1", done=True, started=1.0, finished=3.0).describe().startswith("done: 0 objects")


def test_every_container_command_option_has_help() -> None:
    parser = container_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.dest}"
        for name, sub in subs.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []
    assert all(choice.help for choice in subs._choices_actions)


def test_bandwidth_paces_the_bytes_to_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 MB at 100 kB/s takes 10 s of (fake) sleep, however it is cut, and no limit sleeps not at all."""
    clock = [1000.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(moves.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(moves.asyncio, "sleep", fake_sleep)

    async def send(pace: Bandwidth, sizes: list[int]) -> None:
        for size in sizes:
            await pace.take(size)

    asyncio.run(send(Bandwidth(100_000), [50_000] * 20))
    # The first piece goes at once; the 19 others wait 0.5 s each: 1 MB spread over 10 s.
    assert sum(slept) == pytest.approx(9.5)
    slept.clear()
    asyncio.run(send(Bandwidth(0), [50_000] * 20))
    assert slept == []
