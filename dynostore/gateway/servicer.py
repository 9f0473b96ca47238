"""gRPC adapter of the gateway: authenticate, validate, call the registry."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict, ParseDict

from dynostore import validation
from dynostore._proto import common_pb2, container_pb2, container_pb2_grpc, gateway_pb2
from dynostore._proto import gateway_pb2_grpc as pb_grpc
from dynostore.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from dynostore.gateway.tickets import PlanSigner
from dynostore.registry import ObjectRecord, Registry, User
from dynostore.rpc import open_channel

log = logging.getLogger(__name__)
MAX_PLANNED_KEYS = 1000
# The most objects one CommitPut or Locate call takes.
MAX_BATCH = 1000


@dataclass(frozen=True)
class GatewayPolicy:
    """Defaults the gateway applies to puts and membership."""

    k: int = 3
    m: int = 2
    # Bytes encoded together; k fragments of about 1 MiB each by default.
    fragment_target: int = 1024 * 1024
    container_ttl: int = 10
    container_cache_seconds: float = 1.0


def _token_from(context: grpc.aio.ServicerContext) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token:
                return token
    raise Unauthenticated("No token was presented; pass token_user (or set DYNOSTORE_TOKEN).")


class GatewayServicer(pb_grpc.GatewayServicer):
    """The control-path RPCs over one :class:`Registry`."""

    def __init__(self, registry: Registry, policy: GatewayPolicy, signer: PlanSigner) -> None:
        """Serve ``registry`` with the defaults in ``policy``, signing plans with ``signer``."""
        self.registry = registry
        self.policy = policy
        self.signer = signer
        self._containers: list[dict[str, Any]] = []
        self._containers_read = 0.0
        self._background: set[asyncio.Task[None]] = set()

    async def _user(self, context: grpc.aio.ServicerContext) -> User:
        return await self.registry.authenticate(validation.token(_token_from(context)))

    async def _admin(self, context: grpc.aio.ServicerContext) -> User:
        user = await self._user(context)
        if not user.admin:
            raise PermissionDenied("Only an admin token may do this.")
        return user

    async def _live_containers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self._containers_read > self.policy.container_cache_seconds:
            self._containers = await self.registry.containers()
            self._containers_read = now
        return self._containers

    async def _owned(self, key: str, user: User) -> ObjectRecord:
        record = await self.registry.get_object(validation.key(key))
        if record.owner != user.name:
            raise PermissionDenied(f"Object {key} belongs to another user.")
        return record

    # objects ----------------------------------------------------------------

    async def PlanPut(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.PlanPutRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PlanPutResponse:
        user = await self._user(context)
        count = request.count or 1
        if count > MAX_PLANNED_KEYS:
            raise InvalidArgument(f"PlanPut plans at most {MAX_PLANNED_KEYS} keys at once, not {count}.")
        # k == 0 asks for the gateway's default policy.
        asked = (request.k, request.m) if request.k else (self.policy.k, self.policy.m)
        k, m = validation.ec_params(*asked)
        plans = []
        for _ in range(count):
            key = uuid.uuid4().hex
            ticket, expires = self.signer.sign(key, user.name)
            plans.append(gateway_pb2.PlannedKey(key=key, plan_ticket=ticket, expires=expires))
        containers = [ParseDict(c, common_pb2.ContainerInfo()) for c in await self._live_containers()]
        policy = common_pb2.ECPolicy(k=k, m=m, segment_size=k * self.policy.fragment_target)
        return gateway_pb2.PlanPutResponse(plans=plans, policy=policy, containers=containers)

    async def CommitPut(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CommitPutRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CommitPutResponse:
        user = await self._user(context)
        if not 1 <= len(request.objects) <= MAX_BATCH:
            raise InvalidArgument(f"CommitPut takes 1 to {MAX_BATCH} objects, not {len(request.objects)}.")
        now = time.time()
        records = [self._record(commit, user, now) for commit in request.objects]
        if len({r.key for r in records}) != len(records):
            raise InvalidArgument("A CommitPut batch names the same key twice.")
        await self.registry.commit(records)
        return gateway_pb2.CommitPutResponse(objects=[_object_info(r) for r in records])

    def _record(self, commit: gateway_pb2.ObjectCommit, user: User, now: float) -> ObjectRecord:
        """Validate one object of a commit and build its registry record."""
        key = validation.key(commit.key)
        catalog = validation.catalog(commit.catalog)
        name = validation.object_name(commit.name)
        self.signer.check(commit.plan_ticket, key, user.name)
        k, m = validation.ec_params(commit.policy.k, commit.policy.m)
        if commit.policy.segment_size <= 0:
            raise InvalidArgument("The policy's segment_size must be positive.")
        if sorted(c.index for c in commit.chunks) != list(range(k + m)):
            raise InvalidArgument(f"A commit must list chunks 0..{k + m - 1} exactly once.")
        chunks = sorted(commit.chunks, key=lambda c: c.index)
        for c in chunks:
            if c.stored:
                validation.container_id(c.container_id)
        stored = sum(c.stored for c in chunks)
        if stored < min(k + 1, k + m):
            raise InvalidArgument(f"Only {stored} chunks are stored; a put needs at least {min(k + 1, k + m)}.")
        return ObjectRecord(
            key=key,
            owner=user.name,
            catalog=catalog,
            name=name,
            size=commit.size,
            k=k,
            m=m,
            segment_size=commit.policy.segment_size,
            chunks=[(c.container_id, c.stored) for c in chunks],
            created=now,
        )

    async def Locate(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.LocateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.LocateResponse:
        user = await self._user(context)
        if not 1 <= len(request.keys) <= MAX_BATCH:
            raise InvalidArgument(f"Locate takes 1 to {MAX_BATCH} keys, not {len(request.keys)}.")
        keys = [validation.key(k) for k in request.keys]
        addresses = {c["id"]: c["address"] for c in await self._live_containers()}
        reply = gateway_pb2.LocateResponse()
        for key, record in zip(keys, await self.registry.get_objects(keys), strict=True):
            location = reply.locations.add()
            if record is None:
                location.code, location.message = NotFound.code.value[0], f"No object has the key {key}."
            elif record.owner != user.name:
                location.code = PermissionDenied.code.value[0]
                location.message = f"Object {key} belongs to another user."
            else:
                location.object.CopyFrom(_object_info(record))
                location.policy.CopyFrom(common_pb2.ECPolicy(k=record.k, m=record.m, segment_size=record.segment_size))
                location.chunks.extend(
                    common_pb2.ChunkLocation(
                        index=i, container_id=cid, address=addresses.get(cid, "") if stored else "", stored=stored
                    )
                    for i, (cid, stored) in enumerate(record.chunks)
                )
        return reply

    async def Exists(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ExistsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ExistsResponse:
        user = await self._user(context)
        key = validation.key(request.key)
        try:
            await self._owned(key, user)
        except (NotFound, PermissionDenied):
            return gateway_pb2.ExistsResponse(exists=False)
        return gateway_pb2.ExistsResponse(exists=True)

    async def Evict(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.EvictRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.EvictResponse:
        user = await self._user(context)
        key = validation.key(request.key)
        try:
            await self._owned(key, user)
        except NotFound:
            return gateway_pb2.EvictResponse(existed=False)
        record = await self.registry.delete_object(key)
        if record is None:
            return gateway_pb2.EvictResponse(existed=False)
        task = asyncio.create_task(self._delete_chunks(record))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return gateway_pb2.EvictResponse(existed=True)

    async def _delete_chunks(self, record: ObjectRecord) -> None:
        """Best effort: chunks on unreachable containers stay until garbage collection."""
        addresses = {c["id"]: c["address"] for c in await self._live_containers()}
        for index, (cid, stored) in enumerate(record.chunks):
            address = addresses.get(cid)
            if not stored or not address:
                continue
            try:
                async with open_channel(address) as channel:
                    stub = container_pb2_grpc.ContainerStub(channel)
                    await stub.DeleteChunk(container_pb2.DeleteChunkRequest(key=record.key, index=index), timeout=5)
            except grpc.aio.AioRpcError as exc:
                log.warning("Could not delete chunk %d of %s: %s", index, record.key, exc.details())

    async def List(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.ObjectInfo]:
        user = await self._user(context)
        catalog = validation.catalog(request.catalog)
        for key, entry in await self.registry.list_catalog(user.name, catalog):
            yield common_pb2.ObjectInfo(
                key=key,
                name=entry["name"],
                catalog=catalog,
                owner=user.name,
                size=entry["size"],
                created=entry["created"],
            )

    # users ------------------------------------------------------------------

    async def CreateUser(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateUserResponse:
        await self._admin(context)
        name = validation.user_name(request.name)
        token = await self.registry.create_user(name)
        return gateway_pb2.CreateUserResponse(name=name, token=token)

    async def WhoAmI(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.WhoAmIResponse:
        user = await self._user(context)
        return gateway_pb2.WhoAmIResponse(name=user.name, admin=user.admin)

    # containers -------------------------------------------------------------

    async def RegisterContainer(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RegisterContainerRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RegisterContainerResponse:
        await self._admin(context)
        info = request.container
        validation.container_id(info.id)
        if not info.address or len(info.address) > 256:
            raise InvalidArgument("A container must announce its address (host:port).")
        ttl = self.policy.container_ttl
        lease_id = await self.registry.register_container(_as_dict(info), ttl)
        self._containers_read = 0.0
        return gateway_pb2.RegisterContainerResponse(lease_id=lease_id, ttl_seconds=ttl)

    async def Heartbeat(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.HeartbeatResponse:
        await self._admin(context)
        validation.container_id(request.container_id)
        current = {c["id"]: c for c in await self.registry.containers()}.get(request.container_id)
        if current is None:
            return gateway_pb2.HeartbeatResponse(alive=False)
        current["free_bytes"] = request.free_bytes
        alive = await self.registry.refresh_container(current, request.lease_id)
        return gateway_pb2.HeartbeatResponse(alive=alive)

    async def ListContainers(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListContainersRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListContainersResponse:
        await self._user(context)
        found = await self.registry.containers()
        return gateway_pb2.ListContainersResponse(containers=[ParseDict(c, common_pb2.ContainerInfo()) for c in found])


def _as_dict(info: common_pb2.ContainerInfo) -> dict[str, Any]:
    return MessageToDict(info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _object_info(record: ObjectRecord) -> common_pb2.ObjectInfo:
    return common_pb2.ObjectInfo(
        key=record.key,
        name=record.name,
        catalog=record.catalog,
        owner=record.owner,
        size=record.size,
        created=record.created,
    )
