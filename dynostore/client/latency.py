"""Per-container latency estimates and the deadlines of hedged reads and writes.

A client keeps one :class:`LatencyTracker`, shared by all its calls: an
exponentially weighted moving average (EWMA), per container address, of the
time to the first fragment of a read and of the time per byte of the
fragments after it. A get reads from the containers expected to answer
first (data chunks before parity ones unless a parity container is clearly
faster: data chunks need no decoding); when a chunk lags past
:meth:`HedgePolicy.read_deadline` it reads one more chunk and takes the
first k that arrive. A put gives the chunks still unwritten once k + 1 are
durable :meth:`HedgePolicy.write_grace` more, then records them missing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dynostore.errors import InvalidArgument


@dataclass(frozen=True)
class HedgePolicy:
    """How long hedged reads and writes wait for a lagging chunk.

    Attributes:
        factor: a chunk lags once it took this many times what the others took
            (or, before any answered, what its container is expected to take).
        floor: seconds a read waits at least before it reads another chunk.
        cap: seconds a read waits at most before it reads another chunk, and a put
            at most for the chunks unwritten once k + 1 are durable.
        write_floor: seconds a put waits at least, once k + 1 chunks are durable,
            for the others (a chunk it stops waiting for is recorded missing,
            which costs a repair: so this is larger than ``floor``).
        spare_after: a get of a one-segment object reads one chunk beyond the k
            it needs, and uses the first k to come, when the slowest of those k is
            expected to take this long or longer (seconds; far sites, not a LAN; 0: always). A
            container that turns slow is then not waited for, even before its
            estimate shows it; the cost is a third more bytes read (k=3).
    """

    factor: float = 2.0
    floor: float = 0.05
    cap: float = 2.0
    write_floor: float = 0.5
    spare_after: float = 0.01

    def __post_init__(self) -> None:
        """Check that the bounds make sense.

        Raises:
            InvalidArgument: a value is negative or not finite, ``factor`` is below 1, or a floor exceeds ``cap``.
        """
        values = (self.factor, self.floor, self.cap, self.write_floor, self.spare_after)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise InvalidArgument("Hedging bounds must be finite, non-negative numbers of seconds.")
        if self.factor < 1:
            raise InvalidArgument("The hedging factor must be at least 1.")
        if max(self.floor, self.write_floor) > self.cap:
            raise InvalidArgument("The hedging floors must not exceed the cap.")

    def read_deadline(self, others: Sequence[float], expected: float | None) -> float:
        """Seconds from the start of a round of reads after which a chunk still unread lags.

        ``others``: seconds the chunks that answered in this round took;
        ``expected``: what the slowest read still running is expected to take
        (None: unknown). A chunk lags once it takes ``factor`` times the
        larger of the two: a far container streaming as fast as it always
        does is not taken for a lagging one because near ones answered
        first. With neither, the cap.
        """
        if not others and expected is None:
            return self.cap
        base = max(max(others, default=0.0), expected or 0.0)
        return min(self.cap, max(self.floor, self.factor * base))

    def write_grace(self, took: float) -> float:
        """Seconds more a put gives its other chunks once k + 1 were durable after ``took`` seconds."""
        return min(self.cap, max(self.write_floor, self.factor * took))


@dataclass
class HedgeCounts:
    """What hedging did so far, over all calls of one client."""

    # Chunk reads started beside one that lagged past its deadline, or in place of one that failed.
    extra_reads: int = 0
    # Chunk writes given up because they lagged once k + 1 chunks were durable (recorded missing).
    writes_given_up: int = 0
    # Spare chunk reads made up front, beside the k a one-segment get needs (see HedgePolicy.spare_after).
    spare_reads: int = 0


@dataclass
class _Estimate:
    first: float  # seconds to the first fragment (time to first byte)
    per_byte: float  # seconds per byte of the fragments after the first
    updated: float  # time.monotonic() of the last observation


class LatencyTracker:
    """EWMA latency estimates per container address (not thread-safe: one event loop uses it).

    An estimate counts for less as it ages (halved every ``half_life``
    seconds without an observation) and is forgotten after ``stale_after``
    seconds, so a container that was slow once (or, on a busy machine,
    seemed so for one read) is tried again within seconds: reads go on
    only to the containers that answer, which keeps their estimates fresh.
    """

    # Among chunks expected to be about as fast, data chunks come first (they need no
    # decoding): a parity chunk's expected time counts PARITY_FACTOR times, plus
    # PARITY_MARGIN seconds. Far apart (a WAN), the sooner chunk wins: a parity chunk
    # 50 ms away beats a data chunk 100 ms away (with a factor of 2 it did not, and
    # such gets took the far site's round trip).
    PARITY_FACTOR = 1.25
    PARITY_MARGIN = 0.01

    def __init__(self, alpha: float = 0.3, half_life: float = 5.0, stale_after: float = 60.0) -> None:
        """Weigh observations by ``alpha``, halve estimates every ``half_life`` s, forget them at ``stale_after``."""
        self.alpha = alpha
        self.half_life = half_life
        self.stale_after = stale_after
        self._estimates: dict[str, _Estimate] = {}

    def _fresh(self, address: str) -> _Estimate | None:
        estimate = self._estimates.get(address)
        if estimate is not None and time.monotonic() - estimate.updated > self.stale_after:
            del self._estimates[address]
            return None
        return estimate

    def observe(self, address: str, seconds: float, nbytes: int, *, first: bool) -> None:
        """Take note that a fragment of ``nbytes`` from ``address`` came after ``seconds``.

        ``first``: the first fragment of its call (its time counts as the time
        to first byte, less what its bytes are expected to take); later ones
        update the time per byte.
        """
        seconds = max(0.0, seconds)
        estimate = self._fresh(address)
        now = time.monotonic()
        if estimate is None:
            if first:
                self._estimates[address] = _Estimate(seconds, 0.0, now)
            else:
                self._estimates[address] = _Estimate(0.0, seconds / max(nbytes, 1), now)
            return
        self._age(estimate, now)
        a = self.alpha
        if first:
            sample = max(0.0, seconds - nbytes * estimate.per_byte)
            estimate.first += a * (sample - estimate.first)
        else:
            estimate.per_byte += a * (seconds / max(nbytes, 1) - estimate.per_byte)
        estimate.updated = now

    def lagged(self, address: str, seconds: float) -> None:
        """Take note that ``address`` had not answered after ``seconds`` (it was given up on).

        Its time to first byte is raised to at least ``seconds``, so reads
        prefer other containers until it proves faster or is forgotten.
        """
        estimate = self._fresh(address)
        now = time.monotonic()
        if estimate is None:
            self._estimates[address] = _Estimate(seconds, 0.0, now)
        else:
            self._age(estimate, now)
            estimate.first = max(estimate.first, seconds)
            estimate.updated = now

    def _weight(self, estimate: _Estimate, now: float) -> float:
        """How much an estimate still counts, halved every ``half_life`` seconds since its last update."""
        return 0.5 ** ((now - estimate.updated) / self.half_life) if self.half_life else 1.0

    def _age(self, estimate: _Estimate, now: float) -> None:
        """Scale the estimate by its weight now, before a new observation updates it."""
        weight = self._weight(estimate, now)
        estimate.first *= weight
        estimate.per_byte *= weight

    def expected(self, address: str, nbytes: int, *, first: bool = True) -> float | None:
        """Seconds a read of ``nbytes`` from ``address`` is expected to take (None: unknown).

        ``first``: the first fragment of a call (its time to first byte
        counts); else a later fragment of a stream already flowing.
        """
        estimate = self._fresh(address)
        if estimate is None:
            return None
        latency = estimate.first if first else 0.0
        return self._weight(estimate, time.monotonic()) * (latency + nbytes * estimate.per_byte)

    def rank(self, address: str, is_parity: bool, nbytes: int) -> float:
        """Sort key of a chunk to read: lower first; unknown containers count as fast.

        A parity chunk's expected time counts ``PARITY_FACTOR`` times plus
        ``PARITY_MARGIN``, so data chunks win among containers about as fast.
        """
        seconds = self.expected(address, nbytes) or 0.0
        return self.PARITY_FACTOR * seconds + self.PARITY_MARGIN if is_parity else seconds
