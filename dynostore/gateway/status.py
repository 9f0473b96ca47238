"""The gateway's status RPC: the whole fabric at a glance, for operators (``dynostore status``)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import grpc
from google.protobuf.json_format import ParseDict

from dynostore._proto import common_pb2, gateway_pb2
from dynostore.gateway.base import GatewayCalls
from dynostore.gateway.drain import move_status
from dynostore.registry.moves import MoveProgress


class StatusCalls(GatewayCalls):
    """GetStatus: gateways, etcd members, containers up and down, totals, repair sweeps."""

    async def GetStatus(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetStatusResponse:
        await self._user(context)
        # The members' health checks may take seconds (a member down): they run beside the reads.
        health = asyncio.create_task(self.registry.member_health())
        try:
            gateways = await self.registry.gateways()
            live, seen = await self.registry.containers(), await self.registry.containers_seen()
            known = await self.registry.known_containers()
            users, repair = await self.registry.list_users(), await self.registry.repair_progress()
            drains, drained = await self.registry.drains(), await self.registry.drain_progresses()
            rebalance, rebalancing = await self.registry.rebalance_progress(), await self.registry.rebalance_request()
            members = await health
        finally:
            health.cancel()
        usages = await self.registry.usages([u.name for u in users if not u.container])
        return gateway_pb2.GetStatusResponse(
            gateways=[gateway_pb2.GatewayStatus(**g) for g in gateways],
            etcd_members=[gateway_pb2.EtcdMemberStatus(**asdict(m)) for m in members],
            containers=_containers(live, seen, known, set(drains), drained),
            objects=sum(u.objects for u in usages),
            bytes=sum(u.bytes for u in usages),
            repair=gateway_pb2.RepairStatus(running=repair.running, **asdict(repair)),
            rebalance=move_status(rebalance, active=rebalancing is not None),
        )


def _containers(
    live: list[dict[str, Any]],
    seen: dict[str, dict[str, Any]],
    known: set[str],
    draining: set[str],
    drains: dict[str, MoveProgress],
) -> list[gateway_pb2.ContainerStatus]:
    """Every container live or known (registered once, its user not removed), live ones with their current record.

    Those being drained say so, and each drained (or draining) one carries its drain's progress.
    """
    current = {c["id"]: c for c in live}
    found = []
    for container_id in sorted(known | current.keys()):
        last = seen.get(container_id, {})
        record = current.get(container_id) or {k: v for k, v in last.items() if k != "last_seen"}
        if not record:
            record = {"id": container_id}
        info = ParseDict(record, common_pb2.ContainerInfo(), ignore_unknown_fields=True)
        drain = drains.get(container_id) or MoveProgress(container_id=container_id)
        found.append(
            gateway_pb2.ContainerStatus(
                container=info,
                up=container_id in current,
                last_seen=float(last.get("last_seen", 0.0)),
                draining=container_id in draining,
                drain=move_status(drain, active=container_id in draining),
            )
        )
    return found
