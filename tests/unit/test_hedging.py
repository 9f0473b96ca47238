"""The latency estimates and hedge deadlines of hedged reads and writes, without processes."""

from __future__ import annotations

import asyncio

import pytest

from dynostore.client.chunks import WholeChunkReader
from dynostore.client.download import Downloader
from dynostore.client.latency import HedgePolicy, LatencyTracker


def test_read_deadline_follows_the_others_within_floor_and_cap() -> None:
    policy = HedgePolicy(factor=2.0, floor=0.05, cap=2.0)
    assert policy.read_deadline([0.1, 0.3], None) == pytest.approx(0.6)  # twice the slowest that answered
    assert policy.read_deadline([0.001], None) == 0.05  # the floor
    assert policy.read_deadline([5.0], None) == 2.0  # the cap
    assert policy.read_deadline([], 0.2) == pytest.approx(0.4)  # none answered yet: the estimate
    assert policy.read_deadline([], None) == 2.0  # nothing known: the cap
    # A read still running that is expected to take longer than those that answered sets the deadline.
    assert policy.read_deadline([0.01], 0.3) == pytest.approx(0.6)
    assert policy.read_deadline([0.3], 0.01) == pytest.approx(0.6)


def test_write_grace_follows_the_quorum_within_floor_and_cap() -> None:
    policy = HedgePolicy(factor=3.0, cap=4.0, write_floor=0.5)
    assert policy.write_grace(0.01) == 0.5
    assert policy.write_grace(1.0) == pytest.approx(3.0)
    assert policy.write_grace(10.0) == 4.0


@pytest.mark.parametrize(
    "kwargs",
    [{"factor": 0.5}, {"floor": -1.0}, {"cap": float("inf")}, {"floor": 3.0, "cap": 2.0}, {"write_floor": 5.0}],
)
def test_policy_rejects_senseless_bounds(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"(?i)hedging"):
        HedgePolicy(**kwargs)


def test_estimate_is_an_ewma_of_first_byte_and_per_byte_times() -> None:
    tracker = LatencyTracker(alpha=0.5, half_life=0)  # no ageing
    assert tracker.expected("a", 1000) is None
    tracker.observe("a", 0.1, 1000, first=True)
    assert tracker.expected("a", 1000) == pytest.approx(0.1)
    tracker.observe("a", 0.3, 1000, first=True)
    assert tracker.expected("a", 0) == pytest.approx(0.2)  # halfway from 0.1 to 0.3
    tracker.observe("a", 0.001, 1000, first=False)  # 1 us per byte
    assert tracker.expected("a", 1000) == pytest.approx(0.2 + 0.5 * 1e-6 * 1000)
    # A later fragment of a stream already flowing pays no time to first byte.
    assert tracker.expected("a", 1000, first=False) == pytest.approx(0.5 * 1e-6 * 1000)


class Clock:
    """time.monotonic for the latency module, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_container_given_up_on_ranks_last_then_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("dynostore.client.latency.time.monotonic", clock)
    tracker = LatencyTracker(half_life=5.0, stale_after=60.0)
    for address in ("data0", "data1", "data2", "parity3"):
        tracker.observe(address, 0.01, 1000, first=True)
    tracker.lagged("data0", 2.0)
    order = sorted(["data0", "data1", "data2", "parity3"], key=lambda a: tracker.rank(a, a.startswith("p"), 1000))
    assert order == ["data1", "data2", "parity3", "data0"]
    clock.now += 5.0
    assert tracker.expected("data0", 0) == pytest.approx(1.0)  # halved after one half-life
    clock.now += 35.0  # the others answer all along: their estimates stay fresh
    for address in ("data1", "data2", "parity3"):
        tracker.observe(address, 0.01, 1000, first=True)
    assert tracker.rank("data0", False, 1000) < tracker.rank("parity3", True, 1000)  # worth a try again
    clock.now += 60.0
    assert tracker.expected("data0", 0) is None  # forgotten


def test_data_chunks_win_among_equally_fast_containers() -> None:
    tracker = LatencyTracker()
    tracker.observe("data", 0.030, 1000, first=True)
    tracker.observe("parity", 0.020, 1000, first=True)
    assert tracker.rank("data", False, 1000) < tracker.rank("parity", True, 1000)
    tracker.observe("slow-data", 0.5, 1000, first=True)
    assert tracker.rank("parity", True, 1000) < tracker.rank("slow-data", False, 1000)
    assert tracker.rank("unknown", False, 1000) < tracker.rank("unknown", True, 1000)


def test_a_parity_chunk_much_sooner_wins_over_a_far_data_chunk() -> None:
    """Across a WAN: parity 50 ms away is read before data 100 ms away (decoding costs far less)."""
    tracker = LatencyTracker()
    tracker.observe("near-parity", 0.050, 1000, first=True)
    tracker.observe("far-data", 0.100, 1000, first=True)
    assert tracker.rank("near-parity", True, 1000) < tracker.rank("far-data", False, 1000)
    tracker.observe("lan-parity", 0.001, 1000, first=True)
    tracker.observe("lan-data", 0.008, 1000, first=True)
    assert tracker.rank("lan-data", False, 1000) < tracker.rank("lan-parity", True, 1000)  # within the margin


class FakeReader:
    """A chunk reader that answers after ``delay`` seconds (None: never), noting whether it was cancelled."""

    def __init__(self, index: int, delay: float | None) -> None:
        self.index = index
        self.address = f"container{index}"
        self.patient = False
        self.received = 0
        self.error = None
        self.delay = delay
        self.cancelled = False

    async def next(self, timeout: float) -> bytes | None:
        try:
            await asyncio.sleep(self.delay if self.delay is not None else timeout)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.delay is None:
            return None
        self.received += 1
        return b"fragment"

    async def close(self) -> None:
        """Nothing to release."""


def test_a_lagging_read_is_hedged_and_cancelled() -> None:
    """Two chunks answer, the third hangs: a spare read starts past the deadline and the hung one is cancelled."""

    async def scenario() -> tuple[dict[object, bytes | None], list[FakeReader]]:
        downloader = Downloader("127.0.0.1:1", fragment_timeout=30.0, hedge=HedgePolicy(cap=1.0))
        readers = [FakeReader(0, 0.0), FakeReader(1, 0.0), FakeReader(2, None)]
        spares = [FakeReader(3, 0.0)]
        opened: list[FakeReader] = []

        def hedge() -> FakeReader | None:
            if not spares:
                return None
            opened.append(spares.pop())
            return opened[-1]

        got = await downloader._first_fragments(readers, 3, hedge)  # type: ignore[arg-type]
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running
        await downloader.close()
        return got, readers + opened  # type: ignore[return-value]

    got, readers = asyncio.run(scenario())
    assert {r.index for r in got} == {0, 1, 3}  # type: ignore[attr-defined]
    assert readers[2].cancelled  # given up long before its 30 s fragment_timeout


class SlowWholeReader(WholeChunkReader):
    """A one-chunk read (unary) answering after ``delay`` seconds."""

    def __init__(self, index: int, delay: float) -> None:  # no stub: nothing is called
        self.index, self.address, self.patient, self.received, self.error = index, f"whole{index}", False, 0, None
        self.delay = delay

    async def next(self, timeout: float) -> bytes | None:
        await asyncio.sleep(self.delay)
        self.received += 1
        return b"fragment"


def test_a_losing_one_chunk_read_finishes_and_is_measured() -> None:
    """A spare read that loses is not cancelled: its real time becomes the container's estimate."""

    async def scenario() -> tuple[int, float | None, float | None]:
        downloader = Downloader("127.0.0.1:1", fragment_timeout=30.0, hedge=HedgePolicy(cap=5.0))
        readers = [SlowWholeReader(0, 0.0), SlowWholeReader(1, 0.0), SlowWholeReader(2, 0.3)]
        got = await downloader._first_fragments(readers, 2)  # type: ignore[arg-type]
        before = downloader.latency.expected("whole2", 0)
        running = asyncio.all_tasks() - {asyncio.current_task()}
        assert len(running) == 1  # the loser's read, still running
        await asyncio.gather(*running)
        after = downloader.latency.expected("whole2", 0)
        await downloader.close()
        return len(got), before, after

    count, before, after = asyncio.run(scenario())
    assert count == 2
    assert before is None  # nothing known when the get returned
    assert after is not None
    assert after >= 0.25  # its real time, not the moment the others won


def test_without_hedge_the_read_waits_for_the_hung_chunk() -> None:
    async def scenario() -> dict[object, bytes | None]:
        downloader = Downloader("127.0.0.1:1", fragment_timeout=0.2)
        readers = [FakeReader(0, 0.0), FakeReader(1, 0.0), FakeReader(2, None)]
        got = await downloader._first_fragments(readers, 3, None)  # type: ignore[arg-type]
        await downloader.close()
        return got  # type: ignore[return-value]

    got = asyncio.run(scenario())
    assert sorted(r.index for r in got) == [0, 1, 2]  # type: ignore[attr-defined]
    assert [v for r, v in got.items() if r.index == 2] == [None]  # type: ignore[attr-defined]
