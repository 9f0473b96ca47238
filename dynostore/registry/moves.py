"""Drains and rebalances: the flags that ask for them and the progress gateways publish.

A drain flag (``drains/<id>``) keeps new chunks off a container until it is
removed; a rebalance request (``rebalance``) stays until the rebalance is
done or stopped. Both outlive the gateway that works on them, so any gateway
resumes them. Forgetting a container (``container rm``) deletes what the
fabric remembers of it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from dynostore.registry import keys
from dynostore.registry.base import RegistryBase, etcd_errors

# How many stuck keys a progress record keeps (the count is exact).
STUCK_KEYS_KEPT = 20


@dataclass
class MoveProgress:
    """What a drain or a rebalance did so far (published by the gateway doing it)."""

    container_id: str = ""  # the drained container; "" for a rebalance
    gateway: str = ""
    running: bool = False
    done: bool = False
    started: float = 0.0
    finished: float = 0.0
    updated: float = 0.0
    objects_moved: int = 0
    chunks_moved: int = 0
    bytes_moved: int = 0
    chunks_left: int = 0
    bytes_left: int = 0
    stuck_objects: int = 0
    stuck_keys: list[str] = field(default_factory=list)
    bandwidth: int = 0
    error: str = ""

    @classmethod
    def from_json(cls, raw: bytes | str) -> MoveProgress:
        """Read a published record, ignoring fields a newer gateway may add."""
        data = json.loads(raw)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class MoveCalls(RegistryBase):
    """Drain flags, the rebalance request, their progress, and forgetting a container."""

    @etcd_errors
    async def set_drain(self, container_id: str, bandwidth: int, now: float) -> dict[str, Any]:
        """Set (or update the bandwidth of) a container's drain flag; return the flag."""
        found = await self.etcd.get(keys.drain(container_id))
        started = json.loads(found.value)["started"] if found is not None else now
        flag = {"bandwidth": bandwidth, "started": started}
        await self.etcd.put(keys.drain(container_id), json.dumps(flag).encode())
        return flag

    @etcd_errors
    async def clear_drain(self, container_id: str) -> bool:
        """Clear a container's drain flag; whether it was set."""
        deleted = await self.etcd.delete(keys.drain(container_id))
        return bool(deleted)

    @etcd_errors
    async def drains(self) -> dict[str, dict[str, Any]]:
        """Container id -> its drain flag, for every container being drained."""
        prefix = keys.drains_prefix()
        return {kv.key[len(prefix) :].decode(): json.loads(kv.value) for kv in await self.etcd.get_prefix(prefix)}

    @etcd_errors
    async def write_drain_progress(self, progress: MoveProgress) -> None:
        """Publish a drain's progress."""
        await self.etcd.put(keys.drain_progress(progress.container_id), json.dumps(asdict(progress)).encode())

    @etcd_errors
    async def drain_progresses(self) -> dict[str, MoveProgress]:
        """Container id -> the last published progress of its drain."""
        prefix = keys.drain_progress_prefix()
        found = await self.etcd.get_prefix(prefix)
        return {kv.key[len(prefix) :].decode(): MoveProgress.from_json(kv.value) for kv in found}

    @etcd_errors
    async def set_rebalance(self, bandwidth: int, now: float) -> dict[str, Any]:
        """Ask for a rebalance (or change its bandwidth); return the request."""
        found = await self.etcd.get(keys.rebalance())
        started = json.loads(found.value)["started"] if found is not None else now
        request = {"bandwidth": bandwidth, "started": started}
        await self.etcd.put(keys.rebalance(), json.dumps(request).encode())
        return request

    @etcd_errors
    async def clear_rebalance(self) -> bool:
        """Withdraw the rebalance request; whether there was one."""
        return bool(await self.etcd.delete(keys.rebalance()))

    @etcd_errors
    async def rebalance_request(self) -> dict[str, Any] | None:
        """The rebalance request, or None."""
        found = await self.etcd.get(keys.rebalance())
        return json.loads(found.value) if found is not None else None

    @etcd_errors
    async def write_rebalance_progress(self, progress: MoveProgress) -> None:
        """Publish the rebalance's progress."""
        await self.etcd.put(keys.rebalance_progress(), json.dumps(asdict(progress)).encode())

    @etcd_errors
    async def rebalance_progress(self) -> MoveProgress:
        """The last published rebalance progress (all zero before the first)."""
        found = await self.etcd.get(keys.rebalance_progress())
        return MoveProgress.from_json(found.value) if found is not None else MoveProgress()

    @etcd_errors
    async def forget_container(self, container_id: str) -> None:
        """Delete what the fabric keeps of a container: owner, last-seen state, drain flag and progress."""
        await self.etcd.transaction(
            compare=[],
            success=[
                self._tx.delete(keys.container_owner(container_id)),
                self._tx.delete(keys.container_seen(container_id)),
                self._tx.delete(keys.drain(container_id)),
                self._tx.delete(keys.drain_progress(container_id)),
            ],
            failure=[],
        )
        self._container_owners.pop(container_id, None)
