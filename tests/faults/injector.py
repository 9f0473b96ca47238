"""The seeded fault loop: kills, freezes, restarts and outages of the fabric's processes, and rotting chunk files."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from dynostore.client import Client
from dynostore.errors import DynoStoreError
from dynostore.local import ContainerHandle, LocalFabric, ManagedProcess
from tests.faults.ledger import CATALOG, RECOVERY_LIMIT, Ledger, M, within


@dataclass(frozen=True)
class Scenario:
    """One row of the fault matrix.

    Attributes:
        name: short name (the test id).
        faults: the fault kinds the loop draws from: ``gateway``, ``etcd``,
            ``container``, ``freeze``, ``damage``, ``outage``, ``together``
            (a gateway, an etcd member and a container at once), ``door``
            (the S3 front door).
        summary: what it does, for the report.
        seed: its default seed (``DYNOSTORE_FAULT_SEED`` replaces it).
        seconds: length of the workload (``DYNOSTORE_FAULT_SECONDS`` replaces it).
        trials: how many seeds it runs with, its seed and the next ones (``DYNOSTORE_FAULT_TRIALS`` replaces it).
        max_down: containers down (stopped, killed or frozen) at once, at most.
        repair_interval: the gateway's repair sweeps (None: its default, 300 s: none during the run).
        repair_grace: how long a container may be gone before a sweep rebuilds its chunks elsewhere.
        etcd_members, gateways: the fabric's etcd cluster and gateways (the clients know every gateway).
        s3: the workload goes through the S3 front door with boto3 (``tests/faults/door.py``).
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
    etcd_members: int = 1
    gateways: int = 1
    s3: bool = False


def chunk_path(container: ContainerHandle, key: str, index: int) -> Path:
    """Where an fs container keeps chunk ``index`` of ``key``."""
    return container.root / "data" / "chunks" / key[:2] / f"{key}.{index}"


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
        """Thaw and start whatever is down: etcd, then the gateways, the containers and the S3 door."""
        for index in sorted(self.frozen):
            self._thaw(index)
        door = [self.fabric.s3] if self.fabric.s3 else []
        for handle in [*self.fabric.etcd_members, *self.fabric.gateways, *self.fabric.containers, *door]:
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
        self._bounce(self.rng.choice(self.fabric.gateways), "gateway")

    def _etcd(self) -> None:
        self._bounce(self.rng.choice(self.fabric.etcd_members), "etcd")

    def _door(self) -> None:
        assert self.fabric.s3 is not None, "a door fault needs LocalFabric(s3=True)"
        self._bounce(self.fabric.s3, "door")

    def _together(self) -> None:
        """A gateway, an etcd member and a container (while fewer than ``max_down`` are down) at once, then back."""
        handles: list[tuple[ManagedProcess, str]] = [
            (self.rng.choice(self.fabric.gateways), "gateway"),
            (self.rng.choice(self.fabric.etcd_members), "etcd"),
        ]
        if len(self.down | self.frozen) < self.scenario.max_down:
            index = self.rng.choice(self._up())
            handles.append((self.fabric.containers[index], "container"))
        for handle, what in handles:
            self._signal(handle, what)
        self._note(f"{len(handles)} processes down at once", ", ".join(handle.name for handle, _ in handles))
        time.sleep(self.rng.uniform(0.05, 3.0))  # how long they stay down: part of the fault
        for handle, _ in handles:
            self._start(handle)
        self.recover("a gateway, an etcd member and a container")

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
            stored_as = stat.info.version or key  # a replaced object's chunks are its version's
            for container in self.fabric.containers:
                with contextlib.suppress(FileNotFoundError):
                    self._hurt(chunk_path(container, stored_as, index), mode)
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
