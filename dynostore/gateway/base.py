"""The gateway's shared servicer state: policy, who is calling, container views, catalog checks."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from dynostore import validation
from dynostore._proto import common_pb2, container_pb2, container_pb2_grpc
from dynostore._proto import gateway_pb2_grpc as pb_grpc
from dynostore.client.pipeline import Pipeline
from dynostore.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from dynostore.gateway.tickets import ChunkTicketAuthority, PlanSigner
from dynostore.registry import ObjectRecord, Registry, User
from dynostore.rpc import open_channel
from dynostore.rpc.requests import request_metadata
from dynostore.rpc.tls import Tls

log = logging.getLogger(__name__)

# The most keys one PlanPut call plans.
MAX_PLANNED_KEYS = 1000
# The most objects one CommitPut or Locate call takes.
MAX_BATCH = 1000
TOKEN_ID_PATTERN = re.compile(r"[0-9a-f]{16}")
# The largest inline object a gateway may be configured for: 32 of them (one
# commit transaction) stay well under etcd's 1.5 MiB request limit.
MAX_INLINE_BYTES = 32 * 1024


@dataclass(frozen=True)
class GatewayPolicy:
    """Defaults the gateway applies to puts and membership."""

    k: int = 3
    m: int = 2
    # Bytes encoded together; k fragments of about 1 MiB each by default.
    fragment_target: int = 1024 * 1024
    container_ttl: int = 10
    container_cache_seconds: float = 1.0
    # Objects up to this size are kept inline in etcd, without chunks (0: never).
    inline_max_bytes: int = 4096

    def __post_init__(self) -> None:
        """Refuse settings the registry cannot honour."""
        if not 0 <= self.inline_max_bytes <= MAX_INLINE_BYTES:
            raise InvalidArgument(
                f"inline_max_bytes must be 0 to {MAX_INLINE_BYTES} (etcd holds these bytes), "
                f"not {self.inline_max_bytes}."
            )


def _token_from(context: grpc.aio.ServicerContext) -> str:
    """The caller's token: from ``authorization: Bearer TOKEN``, or a bare ``authorization: TOKEN``."""
    for name, value in context.invocation_metadata() or ():
        if name == "authorization":
            scheme, space, token = str(value).strip().partition(" ")
            if not space and scheme:
                return scheme  # the bare token, as grpcurl users often send it
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Unauthenticated(
                f"The authorization header must be 'Bearer TOKEN' (or the bare token), not {scheme[:20]!r} credentials."
            )
    raise Unauthenticated(
        "No token was presented: send the header 'authorization: Bearer TOKEN' "
        "(the SDK's token_user=, the CLI's --token or $DYNOSTORE_TOKEN)."
    )


class GatewayCalls(pb_grpc.GatewayServicer):
    """State and checks that every group of the gateway's RPCs uses."""

    def __init__(
        self,
        registry: Registry,
        policy: GatewayPolicy,
        signer: PlanSigner,
        authority: ChunkTicketAuthority,
        tls: Tls | None = None,
    ) -> None:
        """Serve ``registry`` with the defaults in ``policy``; sign plans and chunk tickets.

        ``tls`` is used to reach containers (to delete evicted chunks).
        """
        self.tls = tls
        self.registry = registry
        self.policy = policy
        self.signer = signer
        self.authority = authority
        # The client pipeline the relay runs, talking to this gateway (set once it serves).
        self.relay: Pipeline | None = None
        self._containers: list[dict[str, Any]] = []
        self._containers_read = 0.0
        # Ids of the containers being drained (no new chunks go there), read with the same freshness.
        self._drained: set[str] = set()
        self._drained_read = 0.0
        # Until this moment (a lease's length after start), containers whose leases ran out while
        # no gateway answered are still coming back: calls that need them wait for them.
        self._rejoin_until = time.monotonic() + policy.container_ttl
        self._background: set[asyncio.Task[None]] = set()

    async def _caller(self, context: grpc.aio.ServicerContext) -> User:
        """Whoever the token belongs to, container credentials included."""
        return await self.registry.authenticate(validation.token(_token_from(context)))

    async def _user(self, context: grpc.aio.ServicerContext) -> User:
        user = await self._caller(context)
        if user.container:
            raise PermissionDenied("A container credential may only register containers and send heartbeats.")
        return user

    async def _acting_for(self, context: grpc.aio.ServicerContext, container_id: str) -> User:
        """An admin, or the container user that owns ``container_id`` (it claims the id if nobody owns it)."""
        user = await self._caller(context)
        if not (user.admin or user.container):
            raise PermissionDenied("Only an admin or a container token may register containers.")
        validation.container_id(container_id)
        if not user.admin:
            owner = await self.registry.claim_container(container_id, user.name)
            if owner != user.name:
                raise PermissionDenied(
                    f"Container {container_id} belongs to container user {owner!r}; "
                    "each container must keep the id it first registered with its own credential."
                )
        return user

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

    async def _draining(self) -> set[str]:
        """Ids of the containers being drained (cached as the live containers are)."""
        now = time.monotonic()
        if now - self._drained_read > self.policy.container_cache_seconds:
            self._drained = set(await self.registry.drains())
            self._drained_read = now
        return self._drained

    async def _placeable(self, containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``containers`` without those being drained: the ones that may take new chunks."""
        drained = await self._draining()
        return [c for c in containers if c["id"] not in drained]

    async def _rejoined_containers(self, needed: set[str] | None = None) -> list[dict[str, Any]]:
        """The live containers; just after start, first wait (bounded) for known ones to register again.

        ``needed`` names the containers the call needs (default: every known one).
        After ``container_ttl`` from start, or once they are all back, this waits no more.
        """
        live = await self._live_containers()
        if time.monotonic() >= self._rejoin_until:
            return live
        wanted = await self.registry.known_containers() if needed is None else needed
        while not wanted <= {c["id"] for c in live} and time.monotonic() < self._rejoin_until:
            await asyncio.sleep(0.1)
            self._containers_read = 0.0
            live = await self._live_containers()
            if needed is None:
                wanted = await self.registry.known_containers()
        return live

    async def _owned(self, key: str, user: User) -> ObjectRecord:
        """The record of an object ``user`` owns.

        Raises:
            NotFound: no object has this key, or its lifetime is over.
            PermissionDenied: the object is another user's.
        """
        record = await self.registry.get_object(validation.key(key))
        if record.expired(time.time()):
            raise NotFound(f"No object has the key {key}.")
        await self._check_owner(record, user)
        return record

    async def _check_owner(self, record: ObjectRecord, user: User) -> None:
        key = record.key
        if record.owner != user.name:
            if await self.registry.can_read(record.owner, record.catalog, user.name):
                raise PermissionDenied(f"Object {key} is shared with you read-only.")
            raise PermissionDenied(f"Object {key} belongs to another user.")

    async def _readable(self, key: str, user: User) -> ObjectRecord:
        (record,) = await self.registry.get_objects([validation.key(key)])
        if record is None or record.expired(time.time()):
            raise NotFound(f"No object has the key {key}.")
        if not await self.registry.can_read(record.owner, record.catalog, user.name):
            raise PermissionDenied(f"Object {key} belongs to another user.")
        return record

    async def _catalog(self, context: grpc.aio.ServicerContext, ref: str, *, own: bool) -> tuple[User, str, str]:
        """Caller, owner and name of a catalog the caller owns (``own``) or may read."""
        user = await self._user(context)
        owner, name = validation.catalog_ref(ref, user.name)
        if owner != user.name and (own or not await self.registry.can_read(owner, name, user.name)):
            raise PermissionDenied(
                f"Catalog {ref!r} is not yours." if own else f"Catalog {ref!r} is not yours and not shared with you."
            )
        return user, owner, name

    async def _existing_catalog(self, context: grpc.aio.ServicerContext, ref: str) -> tuple[User, str, str]:
        """Caller, owner and name of a catalog the caller may read, which must exist.

        Raises:
            NotFound: there is no such catalog (with a hint when one of that name is shared with the caller).
        """
        user, owner, name = await self._catalog(context, ref, own=False)
        if not await self.registry.catalog_exists(owner, name):
            hint = ""
            if owner == user.name and (shared := await self.registry.shared_named(user.name, name)):
                hint = f" Did you mean {' or '.join(shared)}? (Name a catalog shared with you as owner/name.)"
            raise NotFound(f"There is no catalog {ref!r}.{hint}")
        return user, owner, name

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def delete_chunks(self, record: ObjectRecord) -> None:
        """Delete the chunks of an evicted or replaced version (best effort: those on containers away stay for GC)."""
        addresses = {c["id"]: c["address"] for c in await self._live_containers()}
        ticket = await self.authority.sign(record.chunk_key, "write")
        for index, (cid, stored) in enumerate(record.chunks):
            address = addresses.get(cid)
            if not stored or not address:
                continue
            try:
                async with open_channel(address, self.tls) as channel:
                    stub = container_pb2_grpc.ContainerStub(channel)
                    request = container_pb2.DeleteChunkRequest(key=record.chunk_key, index=index, ticket=ticket)
                    await stub.DeleteChunk(request, timeout=5, metadata=request_metadata())
            except grpc.aio.AioRpcError as exc:
                log.warning("Could not delete chunk %d of %s: %s", index, record.chunk_key, exc.details())


def _timestamp(seconds: float) -> Timestamp:
    """``seconds`` since the epoch as a Timestamp (the float fields beside them stay, for older clients)."""
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


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
        created_at=_timestamp(record.created),
        expires=record.expires,
        version=record.version,
    )
