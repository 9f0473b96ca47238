"""The fault-injection harness: a ledger of every operation, workload threads, a seeded fault loop, invariants.

A scenario runs a mixed workload (puts of every kind, gets, evicts, repairs)
from several threads against a :class:`LocalFabric`, while the main thread
(the one that started the fabric's processes: they get SIGTERM when that
thread ends) injects faults drawn from a seeded :class:`random.Random`. The
ledger records what every operation was given and what it returned or
raised; after the fabric is whole again, :class:`Checker` holds the fabric
to what the ledger says it promised.

The fault loop's draws come from the seed alone, but what a fault hits (the
keys stored so far, the operation in flight) depends on timing: a seed
replays the same sequence of faults, not the same interleaving.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import signal
import statistics
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.client import Client, ObjectStat
from dynostore.errors import AlreadyExists, DataLoss, DynoStoreError, FailedPrecondition, NotFound, Unavailable
from dynostore.local import ContainerHandle, LocalFabric, ManagedProcess
from dynostore.rpc import auth_metadata
from tests.integration.conftest import eventually

MiB = 1024 * 1024
K, M = 3, 2
N = K + M
# The fabric's inline_max_bytes: objects up to this size live in etcd and have no chunks.
INLINE_MAX = 4096
# k x 1 MiB: objects larger than one segment are streamed, segment by segment.
SEGMENT = K * MiB
CATALOG = "faults"
WORKERS = 6
# Puts stop after this many objects (reads, evicts and repairs go on), and after
# this many large ones, so that the checks after the run stay short.
MAX_OBJECTS = 150
MAX_LARGE = 14
MAX_OPS_PER_WORKER = 300
# Bounds of waits that poll for an event (never reached when the fabric works).
RECOVERY_LIMIT = 60.0
JOIN_LIMIT = 120.0

SEED_ENV = "DYNOSTORE_FAULT_SEED"
TRIALS_ENV = "DYNOSTORE_FAULT_TRIALS"
SECONDS_ENV = "DYNOSTORE_FAULT_SECONDS"
REPORT_ENV = "DYNOSTORE_FAULT_REPORT"
# What asyncio and Python print for abandoned tasks, generators and loops.
ABANDONED = (
    "Task was destroyed but it is pending",
    "asynchronous generator is already running",
    "Event loop is closed",
    "was never awaited",
    "Task exception was never retrieved",
)
# Figures of every scenario run in this session, for the summary at the end.
RESULTS: list[Figures] = []


@dataclass(frozen=True)
class Scenario:
    """One row of the fault matrix.

    Attributes:
        name: short name (the test id).
        faults: the fault kinds the loop draws from: ``gateway``, ``etcd``,
            ``container``, ``freeze``, ``damage``, ``outage``.
        summary: what it does, for the report.
        seed: its default seed (``DYNOSTORE_FAULT_SEED`` replaces it).
        seconds: length of the workload (``DYNOSTORE_FAULT_SECONDS`` replaces it).
        trials: how many seeds it runs with, its seed and the next ones (``DYNOSTORE_FAULT_TRIALS`` replaces it).
        max_down: containers down (stopped, killed or frozen) at once, at most.
        repair_interval: the gateway's repair sweeps (None: its default, 300 s: none during the run).
        repair_grace: how long a container may be gone before a sweep rebuilds its chunks elsewhere.
    """

    name: str
    faults: tuple[str, ...]
    summary: str
    seed: int
    seconds: float = 12.0
    trials: int = 1
    max_down: int = 2
    repair_interval: float | None = None
    repair_grace: float | None = None


def seeds(scenario: Scenario) -> list[int]:
    """The seeds to run ``scenario`` with: from ``DYNOSTORE_FAULT_SEED`` or its own seed on, one per trial."""
    base = int(os.environ.get(SEED_ENV) or scenario.seed)
    return [base + trial for trial in range(int(os.environ.get(TRIALS_ENV) or scenario.trials))]


def digest(data: bytes) -> bytes:
    """A fingerprint of an object's bytes (the ledger keeps these, not the bytes)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def chunk_path(container: ContainerHandle, key: str, index: int) -> Path:
    """Where an fs container keeps chunk ``index`` of ``key``."""
    return container.root / "data" / "chunks" / key[:2] / f"{key}.{index}"


def within(seconds: float, check: Callable[[], bool]) -> bool:
    """Whether ``check`` comes true within ``seconds``: the ``eventually`` poller, for longer than its watch delay."""
    deadline = time.monotonic() + seconds
    while not eventually(check):
        if time.monotonic() > deadline:
            return False
    return True


def error_name(exc: BaseException) -> str:
    """How an outcome is counted: the error's class name."""
    return type(exc).__name__


# figures ---------------------------------------------------------------------


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


# the ledger ------------------------------------------------------------------


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

    @property
    def chunked(self) -> bool:
        return self.size > INLINE_MAX


# Reads: a NotFound is allowed only for keys with an evict attempted.
READS = frozenset({"get", "get_batch", "exists", "repair"})


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

    def _around(self, since: float) -> str:
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
        """A key some put returned, mostly one with no evict attempted (with ``evictable``, only those).

        With ``evictable``, None once a quarter of the keys are evicted: most objects stay, for the checks after.
        """
        with self._lock:
            if evictable and len(self.evicting) * 4 >= len(self._keys):
                return None
            kept = [k for k in self._keys if k not in self.evicting]
            keys = kept if evictable or (kept and rng.random() < 0.85) else self._keys
            return rng.choice(keys) if keys else None

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

    # evicts

    def evict_started(self, key: str) -> None:
        with self._lock:
            self.evicting.setdefault(key, time.monotonic())

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
                        f"and it was never evicted; faults: {self._around(started)}"
                    )
            elif digest(data) != attempt.digest:
                self._violation(
                    f"{op} of {key} ({attempt.name}, {attempt.size} bytes) returned other bytes ({len(data)} bytes)"
                )
            elif key in self.evicted and started > self.evicted[key]:
                self._violation(f"{op} of {key} ({attempt.name}) read the object after its evict returned")
            self.figures.ops[op, "ok" if data is not None else "absent"] += 1

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


# the workload ----------------------------------------------------------------


def object_size(rng: random.Random, kind: str) -> int:
    """A size of the given kind: ``inline`` (no chunks), ``whole`` (one segment) or ``large`` (streamed)."""
    if kind == "inline":
        return rng.choice([0, 1, INLINE_MAX, rng.randint(2, INLINE_MAX)])
    if kind == "whole":
        return rng.choice([INLINE_MAX + 1, SEGMENT, rng.randint(INLINE_MAX + 1, 256 * 1024), rng.randint(1, SEGMENT)])
    return rng.choice([SEGMENT + 1, rng.randint(SEGMENT + 1, 7 * MiB)])


class Worker(threading.Thread):
    """One thread of the workload: draws operations until the deadline or its bound."""

    def __init__(
        self, number: int, client: Client, token: str, ledger: Ledger, seed: int, files: Path, deadline: float
    ) -> None:
        super().__init__(name=f"fault-worker{number}", daemon=True)
        self.number = number
        self.client = client
        self.token = token
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.files = files
        self.deadline = deadline
        self._made = 0
        self.ops: list[tuple[Callable[[], None], int]] = [
            (self.put, 18),
            (self.put_batch, 7),
            (self.put_planned, 7),
            (self.put_large, 5),
            (self.get, 26),
            (self.get_batch, 10),
            (self.exists, 5),
            (self.evict, 5),
            (self.repair, 6),
            (self.read_unplaced, 3),
        ]

    def run(self) -> None:
        try:
            for _ in range(MAX_OPS_PER_WORKER):
                if time.monotonic() >= self.deadline:
                    return
                (op,) = self.rng.choices([o for o, _ in self.ops], weights=[w for _, w in self.ops])
                op()
        except BaseException as exc:
            self.ledger.violation(f"worker {self.number} crashed: {exc!r}\n{traceback.format_exc()}")

    # helpers

    def _next_name(self) -> str:
        self._made += 1
        return f"w{self.number}-{self._made}"

    def _room(self, count: int = 1, large: bool = False) -> bool:
        """Whether the run may put ``count`` more objects."""
        if large and self.ledger.large >= MAX_LARGE:
            return False
        return self.ledger.objects + count <= MAX_OBJECTS

    def _kind(self) -> str:
        return self.rng.choices(["inline", "whole", "large"], weights=[3, 6, 1])[0]

    # puts

    def put(self) -> None:
        kind = self._kind()
        if not self._room(large=kind == "large"):
            return self.get()
        data = self.rng.randbytes(object_size(self.rng, kind))
        attempt = self.ledger.begin(self._next_name(), data)
        try:
            key = self.client.put(data=data, token_user=self.token, catalog=CATALOG, name=attempt.name)
        except Exception as exc:
            self.ledger.put_failed("put", [attempt], exc)
        else:
            self.ledger.returned("put", attempt, key)

    def put_batch(self) -> None:
        count = self.rng.randint(2, 6)
        if not self._room(count):
            return self.get_batch()
        datas = [self.rng.randbytes(object_size(self.rng, self.rng.choice(["inline", "whole"]))) for _ in range(count)]
        attempts = [self.ledger.begin(self._next_name(), data) for data in datas]
        names = [a.name for a in attempts]
        try:
            keys = self.client.put_batch(datas, token_user=self.token, catalog=CATALOG, names=names)
        except Exception as exc:
            self.ledger.put_failed("put_batch", attempts, exc)
            return
        if len(keys) != count or len(set(keys)) != count:
            self.ledger.violation(f"put_batch of {names} returned keys {keys}")
        for attempt, key in zip(attempts, keys, strict=False):
            self.ledger.returned("put_batch", attempt, key)

    def put_planned(self) -> None:
        count = self.rng.randint(1, 3)
        if not self._room(count):
            return self.get()
        try:
            reservations = self.client.plan_keys(count, token_user=self.token)
        except Exception as exc:
            self.ledger.error("plan_keys", "-", exc)
            return
        self.ledger.count("plan_keys")
        for reservation in reservations:
            kind = self._kind()
            if kind == "large" and not self._room(large=True):
                kind = "whole"
            data = self.rng.randbytes(object_size(self.rng, kind))
            attempt = self.ledger.begin(self._next_name(), data, planned=reservation.key)
            for retry in (False, True):
                op = "planned_retry" if retry else "planned"
                try:
                    key = self.client.put(
                        data=data, token_user=self.token, catalog=CATALOG, name=attempt.name, planned=reservation
                    )
                except AlreadyExists as exc:
                    attempt.error, attempt.landed = error_name(exc), retry
                    self.ledger.count(op, error_name(exc))
                    break
                except Exception as exc:
                    self.ledger.put_failed(op, [attempt], exc)
                    if retry or self.rng.random() < 0.5:
                        break  # half of the failed ones are tried again with their reservation
                else:
                    self.ledger.returned(op, attempt, key)
                    break

    def put_large(self) -> None:
        """A streamed put of several segments: from a file, or from bytes."""
        if not self._room(large=True):
            return self.get()
        data = self.rng.randbytes(object_size(self.rng, "large"))
        attempt = self.ledger.begin(self._next_name(), data)
        from_file = self.rng.random() < 0.5
        op = "put_file" if from_file else "put_large"
        path = self.files / attempt.name
        try:
            if from_file:
                path.write_bytes(data)
                key = self.client.put_file(path, token_user=self.token, catalog=CATALOG, name=attempt.name)
            else:
                key = self.client.put(data=data, token_user=self.token, catalog=CATALOG, name=attempt.name)
        except Exception as exc:
            self.ledger.put_failed(op, [attempt], exc)
        else:
            self.ledger.returned(op, attempt, key)
        finally:
            path.unlink(missing_ok=True)

    # reads

    def get(self) -> None:
        key = self.ledger.pick_key(self.rng)
        if key is None:
            return
        started = time.monotonic()
        try:
            data = self.client.get(key=key, token_user=self.token)
        except NotFound:
            self.ledger.check_read("get", key, None, started)
        except Exception as exc:
            self.ledger.error("get", key, exc)
        else:
            self.ledger.check_read("get", key, data, started)

    def get_batch(self) -> None:
        keys = self.ledger.pick_keys(self.rng, self.rng.randint(2, 8))
        if (unplaced := self.ledger.pick_unplaced(self.rng)) and unplaced not in keys:
            keys.append(unplaced)
        if not keys:
            return
        started = time.monotonic()
        try:
            datas = self.client.get_batch(keys, token_user=self.token)
        except Exception as exc:
            self.ledger.error("get_batch", ",".join(keys), exc)
            return
        if len(datas) != len(keys):
            self.ledger.violation(f"get_batch of {len(keys)} keys returned {len(datas)} results")
        for key, data in zip(keys, datas, strict=False):
            self.ledger.check_read("get_batch", key, data, started)

    def exists(self) -> None:
        key = self.ledger.pick_key(self.rng)
        if key is None:
            return
        started = time.monotonic()
        try:
            found = self.client.exists(key=key, token_user=self.token)
        except Exception as exc:
            self.ledger.error("exists", key, exc)
        else:
            self.ledger.check_exists(key, found, started)

    def read_unplaced(self) -> None:
        """Read the reserved key of a planned put that raised: absent, or the object whole."""
        key = self.ledger.pick_unplaced(self.rng)
        if key is None:
            return self.get()
        started = time.monotonic()
        try:
            data = self.client.get(key=key, token_user=self.token)
        except NotFound:
            self.ledger.check_read("get_unplaced", key, None, started)
        except Exception as exc:
            self.ledger.error("get_unplaced", key, exc)
        else:
            self.ledger.check_read("get_unplaced", key, data, started)

    # evicts and repairs

    def evict(self) -> None:
        key = self.ledger.pick_key(self.rng, evictable=True)
        if key is None:
            return
        self.ledger.evict_started(key)
        try:
            self.client.evict(key=key, token_user=self.token)
        except Exception as exc:
            self.ledger.error("evict", key, exc)
        else:
            self.ledger.evict_returned(key)

    def repair(self) -> None:
        key = self.ledger.pick_key(self.rng)
        if key is None:
            return
        try:
            self.client.repair(key, token_user=self.token, verify=True)
        except Exception as exc:
            self.ledger.error("repair", key, exc)
        else:
            self.ledger.count("repair")


# the fault loop --------------------------------------------------------------


class Faults:
    """The seeded fault loop; runs in the main thread, which started (and must restart) every process."""

    def __init__(
        self,
        fabric: LocalFabric,
        scenario: Scenario,
        rng: random.Random,
        ledger: Ledger,
        probe: Client,
        token: str,
    ) -> None:
        self.fabric = fabric
        self.scenario = scenario
        # The schedule (which fault, when, how long) draws from ``rng`` alone, so that a seed replays it;
        # the targets (keys, bytes to flip, probe data), which depend on what is stored, from ``picks``.
        self.rng = rng
        self.picks = random.Random(rng.randrange(2**32))
        self.ledger = ledger
        self.figures = ledger.figures
        self.probe = probe
        self.token = token
        # Containers stopped or killed (by index), and those frozen (SIGSTOP) right now.
        self.down: set[int] = set()
        self.frozen: set[int] = set()
        self._probes = 0

    def run(self, deadline: float) -> None:
        """Inject faults until ``deadline``, a random pause before each."""
        steps = {kind: getattr(self, f"_{kind}") for kind in self.scenario.faults}
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, self.rng.uniform(0.1, 0.8)))  # pacing of the faults, not synchronization
            if time.monotonic() >= deadline:
                return
            steps[self.rng.choice(self.scenario.faults)]()

    def restore(self) -> None:
        """Thaw and start whatever is down: etcd, then the gateway, then the containers."""
        for index in sorted(self.frozen):
            self._thaw(index)
        for handle in [*self.fabric.etcd_members, *self.fabric.gateways, *self.fabric.containers]:
            if not handle.running:
                handle.start()
        self.down.clear()

    # probing

    def put_works(self) -> bool:
        """Whether a probe put succeeds now (probe puts are in the ledger like any other)."""
        self._probes += 1
        data = self.picks.randbytes(64 * 1024)
        attempt = self.ledger.begin(f"probe-{self._probes}", data)
        try:
            key = self.probe.put(data=data, token_user=self.token, catalog=CATALOG, name=attempt.name)
        except Exception as exc:
            self.ledger.put_failed("probe", [attempt], exc)
            return False
        self.ledger.returned("probe", attempt, key)
        return True

    def recover(self, what: str) -> None:
        """Measure how long after ``what`` came back a put works again (not with m containers still down)."""
        if len(self.down | self.frozen) >= M:
            self.figures.recoveries.append((what, None))
            return
        started = time.monotonic()
        if within(RECOVERY_LIMIT, self.put_works):
            self.figures.recoveries.append((what, time.monotonic() - started))
            self.ledger.event(f"a put works again after {time.monotonic() - started:.2f} s")
        else:
            self.ledger.violation(f"no put worked within {RECOVERY_LIMIT} s after {what} came back")

    # faults

    def _note(self, fault: str, detail: str = "") -> None:
        """Count a fault and put it on the timeline."""
        self.figures.faults[fault] += 1
        self.ledger.event(f"{fault} {detail}".strip())

    def _signal(self, handle: ManagedProcess, what: str) -> None:
        if self.rng.random() < 0.5:
            self.ledger.event(f"SIGKILL {handle.name}")
            handle.kill()
            self._note(f"{what} SIGKILL", f"{handle.name} dead")
        else:
            self.ledger.event(f"SIGTERM {handle.name}")
            handle.stop()
            self._note(f"{what} SIGTERM", f"{handle.name} stopped")

    def _start(self, handle: ManagedProcess) -> None:
        handle.start()
        self.ledger.event(f"{handle.name} ready again")

    def _bounce(self, handle: ManagedProcess, what: str) -> None:
        """Kill or stop a server, leave it down a moment, start it again (at the same address)."""
        self._signal(handle, what)
        # How long it stays down: sometimes longer than the clients' retries of control calls (about 1.5 s).
        time.sleep(self.rng.uniform(0.05, 3.0))
        self._start(handle)
        self.recover(what)

    def _gateway(self) -> None:
        self._bounce(self.fabric.gateways[0], "gateway")

    def _etcd(self) -> None:
        self._bounce(self.fabric.etcd_members[0], "etcd")

    def _up(self) -> list[int]:
        return [i for i in range(len(self.fabric.containers)) if i not in self.down | self.frozen]

    def _restart_container(self, index: int) -> None:
        self._start(self.fabric.containers[index])
        self.down.discard(index)
        self.figures.faults["container restart"] += 1
        self.recover(f"container{index}")

    def _container(self) -> None:
        """Take a container down (at most ``max_down`` at once) or bring one back."""
        full = len(self.down | self.frozen) >= self.scenario.max_down
        if self.down and (full or self.rng.random() < 0.45):
            self._restart_container(self.rng.choice(sorted(self.down)))
        elif not full:
            index = self.rng.choice(self._up())
            self._signal(self.fabric.containers[index], "container")
            self.down.add(index)

    def _freeze(self) -> None:
        """SIGSTOP a container for a moment: its calls hang instead of failing."""
        if len(self.down | self.frozen) >= self.scenario.max_down:
            return self._container()
        index = self.rng.choice(self._up())
        pid = self.fabric.containers[index].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        self.frozen.add(index)
        self._note("container SIGSTOP", f"container{index} frozen")
        try:
            time.sleep(self.rng.uniform(0.5, 3.0))  # how long it stays frozen: part of the fault
        finally:
            self._thaw(index)

    def _thaw(self, index: int) -> None:
        pid = self.fabric.containers[index].pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
            self.ledger.event(f"container{index} thawed")
        self.frozen.discard(index)

    def _outage(self) -> None:
        """More than m containers down at once: reads must say Unavailable (the chunks are not lost)."""
        for index in sorted(self.down):
            self._restart_container(index)
        lost = self.rng.sample(range(len(self.fabric.containers)), M + 1)
        for index in lost:
            self._signal(self.fabric.containers[index], "container")
            self.down.add(index)
        self._note(f"{M + 1} containers down")
        time.sleep(self.rng.uniform(1.0, 6.0))  # the outage's length: part of the fault
        for index in lost:
            self._start(self.fabric.containers[index])
            self.down.discard(index)
            self.figures.faults["container restart"] += 1
        self.recover(f"{M + 1} containers")

    def _damage(self) -> None:
        """Corrupt, truncate or remove chunk files: at most m chunks of any one object, over the whole run."""
        for _ in range(self.rng.randint(1, 3)):
            mode = self.rng.choice(["flip", "truncate", "remove"])
            key = self.ledger.pick_damageable(self.picks)
            if key is None:
                return
            try:
                stat = self.probe.stat(key=key, token_user=self.token)
            except DynoStoreError:
                continue  # the gateway cannot tell now which chunks are missing: damage another time
            index = self.ledger.claim_damage(key, {c.index for c in stat.chunks if not c.stored}, self.picks)
            if index is None:
                continue
            for container in self.fabric.containers:
                with contextlib.suppress(FileNotFoundError):
                    self._hurt(chunk_path(container, key, index), mode)
            self._note(f"chunk {mode}", f"{key}.{index}")

    def _hurt(self, path: Path, mode: str) -> None:
        if mode == "remove":
            path.unlink()
            return
        raw = bytearray(path.read_bytes())
        if mode == "truncate" or not raw:
            path.write_bytes(bytes(raw[: self.picks.randrange(len(raw))] if raw else b""))
            return
        for _ in range(self.picks.randint(1, 3)):
            raw[self.picks.randrange(len(raw))] ^= self.picks.randint(1, 255)
        path.write_bytes(bytes(raw))


# after the run ---------------------------------------------------------------


class Checker:
    """The invariants, checked once every process is back and the fabric is healthy."""

    def __init__(self, fabric: LocalFabric, client: Client, token: str, ledger: Ledger) -> None:
        self.fabric = fabric
        self.client = client
        self.token = token
        self.ledger = ledger
        self.figures = ledger.figures

    def violation(self, message: str) -> None:
        self.ledger.violation(message)

    def registered(self) -> bool:
        """Whether every container is registered, at the address it serves on now."""
        with grpc.insecure_channel(self.fabric.gateway) as channel:
            try:
                reply = gateway_pb2_grpc.GatewayStub(channel).ListContainers(
                    gateway_pb2.ListContainersRequest(), metadata=auth_metadata(self.token), timeout=10
                )
            except grpc.RpcError:
                return False
        listed = {c.id: c.address for c in reply.containers}
        return all(listed.get(c.container_id) == c.address for c in self.fabric.containers)

    def read(self, key: str) -> bytes | None:
        """The object's bytes, None if there is none; any other failure is a violation (raised as AssertionError)."""
        try:
            return self.client.get(key=key, token_user=self.token)
        except NotFound:
            return None

    def check(self) -> None:
        started = time.monotonic()
        ledger = self.ledger
        listed = {info.key: info for info in self.client.list(catalog=CATALOG, token_user=self.token)}
        expected: dict[str, Attempt] = {}  # every object that must survive, with the put that made it
        for attempt in list(ledger.attempts.values()):
            key = attempt.key or attempt.planned
            if not key:
                continue  # an unplanned put that raised: found by name in the listing below
            try:
                data = self.read(key)
            except DynoStoreError as exc:
                self.violation(f"after recovery, {key} ({attempt.name}) cannot be read: {error_name(exc)}: {exc}")
                continue
            must_exist = bool(attempt.key or attempt.landed) and key not in ledger.evicting
            if data is None:
                if must_exist:
                    what = "returned" if attempt.key else "found committed by a retry"
                    self.violation(f"after recovery, {key} ({attempt.name}, {what}) is gone; it was never evicted")
                elif key in listed:
                    self.violation(f"{key} ({attempt.name}) is listed but reads as absent")
                continue
            if digest(data) != attempt.digest:
                self.violation(f"after recovery, {key} ({attempt.name}) reads back other bytes")
            if key in ledger.evicted:
                self.violation(f"after recovery, {key} ({attempt.name}) is readable although its evict returned")
            if key not in listed:
                self.violation(f"{key} ({attempt.name}) is readable but not listed in its catalog")
            expected[key] = attempt
            if not attempt.key:
                self.figures.appeared += 1
        for key, info in listed.items():
            if key in expected:
                attempt = expected[key]
                if (info.name, info.size) != (attempt.name, attempt.size):
                    self.violation(f"{key} is listed as {info.name!r} of {info.size} bytes, put as {attempt.name!r}")
                continue
            raised = ledger.attempts.get(info.name)
            if raised is None or raised.key or raised.planned:
                self.violation(f"listed object {key} ({info.name!r}, {info.size} bytes) matches no put that raised")
                continue
            if raised.size != info.size:
                self.violation(f"listed object {key} has {info.size} bytes; put {info.name} had {raised.size}")
            try:
                data = self.read(key)
            except DynoStoreError as exc:
                self.violation(f"listed object {key} ({info.name}), from a put that raised, is unreadable: {exc}")
                continue
            if data is None or digest(data) != raised.digest:
                self.violation(f"listed object {key} ({info.name}), from a put that raised, is not what was put")
                continue
            self.figures.appeared += 1
            expected[key] = raised  # a put that raised: the ledger knows it by name only
        self.figures.objects_checked = len(expected)
        self.sweep(expected)
        self.figures.verify_seconds = time.monotonic() - started

    def explain(self, key: str, attempt: Attempt, before: ObjectStat, rebuilt: int) -> None:
        """Count why the sweep had chunks of ``key`` to rebuild; one it cannot explain is a violation."""
        reasons = []
        if any(not c.stored for c in before.chunks):
            reasons.append("recorded missing")
        if any(c.stored and not c.live for c in before.chunks):
            reasons.append("on a container gone")
        if len({c.container_id for c in before.chunks}) < len(before.chunks):
            reasons.append("sharing a container")
        if self.ledger.damaged.get(key):
            reasons.append("damaged by the suite")
        for reason in reasons:
            self.figures.rebuilt_because[reason] += 1
        if not reasons:
            self.violation(
                f"the repair sweep rebuilt {rebuilt} chunks of {key} ({attempt.name}, put by {attempt.op or 'a put'} "
                f"that {'returned' if attempt.key else 'raised'}), all recorded stored, on live containers of their "
                f"own, and none damaged by the suite: chunks {before.chunks}"
            )

    def sweep(self, objects: dict[str, Attempt]) -> None:
        """Repair (verify) every surviving object (key: its put); then each has n chunks on distinct live containers."""
        for key in sorted(objects):
            attempt = objects[key]
            if not attempt.chunked:
                continue
            rebuilt: list[int] = []

            def repaired(key: str = key, rebuilt: list[int] = rebuilt) -> bool:
                try:
                    rebuilt.append(self.client.repair(key, token_user=self.token, verify=True))
                except (Unavailable, FailedPrecondition):
                    return False  # a container just back, or a repair sweep of the gateway's in between
                return True

            try:
                before = self.client.stat(key=key, token_user=self.token)
                if not within(RECOVERY_LIMIT, repaired):
                    self.violation(f"repair of {key} ({attempt.name}) kept failing after recovery")
                    continue
                self.figures.rebuilt += sum(rebuilt)
                if sum(rebuilt):
                    self.explain(key, attempt, before, sum(rebuilt))
                stat = self.client.stat(key=key, token_user=self.token)
                again = self.client.repair(key, token_user=self.token, verify=True)
                data = self.read(key)
            except DynoStoreError as exc:
                self.violation(f"repair sweep of {key} ({attempt.name}): {error_name(exc)}: {exc}")
                continue
            chunks = sorted(stat.chunks, key=lambda c: c.index)
            where = {c.container_id for c in chunks}
            if [c.index for c in chunks] != list(range(N)) or not all(c.stored and c.live for c in chunks):
                self.violation(f"after repair, {key} ({attempt.name}) has chunks {chunks}")
            elif len(where) != N:
                self.violation(f"after repair, the {N} chunks of {key} ({attempt.name}) share containers: {chunks}")
            if again:
                self.violation(f"a second repair of {key} ({attempt.name}) rebuilt {again} more chunks")
            if data is None or digest(data) != attempt.digest:
                self.violation(f"after repair, {key} ({attempt.name}) does not read back whole")


# one run ---------------------------------------------------------------------


def server_logs(fabric: LocalFabric, figures: Figures) -> None:
    """Figures from the servers' logs: the gateway's repairs, and the records logged with a traceback."""
    chained = ("The above exception", "During handling of the above exception")
    logged: Counter[str] = Counter()
    for path in sorted((fabric.root / "logs").glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        if path.stem == "gateway":
            figures.sweep_repairs = sum("Repaired object" in line for line in lines)
        for number, line in enumerate(lines):
            if not line.startswith("Traceback"):
                continue
            before = next((x for x in reversed(lines[:number]) if x.strip()), "")
            if before.startswith(chained):
                continue  # the same record's chained exception
            figures.server_tracebacks[path.stem] += 1
            # The record's message, without its time stamp and with its numbers masked.
            message = re.sub(r"\d+(\.\d+)?", "N", before.split(" ", 2)[-1])
            logged[f"{path.stem}: {message[:200]}"] += 1
    for message, count in logged.most_common(5):
        figures.notes.append(f"{count} records logged with a traceback: {message}")


def run_scenario(scenario: Scenario, seed: int, root: Path) -> Figures:
    """Run ``scenario`` with ``seed`` on a fabric of its own under ``root``; return its figures."""
    began = time.monotonic()
    figures = Figures(scenario.name, seed)
    ledger = Ledger(figures)
    rng = random.Random(seed)
    seconds = float(os.environ.get(SECONDS_ENV) or scenario.seconds)
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    with LocalFabric(
        containers=N,
        root=root / "fabric",
        k=K,
        m=M,
        inline_max_bytes=INLINE_MAX,
        repair_interval=scenario.repair_interval,
        repair_grace=scenario.repair_grace,
    ) as fabric:
        token = fabric.create_user("chaos")
        with (
            fabric.client(timeout=20.0, fragment_timeout=4.0) as first,
            fabric.client(timeout=20.0, fragment_timeout=4.0) as second,
            fabric.client(timeout=20.0, fragment_timeout=4.0) as probe,
        ):
            faults = Faults(fabric, scenario, rng, ledger, probe, token)
            start = time.monotonic()
            deadline = start + seconds
            workers = [
                Worker(i, (first, second)[i % 2], token, ledger, rng.randrange(2**32), files, deadline)
                for i in range(WORKERS)
            ]
            for worker in workers:
                worker.start()
            try:
                faults.run(deadline)
            except Exception as exc:  # a process that did not start again, say: the workload goes on without faults
                ledger.violation(f"the fault loop failed: {exc!r}\n{traceback.format_exc()}")
            try:
                faults.restore()
            except Exception as exc:
                ledger.violation(f"the fabric could not be brought back: {exc!r}")
                restored = False
            else:
                restored = True
            for worker in workers:
                worker.join(JOIN_LIMIT)
                if worker.is_alive():
                    ledger.violation(f"{worker.name} did not finish within {JOIN_LIMIT} s of the deadline")
            figures.workload_seconds = time.monotonic() - start
            if restored:
                checker = Checker(fabric, probe, token, ledger)
                if not within(RECOVERY_LIMIT, checker.registered):
                    ledger.violation(f"not every container registered again within {RECOVERY_LIMIT} s")
                faults.recover("the whole fabric")
                checker.check()
            server_logs(fabric, figures)
    figures.total_seconds = time.monotonic() - began
    return figures


# the report ------------------------------------------------------------------

FIGURES_START = "<!-- fault-figures:start -->"
FIGURES_END = "<!-- fault-figures:end -->"


def _seconds(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} / {max(times):.2f} s" if times else "-"


def _because(figures: Figures) -> str:
    reasons = ", ".join(f"{why} {n}" for why, n in figures.rebuilt_because.most_common())
    return f" (objects: {reasons})" if reasons else ""


def markdown(results: list[Figures], command: str) -> str:
    """The figures of a run as Markdown: one table row per scenario run, then the outcomes of each operation."""
    lines = [
        f"Produced by `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores).",
        "",
        "| Scenario | Seed | Faults injected | Ops (ok / failed) | Recovery (median / max) "
        "| Objects checked | Failed puts found whole | Chunks rebuilt after | Sweep repairs | Violations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in results:
        faults = ", ".join(f"{kind} x{n}" for kind, n in sorted(f.faults.items())) or "none"
        lines.append(
            f"| {f.scenario} | {f.seed} | {faults} | {f.ok} / {f.failed} | {_seconds(f.measured())} "
            f"| {f.objects_checked} | {f.appeared} | {f.rebuilt}{_because(f)} | {f.sweep_repairs} "
            f"| {len(f.violations)} |"
        )
    total: dict[str, Counter[str]] = {}
    for f in results:
        for (op, outcome), n in f.ops.items():
            total.setdefault(op, Counter())[outcome] += n
    lines += ["", "Outcomes of the operations, over all scenarios:", "", "| Operation | Outcomes |", "|---|---|"]
    for op, outcomes in sorted(total.items()):
        lines.append(f"| `{op}` | " + ", ".join(f"{o} {n}" for o, n in outcomes.most_common()) + " |")
    restarts: dict[str, list[float]] = {}
    for f in results:
        for what, seconds in f.recoveries:
            if seconds is not None:
                restarts.setdefault(what.rstrip("0123456789"), []).append(seconds)
    lines += ["", "Time from a restart until a put works again:", "", "| Restarted | Restarts | Median / max |"]
    lines.append("|---|---|---|")
    for what, times in sorted(restarts.items()):
        lines.append(f"| {what} | {len(times)} | {_seconds(times)} |")
    return "\n".join(lines) + "\n"


def write_report(path: Path, results: list[Figures], command: str) -> None:
    """Put the figures between the figure markers of ``path`` (appended with the markers if it has none)."""
    text = path.read_text() if path.exists() else ""
    block = f"{FIGURES_START}\n{markdown(results, command)}{FIGURES_END}"
    if FIGURES_START in text and FIGURES_END in text:
        head, rest = text.split(FIGURES_START, 1)
        text = head + block + rest.split(FIGURES_END, 1)[1]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.write_text(text)


# hygiene ---------------------------------------------------------------------


def hygiene(figures: Figures, records: list[logging.LogRecord], stderr: str) -> None:
    """The clients' log and standard error: no abandoned tasks or loops, no tracebacks."""
    tracebacks = [r for r in records if r.exc_info or r.exc_text]
    if tracebacks:
        first = tracebacks[0]
        figures.violations.append(
            f"{len(tracebacks)} log records with a traceback, the first from {first.name}: {first.getMessage()}"
        )
    for phrase in ABANDONED:
        logged = [r for r in records if phrase in r.getMessage()]
        if logged:
            figures.violations.append(f"{len(logged)} log records say {phrase!r}: {logged[0].getMessage()}")
        if phrase in stderr:
            figures.violations.append(f"standard error says {phrase!r}")
    if "Traceback" in stderr:
        figures.violations.append("standard error holds a traceback: " + stderr[stderr.index("Traceback") :][:2000])
