"""The fabric at a glance, as the SDK reports it: :meth:`Client.status` and ``dynostore status``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from dynostore._proto import gateway_pb2


@dataclass(frozen=True)
class GatewayStatus:
    """A gateway serving now."""

    address: str
    started: float
    version: str


@dataclass(frozen=True)
class EtcdMemberStatus:
    """One etcd member, as the answering gateway reaches it."""

    endpoint: str
    healthy: bool
    leader: bool
    db_size_bytes: int
    error: str = ""


@dataclass(frozen=True)
class MoveStatus:
    """Progress of a drain (of ``container_id``) or of a rebalance (``container_id`` empty)."""

    container_id: str = ""
    # Wanted (drain flag or rebalance request set), being worked on now, finished.
    active: bool = False
    running: bool = False
    done: bool = False
    gateway: str = ""
    # Seconds since the epoch; finished is 0 until done, updated is the last publication.
    started: float = 0.0
    finished: float = 0.0
    updated: float = 0.0
    objects_moved: int = 0
    chunks_moved: int = 0
    bytes_moved: int = 0
    chunks_left: int = 0
    bytes_left: int = 0
    # Objects with a chunk no container could take (it stays where it was), and some of their keys.
    stuck_objects: int = 0
    stuck_keys: tuple[str, ...] = ()
    # Bytes per second the moves may take (0: no limit).
    bandwidth: int = 0
    error: str = ""

    @property
    def rate(self) -> float:
        """Bytes moved per second since the job started (0 before it published anything)."""
        elapsed = (self.finished or self.updated) - self.started
        return self.bytes_moved / elapsed if self.started and elapsed > 0 else 0.0

    def describe(self) -> str:
        """One line: moved so far, rate, what is left, what is stuck."""
        state = (
            "done"
            if self.done
            else "running"
            if self.running
            else "wanted, waiting for a gateway"
            if self.active
            else "stopped"
        )
        left = f", {self.chunks_left} chunks ({_size(self.bytes_left)}) left" if not self.done else ""
        eta = f", about {_ago(self.bytes_left / self.rate)} left" if self.running and self.rate > 0 else ""
        stuck = ""
        if self.stuck_objects:
            stuck = f"; {self.stuck_objects} object(s) stuck (no container can take their chunk)"
        limit = f", limit {_size(self.bandwidth)}/s" if self.bandwidth else ""
        return (
            f"{state}: {self.objects_moved} objects, {self.chunks_moved} chunks, {_size(self.bytes_moved)} moved "
            f"at {_size(int(self.rate))}/s{limit}{left}{eta}{stuck}"
        )


def move_status(m: gateway_pb2.MoveStatus) -> MoveStatus:
    """The SDK's view of a drain's or rebalance's progress."""
    return MoveStatus(
        container_id=m.container_id,
        active=m.active,
        running=m.running,
        done=m.done,
        gateway=m.gateway,
        started=m.started,
        finished=m.finished,
        updated=m.updated,
        objects_moved=m.objects_moved,
        chunks_moved=m.chunks_moved,
        bytes_moved=m.bytes_moved,
        chunks_left=m.chunks_left,
        bytes_left=m.bytes_left,
        stuck_objects=m.stuck_objects,
        stuck_keys=tuple(m.stuck_keys),
        bandwidth=m.bandwidth,
        error=m.error,
    )


@dataclass(frozen=True)
class ContainerStatus:
    """A container of the fabric, up or down; figures as of its last heartbeat."""

    id: str
    address: str
    site: str
    backend: str
    up: bool
    capacity_bytes: int
    free_bytes: int
    chunk_count: int
    # Seconds since the epoch: when it registered (up since), its last heartbeat,
    # and when its last scrub finished (0: unknown, or none yet).
    registered: float
    last_seen: float
    last_scrub: float
    # Being drained (no new chunks go there), and how far its drain is (or the last one was).
    draining: bool = False
    drain: MoveStatus = MoveStatus()

    @property
    def used_bytes(self) -> int:
        """Capacity minus free space (the backend's whole volume, not only chunks)."""
        return max(self.capacity_bytes - self.free_bytes, 0)


@dataclass(frozen=True)
class RepairStatus:
    """The running repair sweep, or the last one (all zero before the first)."""

    running: bool
    gateway: str
    started: float
    finished: float
    objects_checked: int
    objects_total: int
    degraded_objects: int
    chunks_rebuilt: int
    unrepaired_objects: int
    bytes_repaired: int


@dataclass(frozen=True)
class FabricStatus:
    """Gateways, etcd members, containers, totals and repair, as one gateway sees them."""

    gateways: list[GatewayStatus]
    etcd_members: list[EtcdMemberStatus]
    containers: list[ContainerStatus]
    objects: int
    bytes: int
    repair: RepairStatus
    # The running (or last) rebalance.
    rebalance: MoveStatus = MoveStatus()

    @property
    def capacity_bytes(self) -> int:
        """The capacity of the containers up."""
        return sum(c.capacity_bytes for c in self.containers if c.up)

    @property
    def free_bytes(self) -> int:
        """The free space of the containers up."""
        return sum(c.free_bytes for c in self.containers if c.up)

    @property
    def healthy(self) -> bool:
        """Every etcd member and container up, and the last repair sweep found nothing degraded."""
        return (
            all(m.healthy for m in self.etcd_members)
            and all(c.up for c in self.containers)
            and self.repair.degraded_objects == 0
            and self.repair.unrepaired_objects == 0
        )

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-ready values (``dynostore status --json``)."""
        return {
            **asdict(self),
            "healthy": self.healthy,
            "capacity_bytes": self.capacity_bytes,
            "free_bytes": self.free_bytes,
        }

    def describe(self, now: float | None = None) -> str:
        """A few lines for people: what is up, what is down, what repair does."""
        now = time.time() if now is None else now
        lines = [f"fabric: {'healthy' if self.healthy else 'DEGRADED'}"]
        lines.append(f"gateways ({len(self.gateways)}):")
        lines += [f"  {g.address}  up {_ago(now - g.started)}  version {g.version}" for g in self.gateways]
        lines.append(f"etcd members ({sum(m.healthy for m in self.etcd_members)}/{len(self.etcd_members)} healthy):")
        for m in self.etcd_members:
            state = ("healthy, leader" if m.leader else "healthy") if m.healthy else f"DOWN: {m.error}"
            lines.append(f"  {m.endpoint}  {state}" + (f"  db {_size(m.db_size_bytes)}" if m.healthy else ""))
        up = sum(c.up for c in self.containers)
        lines.append(f"containers ({up}/{len(self.containers)} up):")
        for c in self.containers:
            state = f"up {_ago(now - c.registered)}" if c.up else f"DOWN, last seen {_when(now, c.last_seen)}"
            scrub = f"scrubbed {_when(now, c.last_scrub)}" if c.last_scrub else "not scrubbed yet"
            lines.append(
                f"  {c.id}  site {c.site or '-'}  {c.backend}  {c.address}  {state}  "
                f"free {_size(c.free_bytes)} of {_size(c.capacity_bytes)}  {c.chunk_count} chunks  {scrub}"
            )
            if c.draining or c.drain.started:
                lines.append(f"    {'DRAINING' if c.draining else 'drain'} {c.drain.describe()}")
        lines.append(
            f"totals: {self.objects} objects, {_size(self.bytes)}; "
            f"capacity {_size(self.capacity_bytes)}, free {_size(self.free_bytes)}"
        )
        lines.append(_repair_line(self.repair, now))
        if self.rebalance.started:
            lines.append(f"rebalance: {self.rebalance.describe()}")
        return "\n".join(lines)


def _repair_line(r: RepairStatus, now: float) -> str:
    if not r.started:
        return "repair: no sweep yet"
    found = f"{r.degraded_objects} degraded, {r.chunks_rebuilt} chunks rebuilt, {r.unrepaired_objects} not repaired"
    if not r.running:
        return (
            f"repair: last sweep {_when(now, r.finished)} by {r.gateway}: {r.objects_checked} objects checked, {found}"
        )
    done = f"{r.objects_checked}/{r.objects_total}" if r.objects_total else str(r.objects_checked)
    rate = r.objects_checked / max(now - r.started, 1e-3)
    left = max(r.objects_total - r.objects_checked, 0)
    eta = f", about {_ago(left / rate)} left" if rate > 0 and r.objects_total else ""
    return f"repair: sweep running on {r.gateway} since {_when(now, r.started)}: {done} objects checked{eta}; {found}"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} s"


def _when(now: float, moment: float) -> str:
    return f"{_ago(now - moment)} ago" if moment else "never"


def fabric_status(reply: gateway_pb2.GetStatusResponse) -> FabricStatus:
    """The SDK's view of a GetStatus answer."""
    r = reply.repair
    return FabricStatus(
        gateways=[GatewayStatus(g.address, g.started, g.version) for g in reply.gateways],
        etcd_members=[
            EtcdMemberStatus(m.endpoint, m.healthy, m.leader, m.db_size_bytes, m.error) for m in reply.etcd_members
        ],
        containers=[
            ContainerStatus(
                id=c.container.id,
                address=c.container.address,
                site=c.container.site,
                backend=c.container.backend,
                up=c.up,
                capacity_bytes=c.container.capacity_bytes,
                free_bytes=c.container.free_bytes,
                chunk_count=c.container.chunk_count,
                registered=c.container.registered,
                last_seen=c.last_seen,
                last_scrub=c.container.last_scrub,
                draining=c.draining,
                drain=move_status(c.drain),
            )
            for c in reply.containers
        ],
        objects=reply.objects,
        bytes=reply.bytes,
        repair=RepairStatus(
            running=r.running,
            gateway=r.gateway,
            started=r.started,
            finished=r.finished,
            objects_checked=r.objects_checked,
            objects_total=r.objects_total,
            degraded_objects=r.degraded_objects,
            chunks_rebuilt=r.chunks_rebuilt,
            unrepaired_objects=r.unrepaired_objects,
            bytes_repaired=r.bytes_repaired,
        ),
        rebalance=move_status(reply.rebalance),
    )
