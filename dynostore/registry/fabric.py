"""Fabric-wide records for operators: gateways, containers last seen, repair progress, etcd members' health.

They feed ``dynostore status`` (the gateway's GetStatus). None of them is
needed to store or read an object: a gateway that cannot write them logs it
and goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import aetcd
import grpc

from dynostore.registry import keys
from dynostore.registry.base import RegistryBase, etcd_errors
from dynostore.registry.records import entry_expired

# How long one etcd member may take to answer a health check.
MEMBER_CHECK_SECONDS = 2.0


@dataclass
class RepairProgress:
    """What the last (or the running) repair sweep of the fabric did."""

    gateway: str = ""
    started: float = 0.0
    finished: float = 0.0  # 0 while it runs
    objects_checked: int = 0
    objects_total: int = 0
    degraded_objects: int = 0
    chunks_rebuilt: int = 0
    unrepaired_objects: int = 0
    bytes_repaired: int = 0

    @property
    def running(self) -> bool:
        """Whether the sweep has not finished (or its gateway died during it)."""
        return self.started > 0 and self.finished == 0


@dataclass(frozen=True)
class MemberHealth:
    """One etcd member as this gateway reaches it."""

    endpoint: str
    healthy: bool
    leader: bool = False
    db_size_bytes: int = 0
    error: str = ""


class FabricCalls(RegistryBase):
    """The fabric-wide operator records: gateways, containers last seen, repair progress, members' health."""

    @etcd_errors
    async def register_gateway(self, address: str, version: str, ttl: int) -> int:
        """Announce a gateway under a new lease (kept alive by :meth:`refresh_gateway`); return the lease id."""
        lease = await self.etcd.lease(ttl)
        record = {"address": address, "started": time.time(), "version": version}
        await self.etcd.put(keys.gateway(address), json.dumps(record).encode(), lease=lease)
        return int(lease.id)

    @etcd_errors
    async def refresh_gateway(self, lease_id: int) -> bool:
        """Keep a gateway's announcement alive; False if its lease is gone (announce again)."""
        reply = await self.etcd.refresh_lease(lease_id)
        return reply is not None and reply.TTL > 0

    @etcd_errors
    async def gateways(self) -> list[dict[str, Any]]:
        """The gateways serving now, by address."""
        found = await self.etcd.get_prefix(keys.gateways_prefix())
        return sorted((json.loads(kv.value) for kv in found), key=lambda g: g["address"])

    @etcd_errors
    async def container_seen(self, info: dict[str, Any], now: float) -> None:
        """Record a container's latest state and when it was seen (kept after its lease ends)."""
        await self.etcd.put(keys.container_seen(info["id"]), json.dumps({**info, "last_seen": now}).encode())

    @etcd_errors
    async def containers_seen(self) -> dict[str, dict[str, Any]]:
        """Container id -> its last recorded state, with ``last_seen``, live or not."""
        prefix = keys.container_seen_prefix()
        found = await self.etcd.get_prefix(prefix)
        return {kv.key[len(prefix) :].decode(): json.loads(kv.value) for kv in found}

    @etcd_errors
    async def write_repair_progress(self, progress: RepairProgress) -> None:
        """Publish the progress of the running repair sweep, or its outcome."""
        await self.etcd.put(keys.repair_progress(), json.dumps(asdict(progress)).encode())

    @etcd_errors
    async def repair_progress(self) -> RepairProgress:
        """The last published repair progress (all zero before the first sweep)."""
        found = await self.etcd.get(keys.repair_progress())
        return RepairProgress(**json.loads(found.value)) if found is not None else RepairProgress()

    @etcd_errors
    async def catalog_totals(self) -> list[tuple[str, str, int, int]]:
        """``(owner, catalog, objects, bytes)`` of every catalog, expired objects left out (one read per catalog)."""
        now = time.time()
        totals = []
        for kv in await self.etcd.get_prefix(keys.all_catalogs()):
            record = json.loads(kv.value)
            index = await self.etcd.get_prefix(keys.index_prefix(record["owner"], record["name"]))
            live = [e for e in (json.loads(i.value) for i in index) if not entry_expired(e, now)]
            totals.append((record["owner"], record["name"], len(live), sum(e["size"] for e in live)))
        return totals

    async def member_health(self) -> list[MemberHealth]:
        """Ask every etcd endpoint this gateway was given for its status, at once, each within a bound."""
        return list(await asyncio.gather(*(self._check_member(e) for e in self.etcd.endpoints)))

    async def _check_member(self, endpoint: str) -> MemberHealth:
        try:
            reply = await asyncio.wait_for(
                self.etcd.member_status(endpoint, MEMBER_CHECK_SECONDS), MEMBER_CHECK_SECONDS + 0.5
            )
        except (aetcd.ClientError, grpc.RpcError, TimeoutError, OSError) as exc:
            return MemberHealth(endpoint, healthy=False, error=_reason(exc))
        return MemberHealth(
            endpoint,
            healthy=not reply.errors,
            leader=reply.leader == reply.header.member_id,
            db_size_bytes=reply.dbSize,
            error="; ".join(reply.errors),
        )


def _reason(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    return (text or type(exc).__name__).splitlines()[0][:200]
