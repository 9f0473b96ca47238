"""What every operation of a fault scenario was given and what came of it: the ledger, its attempts and the figures."""

from __future__ import annotations

import hashlib
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dynostore.errors import DataLoss, DynoStoreError, NotFound
from tests.integration.conftest import eventually

MiB = 1024 * 1024
K, M = 3, 2
N = K + M
# The fabric's inline_max_bytes: objects up to this size live in etcd and have no chunks.
INLINE_MAX = 4096
# k x 1 MiB: objects larger than one segment are streamed, segment by segment.
SEGMENT = K * MiB
CATALOG = "faults"
# Bounds of waits that poll for an event (never reached when the fabric works).
RECOVERY_LIMIT = 60.0
JOIN_LIMIT = 120.0


def digest(data: bytes) -> bytes:
    """A fingerprint of an object's bytes (the ledger keeps these, not the bytes)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def within(seconds: float, check: Callable[[], bool]) -> bool:
    """Whether ``check`` comes true within ``seconds``: the ``eventually`` poller, for longer than its watch delay."""
    deadline = time.monotonic() + seconds
    while not eventually(check):
        if time.monotonic() > deadline:
            return False
    return True


def newest_returned(returned_at: list[float], started: float) -> int:
    """Index of the newest version whose write had returned before ``started`` (0 if none): reads started then see
    it or a later one. ``returned_at``: each version's return time in order, 0.0 for one that did not return."""
    return max((i for i, at in enumerate(returned_at) if at and at < started), default=0)


def error_name(exc: BaseException) -> str:
    """How an outcome is counted: the error's class name."""
    return type(exc).__name__


@dataclass
class Figures:
    """What one scenario run did, and how long recovery took."""

    scenario: str
    seed: int
    workload_seconds: float = 0.0
    total_seconds: float = 0.0
    # (operation, outcome) -> count; the outcome is "ok" or the error's class.
    ops: Counter[tuple[str, str]] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    # (what restarted, seconds from ready until a put worked; None: not measured, too many containers down).
    recoveries: list[tuple[str, float | None]] = field(default_factory=list)
    objects_checked: int = 0
    # Failed puts whose object is in the catalog afterwards (whole: checked).
    appeared: int = 0
    rebuilt: int = 0
    # Objects the gateway's own repair sweeps repaired during the run.
    sweep_repairs: int = 0
    # Server process -> tracebacks in its log (from calls the servers did not expect to fail).
    server_tracebacks: Counter[str] = field(default_factory=Counter)
    # Why objects had chunks to rebuild after the run -> how many.
    rebuilt_because: Counter[str] = field(default_factory=Counter)
    verify_seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        """Operations that answered (an object, its absence, true or false)."""
        return sum(n for (_, outcome), n in self.ops.items() if not outcome[0].isupper())

    @property
    def failed(self) -> int:
        """Operations that raised (their outcome is the error's class)."""
        return sum(n for (_, outcome), n in self.ops.items() if outcome[0].isupper())

    def measured(self) -> list[float]:
        return [s for _, s in self.recoveries if s is not None]

    def lines(self) -> list[str]:
        """A human-readable account, for the terminal."""
        times = self.measured()
        recovery = (
            f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} restarts"
            if times
            else "none measured"
        )
        by_op: dict[str, Counter[str]] = {}
        for (op, outcome), n in sorted(self.ops.items()):
            by_op.setdefault(op, Counter())[outcome] += n
        lines = [
            f"{self.scenario} (seed {self.seed}): {self.ok + self.failed} ops ({self.ok} ok, {self.failed} failed) "
            f"in {self.workload_seconds:.1f} s; whole run {self.total_seconds:.1f} s",
            "  faults: " + (", ".join(f"{kind} x{n}" for kind, n in sorted(self.faults.items())) or "none"),
            f"  recovery (until a put works again): {recovery}",
            f"  afterwards: {self.objects_checked} objects checked, {self.appeared} failed puts found whole, "
            f"{self.rebuilt} chunks rebuilt by the repair sweep ({self.verify_seconds:.1f} s)"
            + (f": objects {dict(self.rebuilt_because)}" if self.rebuilt_because else ""),
            f"  gateway's repair sweeps: {self.sweep_repairs} objects repaired; tracebacks in server logs: "
            + (", ".join(f"{name} {n}" for name, n in sorted(self.server_tracebacks.items())) or "none"),
        ]
        for op, outcomes in by_op.items():
            lines.append(f"  {op}: " + ", ".join(f"{outcome} {n}" for outcome, n in outcomes.most_common()))
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  VIOLATION: {v}" for v in self.violations]
        return lines


@dataclass
class Version:
    """One replacement of a stored object by key: the bytes it was given, and when it started and returned."""

    size: int
    digest: bytes
    started: float
    # When (monotonic) the replacing put returned; 0.0 while it did not (in flight, or raised).
    returned_at: float = 0.0


@dataclass
class Attempt:
    """One object someone tried to put."""

    name: str
    size: int
    digest: bytes
    # The reserved key of a planned put ("" for others).
    planned: str = ""
    # The key the put returned ("" while it did not).
    key: str = ""
    # The class of the error its last try raised.
    error: str = ""
    # A retry with its reservation found the key taken: its first try was committed.
    landed: bool = False
    # The operation that put it, and when (monotonic) it returned.
    op: str = ""
    returned_at: float = 0.0
    # The replacements by key of the object it put, in order (one at a time: each starts after the last ended).
    versions: list[Version] = field(default_factory=list)

    @property
    def chunked(self) -> bool:
        return self.size > INLINE_MAX

    def readable(self, started: float) -> set[bytes]:
        """The digests a read started at ``started`` may return: the newest version that had returned, and later ones.

        A replacement that raised may or may not have been committed, then or later, so it stays possible until a
        later one returns; one that returned hides every earlier version from reads that start after it.
        """
        versions = self.history
        return {d for _, d in versions[newest_returned([at for at, _ in versions], started) :]}

    @property
    def history(self) -> list[tuple[float, bytes]]:
        """``(returned at, digest)`` of the put and of each replacement, in order."""
        return [(self.returned_at, self.digest)] + [(v.returned_at, v.digest) for v in self.versions]

    def settled(self, data: bytes) -> Attempt:
        """This attempt as the version whose bytes are ``data`` (size and digest of that version)."""
        return replace(self, size=len(data), digest=digest(data))


# Reads and replaces: a NotFound is allowed only for keys with an evict attempted.
READS = frozenset({"get", "get_batch", "exists", "repair", "replace"})


class Ledger:
    """Every operation of a run: what it was given, what it returned or raised (thread-safe)."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures
        self._lock = threading.Lock()
        self.attempts: dict[str, Attempt] = {}
        self.by_key: dict[str, Attempt] = {}
        self.by_planned: dict[str, Attempt] = {}
        # Keys with an evict attempted (monotonic time it started), and those whose evict returned (when).
        self.evicting: dict[str, float] = {}
        self.evicted: dict[str, float] = {}
        # Keys with a replacement in flight.
        self.replacing: set[str] = set()
        # Key -> chunk indexes damaged or removed by the fault loop.
        self.damaged: dict[str, set[int]] = {}
        self._keys: list[str] = []
        self.large = 0
        self.started = time.monotonic()
        # (seconds into the run, what the fault loop did), for the accounts of violations.
        self.timeline: list[tuple[float, str]] = []

    def event(self, what: str) -> None:
        """Note what the fault loop did, and when."""
        with self._lock:
            self.timeline.append((time.monotonic() - self.started, what))

    def around(self, since: float) -> str:
        """What the fault loop did from ``since`` (monotonic) on: for the account of a violation."""
        t0 = since - self.started
        return "; ".join(f"{t:.2f} s {what}" for t, what in self.timeline if t >= t0 - 2.0) or "no faults"

    def _when(self, moment: float) -> str:
        return f"{moment - self.started:.2f} s"

    # bookkeeping

    def begin(self, name: str, data: bytes, planned: str = "") -> Attempt:
        attempt = Attempt(name, len(data), digest(data), planned)
        with self._lock:
            assert name not in self.attempts, name
            self.attempts[name] = attempt
            if planned:
                self.by_planned[planned] = attempt
            if len(data) > SEGMENT:
                self.large += 1
        return attempt

    def returned(self, op: str, attempt: Attempt, key: str) -> None:
        with self._lock:
            if attempt.planned and key != attempt.planned:
                self._violation(f"{op} {attempt.name}: returned key {key}, not its reserved key {attempt.planned}")
            if key in self.by_key and self.by_key[key] is not attempt:
                self._violation(f"{op} {attempt.name}: returned key {key}, already given to {self.by_key[key].name}")
            attempt.key, attempt.error = key, ""
            attempt.op, attempt.returned_at = op, time.monotonic()
            self.by_key[key] = attempt
            self._keys.append(key)
            self.figures.ops[op, "ok"] += 1

    def put_failed(self, op: str, attempts: list[Attempt], exc: BaseException) -> None:
        for attempt in attempts:
            attempt.error = error_name(exc)
        self.error(op, attempts[0].planned or attempts[0].name, exc)

    def count(self, op: str, outcome: str = "ok") -> None:
        with self._lock:
            self.figures.ops[op, outcome] += 1

    def violation(self, message: str) -> None:
        with self._lock:
            self._violation(message)

    def _violation(self, message: str) -> None:
        self.figures.violations.append(message)

    def note(self, message: str) -> None:
        with self._lock:
            if message not in self.figures.notes and len(self.figures.notes) < 20:
                self.figures.notes.append(message)

    @property
    def objects(self) -> int:
        return len(self.attempts)

    # choosing targets

    def pick_key(self, rng: random.Random, *, evictable: bool = False) -> str | None:
        """A key some put returned, mostly one with no evict attempted.

        With ``evictable``, one with no evict attempted and no replacement in flight, marked as evicting; None
        once a quarter of the keys are evicted: most objects stay, for the checks after.
        """
        with self._lock:
            if evictable and len(self.evicting) * 4 >= len(self._keys):
                return None
            kept = [k for k in self._keys if k not in self.evicting]
            if evictable:
                kept = [k for k in kept if k not in self.replacing]
            keys = kept if evictable or (kept and rng.random() < 0.85) else self._keys
            if not keys:
                return None
            key = rng.choice(keys)
            if evictable:
                self.evicting[key] = time.monotonic()
            return key

    def pick_keys(self, rng: random.Random, count: int) -> list[str]:
        with self._lock:
            return rng.sample(self._keys, min(count, len(self._keys)))

    def pick_unplaced(self, rng: random.Random) -> str | None:
        """The reserved key of a planned put that raised (its object may or may not exist)."""
        with self._lock:
            keys = [key for key, a in self.by_planned.items() if not a.key]
            return rng.choice(keys) if keys else None

    def pick_damageable(self, rng: random.Random) -> str | None:
        """A key of a chunked object some put returned, with no evict attempted."""
        with self._lock:
            keys = [k for k in self._keys if self.by_key[k].chunked and k not in self.evicting]
            return rng.choice(keys) if keys else None

    def claim_damage(self, key: str, unstored: set[int], rng: random.Random) -> int | None:
        """A chunk index of ``key`` to damage, keeping at most m of its chunks lost or damaged in all.

        ``unstored`` are the chunks its record has as missing (a put that stored k+1 of them).
        """
        with self._lock:
            spent = self.damaged.setdefault(key, set()) | unstored
            if len(spent) >= M:
                return None
            index = rng.choice([i for i in range(N) if i not in spent])
            self.damaged[key].add(index)
            return index

    # replacements

    def replace_started(self, rng: random.Random, data: bytes) -> tuple[str, Version] | None:
        """A key some put returned, with no evict attempted nor replacement in flight, and the version ``data`` is.

        None when there is no such key. The key stays out of evicts and other replacements until it ends.
        """
        with self._lock:
            keys = [k for k in self._keys if k not in self.evicting and k not in self.replacing]
            if not keys:
                return None
            key = rng.choice(keys)
            version = Version(len(data), digest(data), time.monotonic())
            self.replacing.add(key)
            self.by_key[key].versions.append(version)
            if len(data) > SEGMENT:
                self.large += 1
            return key, version

    def replace_ended(self, key: str, version: Version, returned: str | None) -> None:
        """The replacement of ``key`` by ``version`` returned ``returned`` (None: it raised, counted by the caller)."""
        with self._lock:
            self.replacing.discard(key)
            if returned is None:
                return
            if returned != key:
                self._violation(f"replace of {key} returned another key, {returned}")
            version.returned_at = time.monotonic()
            self.figures.ops["replace", "ok"] += 1

    # evicts

    def evict_returned(self, key: str) -> None:
        with self._lock:
            self.evicted.setdefault(key, time.monotonic())
            self.figures.ops["evict", "ok"] += 1

    # outcomes of reads

    def expected(self, key: str) -> Attempt:
        with self._lock:
            return self.by_key.get(key) or self.by_planned[key]

    def check_read(self, op: str, key: str, data: bytes | None, started: float) -> None:
        """Hold a read's answer to the ledger: the bytes that were put, or absence for keys evicted."""
        attempt = self.expected(key)
        with self._lock:
            if data is None:
                # Absence is allowed for keys with an evict attempted, and for puts that had not returned yet.
                if attempt.key and attempt.returned_at < started and key not in self.evicting:
                    self._violation(
                        f"{op} of {key} ({attempt.name}, {attempt.size} bytes, by {attempt.op} returned at "
                        f"{self._when(attempt.returned_at)}) started at {self._when(started)} found no object, "
                        f"and it was never evicted; faults: {self.around(started)}"
                    )
            elif digest(data) not in attempt.readable(started):
                self._violation(
                    f"{op} of {key} ({attempt.name}) started at {self._when(started)} returned "
                    f"{self.version_of(attempt, data)}; faults: {self.around(started)}"
                )
            elif key in self.evicted and started > self.evicted[key]:
                self._violation(f"{op} of {key} ({attempt.name}) read the object after its evict returned")
            self.figures.ops[op, "ok" if data is not None else "absent"] += 1

    def version_of(self, attempt: Attempt, data: bytes) -> str:
        """Which of ``attempt``'s versions ``data`` is, for the account of a violation."""
        found = digest(data)
        versions = attempt.history
        for number, (returned_at, version) in enumerate(versions):
            if version == found:
                when = f"returned at {self._when(returned_at)}" if returned_at else "never returned"
                return f"version {number} of 0-{len(versions) - 1} ({len(data)} bytes; its put {when}), not the newest"
        sizes = [attempt.size] + [v.size for v in attempt.versions]
        return f"bytes of no version ({len(data)} bytes; the versions have {sizes})"

    def check_exists(self, key: str, exists: bool, started: float) -> None:
        attempt = self.expected(key)
        with self._lock:
            if not exists and attempt.key and attempt.returned_at < started and key not in self.evicting:
                self._violation(f"exists({key}) ({attempt.name}) is False, and it was never evicted")
            if exists and key in self.evicted and started > self.evicted[key]:
                self._violation(f"exists({key}) ({attempt.name}) is True after its evict returned")
            self.figures.ops["exists", str(exists).lower()] += 1

    def error(self, op: str, key: str, exc: BaseException) -> None:
        """Count an operation that raised, and hold the error to the hierarchy's promises."""
        name = error_name(exc)
        with self._lock:
            self.figures.ops[op, name] += 1
            if not isinstance(exc, DynoStoreError):
                self._violation(f"{op} {key}: raised {name}, which is not a DynoStore error: {exc!r}")
            elif type(exc) is DynoStoreError:
                self._violation(f"{op} {key}: raised the bare DynoStoreError: {exc}")
            elif isinstance(exc, DataLoss):
                damaged = sorted(self.damaged.get(key, ()))
                self._violation(
                    f"{op} {key}: DataLoss although at most {M} chunks were damaged (chunks {damaged}): {exc}"
                )
            elif isinstance(exc, NotFound) and op in READS:
                attempt = self.by_key.get(key)
                if attempt is not None and key not in self.evicting:
                    self._violation(f"{op} {key} ({attempt.name}): NotFound, and it was never evicted: {exc}")
            if name == "Internal" and len(self.figures.notes) < 20:
                self.figures.notes.append(f"{op} {key}: Internal: {exc}")
