"""The gateway's container RPCs: registration, heartbeats, damage reports, chunk checks, ticket keys."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from google.protobuf.json_format import ParseDict

from dynostore import validation
from dynostore._proto import common_pb2, gateway_pb2
from dynostore.errors import DynoStoreError, InvalidArgument
from dynostore.gateway.base import (
    MAX_BATCH,
    GatewayCalls,
    _as_dict,
)

log = logging.getLogger(__name__)


class ContainerCalls(GatewayCalls):
    """The gateway's container RPCs: registration, heartbeats, damage reports, chunk checks, ticket keys."""

    async def RegisterContainer(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RegisterContainerRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RegisterContainerResponse:
        info = request.container
        await self._acting_for(context, info.id)
        if not info.address or len(info.address) > 256:
            raise InvalidArgument("A container must announce its address (host:port).")
        ttl = self.policy.container_ttl
        info.registered = time.time()
        lease_id = await self.registry.register_container(_as_dict(info), ttl)
        self._containers_read = 0.0
        await self._note_seen(_as_dict(info))
        return gateway_pb2.RegisterContainerResponse(
            lease_id=lease_id, ttl_seconds=ttl, ticket_keys=await self._ticket_keys()
        )

    async def _note_seen(self, info: dict[str, Any]) -> None:
        """Record the container's state for the status view; a failure only costs that view's freshness."""
        try:
            await self.registry.container_seen(info, time.time())
        except DynoStoreError as exc:
            log.warning("Could not record container %s as seen: %s", info.get("id"), exc)

    async def _ticket_keys(self) -> list[gateway_pb2.TicketKey]:
        return [gateway_pb2.TicketKey(id=k, public_key=v) for k, v in (await self.authority.published()).items()]

    async def RotateTicketKey(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RotateTicketKeyRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RotateTicketKeyResponse:
        await self._admin(context)
        grace = request.grace_seconds or None
        return gateway_pb2.RotateTicketKeyResponse(id=await self.authority.rotate(grace))

    async def Heartbeat(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.HeartbeatResponse:
        await self._acting_for(context, request.container_id)
        current = {c["id"]: c for c in await self.registry.containers()}.get(request.container_id)
        if current is None:
            return gateway_pb2.HeartbeatResponse(alive=False)
        current["free_bytes"] = request.free_bytes
        if request.capacity_bytes:  # containers older than the status view send none of these
            current.update(
                capacity_bytes=request.capacity_bytes, chunk_count=request.chunk_count, last_scrub=request.last_scrub
            )
        alive = await self.registry.refresh_container(current, request.lease_id)
        if alive:
            await self._note_seen(current)
        return gateway_pb2.HeartbeatResponse(alive=alive, ticket_keys=await self._ticket_keys())

    async def _container_chunks(
        self,
        request: gateway_pb2.ReportDamageRequest | gateway_pb2.CheckChunksRequest,
        context: grpc.aio.ServicerContext,
    ) -> tuple[str, list[tuple[str, int]]]:
        """The container id and ``(key, index)`` chunks of a container's call, caller and values checked."""
        container_id = request.container_id
        await self._acting_for(context, container_id)
        if len(request.chunks) > MAX_BATCH:
            raise InvalidArgument(f"A container call takes at most {MAX_BATCH} chunks, not {len(request.chunks)}.")
        total = validation.MAX_K + validation.MAX_M
        return container_id, [(validation.key(c.key), validation.chunk_index(c.index, total)) for c in request.chunks]

    async def ReportDamage(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ReportDamageRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ReportDamageResponse:
        container_id, chunks = await self._container_chunks(request, context)
        marked = 0
        for key, index in chunks:
            if await self.registry.mark_missing(key, index, container_id):
                marked += 1
                log.warning("Chunk %d of %s is damaged on container %s; recorded as missing.", index, key, container_id)
        return gateway_pb2.ReportDamageResponse(marked=marked)

    async def CheckChunks(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CheckChunksRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CheckChunksResponse:
        container_id, chunks = await self._container_chunks(request, context)
        return gateway_pb2.CheckChunksResponse(referenced=await self.registry.referenced(chunks, container_id))

    async def ListRecordedChunks(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListRecordedChunksRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListRecordedChunksResponse:
        await self._acting_for(context, request.container_id)
        if request.shard >= validation.KEY_SHARDS:
            raise InvalidArgument(f"shard must be below {validation.KEY_SHARDS}, not {request.shard}.")
        held = (request.container_id, True)
        reply = gateway_pb2.ListRecordedChunksResponse()
        for record in await self.registry.shard_records(request.shard):
            reply.chunks.extend(
                gateway_pb2.ChunkId(key=record.chunk_key, index=i)
                for i, chunk in enumerate(record.chunks)
                if chunk == held
            )
        return reply

    async def ListContainers(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListContainersRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListContainersResponse:
        await self._user(context)
        found = await self.registry.containers()
        return gateway_pb2.ListContainersResponse(containers=[ParseDict(c, common_pb2.ContainerInfo()) for c in found])
