"""gRPC adapter of the gateway: authenticate, validate, call the registry."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from dynostore import validation
from dynostore._proto import common_pb2, container_pb2, container_pb2_grpc, gateway_pb2
from dynostore._proto import gateway_pb2_grpc as pb_grpc
from dynostore.client.pipeline import RELAY_MESSAGE, Pipeline, PutItem, Reservation
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss, InvalidArgument, NotFound, PermissionDenied, Unauthenticated, Unavailable
from dynostore.gateway.tickets import ChunkTicketAuthority, PlanSigner
from dynostore.registry import ObjectRecord, Registry, User
from dynostore.registry.registry import TokenInfo
from dynostore.rpc import open_channel
from dynostore.rpc.tls import Tls

log = logging.getLogger(__name__)
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


class GatewayServicer(pb_grpc.GatewayServicer):
    """The control-path RPCs over one :class:`Registry`."""

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
        record = await self.registry.get_object(validation.key(key))
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
        if record is None:
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

    # objects ----------------------------------------------------------------

    async def PlanPut(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.PlanPutRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PlanPutResponse:
        user = await self._user(context)
        count = request.count or 1
        if count > MAX_PLANNED_KEYS:
            raise InvalidArgument(f"PlanPut plans at most {MAX_PLANNED_KEYS} keys at once, not {count}.")
        # k == 0 asks for the policy of the catalog named, if it has one, else the gateway's default.
        asked = (request.k, request.m) if request.k else None
        if asked is None and request.catalog:
            asked = await self.registry.catalog_policy(user.name, validation.catalog(request.catalog))
        k, m = validation.ec_params(*(asked or (self.policy.k, self.policy.m)))
        plans = []
        for _ in range(count):
            key = uuid.uuid4().hex
            ticket, expires = self.signer.sign(key, user.name)
            chunk_ticket = await self.authority.sign(key, "write", lifetime=self.signer.lifetime)
            plans.append(
                gateway_pb2.PlannedKey(
                    key=key,
                    plan_ticket=ticket,
                    expires=expires,
                    expires_at=_timestamp(expires),
                    chunk_ticket=chunk_ticket,
                )
            )
        containers = [ParseDict(c, common_pb2.ContainerInfo()) for c in await self._rejoined_containers()]
        policy = common_pb2.ECPolicy(k=k, m=m, segment_size=k * self.policy.fragment_target)
        return gateway_pb2.PlanPutResponse(
            plans=plans, policy=policy, containers=containers, inline_max_bytes=self.policy.inline_max_bytes
        )

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
        if "/" in commit.catalog:
            validation.catalog_ref(commit.catalog, user.name)
            raise PermissionDenied("Objects can be put only into your own catalogs.")
        catalog = validation.catalog(commit.catalog)
        name = validation.object_name(commit.name)
        self.signer.check(commit.plan_ticket, key, user.name)
        layout = self._inline_layout(commit, key) if commit.inline else self._chunk_layout(commit)
        return ObjectRecord(
            key=key, owner=user.name, catalog=catalog, name=name, size=commit.size, created=now, **layout
        )

    def _chunk_layout(self, commit: gateway_pb2.ObjectCommit) -> dict[str, Any]:
        """Policy and chunk list of an erasure-coded object, validated."""
        if commit.data:
            raise InvalidArgument("Only inline commits carry data.")
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
        return {
            "k": k,
            "m": m,
            "segment_size": commit.policy.segment_size,
            "chunks": [(c.container_id, c.stored) for c in chunks],
        }

    def _inline_layout(self, commit: gateway_pb2.ObjectCommit, key: str) -> dict[str, Any]:
        """Bytes and CRC-32 of a small object that travel in the commit itself, validated."""
        limit = self.policy.inline_max_bytes
        if not limit:
            raise InvalidArgument("This gateway keeps no objects inline (inline_max_bytes = 0).")
        if len(commit.data) > limit:
            raise InvalidArgument(f"Inline objects hold at most {limit} bytes here, not {len(commit.data)}.")
        if commit.size != len(commit.data):
            raise InvalidArgument(f"An inline commit announces {commit.size} bytes but carries {len(commit.data)}.")
        if commit.chunks:
            raise InvalidArgument("An inline commit lists no chunks.")
        if checksum(commit.data) != commit.crc32:
            raise DataLoss(f"The bytes of inline object {key} do not match their CRC-32; nothing was stored.")
        return {"k": 0, "m": 0, "segment_size": 0, "inline": True, "crc32": commit.crc32, "data": commit.data}

    async def Locate(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.LocateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.LocateResponse:
        user = await self._user(context)
        if not 1 <= len(request.keys) <= MAX_BATCH:
            raise InvalidArgument(f"Locate takes 1 to {MAX_BATCH} keys, not {len(request.keys)}.")
        keys = [validation.key(k) for k in request.keys]
        records = await self.registry.get_objects(keys)
        holders = {cid for r in records if r is not None for cid, stored in r.chunks if stored}
        # Inline objects need no container: then no container list is read either.
        addresses = {c["id"]: c["address"] for c in await self._rejoined_containers(holders)} if holders else {}
        reply = gateway_pb2.LocateResponse()
        for key, record in zip(keys, records, strict=True):
            location = reply.locations.add()
            if record is None:
                location.code, location.message = NotFound.code.value[0], f"No object has the key {key}."
            elif not await self.registry.can_read(record.owner, record.catalog, user.name):
                location.code = PermissionDenied.code.value[0]
                location.message = f"Object {key} belongs to another user."
            else:
                await self._fill_location(location, record, addresses)
        return reply

    async def _fill_location(
        self, location: gateway_pb2.Location, record: ObjectRecord, addresses: dict[str, str]
    ) -> None:
        """Describe ``record`` in ``location``: its bytes if inline, else its chunks with a read ticket."""
        location.object.CopyFrom(_object_info(record))
        if record.inline:
            location.inline, location.data, location.crc32 = True, record.data, record.crc32
            return
        location.chunk_ticket = await self.authority.sign(record.key, "read")
        location.policy.CopyFrom(common_pb2.ECPolicy(k=record.k, m=record.m, segment_size=record.segment_size))
        location.chunks.extend(
            common_pb2.ChunkLocation(
                index=i, container_id=cid, address=addresses.get(cid, "") if stored else "", stored=stored
            )
            for i, (cid, stored) in enumerate(record.chunks)
        )

    def _relay(self) -> Pipeline:
        if self.relay is None:
            raise Unavailable("The relay is starting; try again.")
        return self.relay

    async def RelayPut(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[gateway_pb2.RelayPutRequest], context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RelayPutResponse:
        await self._user(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("RelayPut must start with a header message.")
        header = first.header
        size = header.size

        async def segments(segment_size: int) -> AsyncIterator[bytes]:
            buffer = bytearray()
            received = 0
            async for message in request_iterator:
                if message.WhichOneof("part") != "data":
                    raise InvalidArgument("RelayPut takes one header, then only data.")
                received += len(message.data)
                if received > size:
                    raise InvalidArgument(f"RelayPut announced {size} bytes and sent more.")
                buffer += message.data
                while len(buffer) >= segment_size:
                    yield bytes(buffer[:segment_size])
                    del buffer[:segment_size]
            if received != size:
                raise InvalidArgument(f"RelayPut announced {size} bytes and sent {received}.")
            if buffer:
                yield bytes(buffer)

        planned = header.planned
        reservation = Reservation(planned.key, planned.plan_ticket, planned.chunk_ticket) if planned.key else None
        (key,) = await self._relay().put(
            [PutItem(segments, size, header.name)],
            token=_token_from(context),
            catalog=header.catalog,
            k=header.k,
            m=header.m,
            planned=[reservation] if reservation else None,
        )
        return gateway_pb2.RelayPutResponse(key=key)

    async def RelayGet(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RelayGetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.RelayGetResponse]:
        await self._user(context)
        relay = self._relay()
        location = await relay.locate_one(validation.key(request.key), _token_from(context))
        yield gateway_pb2.RelayGetResponse(object=location.object)
        async for segment in relay.read_checked(location, _token_from(context)):
            view = memoryview(segment)
            for start in range(0, len(view), RELAY_MESSAGE):
                yield gateway_pb2.RelayGetResponse(data=bytes(view[start : start + RELAY_MESSAGE]))

    async def PlanRepair(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.PlanRepairRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PlanRepairResponse:
        user = await self._user(context)
        key = validation.key(request.key)
        record, revision = await self.registry.get_object_revision(key)
        if not user.admin:  # admins repair anything (the gateway's own repair sweeps do)
            await self._check_owner(record, user)
        live = await self._live_containers()
        reply = gateway_pb2.PlanRepairResponse(revision=revision)
        await self._fill_location(reply.location, record, {c["id"]: c["address"] for c in live})
        if not record.inline:  # inline objects have no chunks to repair
            reply.write_ticket = await self.authority.sign(key, "repair")  # may also replace stored copies
            reply.containers.extend(ParseDict(c, common_pb2.ContainerInfo()) for c in live)
        return reply

    async def CommitRepair(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CommitRepairRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CommitRepairResponse:
        user = await self._user(context)
        key = validation.key(request.key)
        record = await self.registry.get_object(key)
        if not user.admin:
            await self._check_owner(record, user)
        if record.inline:
            raise InvalidArgument(f"Object {key} is inline; it has no chunks to repair.")
        live = {c["id"] for c in await self._live_containers()}
        replacements: dict[int, str] = {}
        for chunk in request.chunks:
            if chunk.index >= len(record.chunks) or chunk.index in replacements:
                raise InvalidArgument(f"Chunk index {chunk.index} is out of range or given twice.")
            if validation.container_id(chunk.container_id) not in live:
                raise InvalidArgument(f"Container {chunk.container_id} is not a live container.")
            replacements[chunk.index] = chunk.container_id
        if not replacements:
            raise InvalidArgument("CommitRepair names no chunks.")
        await self.registry.replace_chunks(key, request.revision, replacements)
        return gateway_pb2.CommitRepairResponse(repaired=len(replacements))

    async def Exists(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ExistsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ExistsResponse:
        user = await self._user(context)
        key = validation.key(request.key)
        try:
            await self._readable(key, user)
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
        self._in_background(self._delete_chunks(record))
        return gateway_pb2.EvictResponse(existed=True)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delete_chunks(self, record: ObjectRecord) -> None:
        """Best effort: chunks on unreachable containers stay until garbage collection."""
        addresses = {c["id"]: c["address"] for c in await self._live_containers()}
        ticket = await self.authority.sign(record.key, "write")
        for index, (cid, stored) in enumerate(record.chunks):
            address = addresses.get(cid)
            if not stored or not address:
                continue
            try:
                async with open_channel(address, self.tls) as channel:
                    stub = container_pb2_grpc.ContainerStub(channel)
                    request = container_pb2.DeleteChunkRequest(key=record.key, index=index, ticket=ticket)
                    await stub.DeleteChunk(request, timeout=5)
            except grpc.aio.AioRpcError as exc:
                log.warning("Could not delete chunk %d of %s: %s", index, record.key, exc.details())

    async def List(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.ObjectInfo]:
        _, owner, catalog = await self._existing_catalog(context, request.catalog)
        for key, entry in await self.registry.list_catalog(owner, catalog):
            yield common_pb2.ObjectInfo(
                key=key,
                name=entry["name"],
                catalog=catalog,
                owner=owner,
                size=entry["size"],
                created=entry["created"],
                created_at=_timestamp(entry["created"]),
            )

    # catalogs ---------------------------------------------------------------

    async def CreateCatalog(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CatalogRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CatalogInfo:
        _, owner, name = await self._catalog(context, request.catalog, own=True)
        k, m = validation.ec_params(request.k, request.m) if request.k or request.m else (0, 0)
        await self.registry.create_catalog(owner, name, k, m)
        return _catalog_info(await self.registry.describe_catalog(owner, name))

    async def ListCatalogs(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListCatalogsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListCatalogsResponse:
        user = await self._user(context)
        found = await self.registry.catalogs(user.name)
        return gateway_pb2.ListCatalogsResponse(catalogs=[_catalog_info(c) for c in found])

    async def DescribeCatalog(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CatalogRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CatalogInfo:
        _, owner, name = await self._catalog(context, request.catalog, own=False)
        return _catalog_info(await self.registry.describe_catalog(owner, name))

    async def DeleteCatalog(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.DeleteCatalogRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteCatalogResponse:
        _, owner, name = await self._catalog(context, request.catalog, own=True)
        return gateway_pb2.DeleteCatalogResponse(evicted=await self._delete_catalog(owner, name, request.force))

    async def _delete_catalog(self, owner: str, name: str, force: bool) -> int:
        """Delete a catalog (with ``force``, evicting its objects; their chunks go in the background); how many."""
        evicted = await self.registry.delete_catalog(owner, name, force)
        for record in evicted:
            self._in_background(self._delete_chunks(record))
        return len(evicted)

    async def Share(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ShareRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ShareResponse:
        _, owner, name = await self._catalog(context, request.catalog, own=True)
        reader = validation.user_name(request.with_user)
        if reader == owner:
            raise InvalidArgument("A catalog cannot be shared with its owner.")
        await self.registry.share(owner, name, reader)
        return gateway_pb2.ShareResponse(changed=True)

    async def Unshare(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ShareRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ShareResponse:
        _, owner, name = await self._catalog(context, request.catalog, own=True)
        changed = await self.registry.unshare(owner, name, validation.user_name(request.with_user))
        return gateway_pb2.ShareResponse(changed=changed)

    async def Subscribe(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.Event]:
        user, owner, name = await self._existing_catalog(context, request.catalog)
        if request.start_revision < 0:
            raise InvalidArgument("start_revision must not be negative.")
        async for event in self.registry.catalog_events(owner, name, request.start_revision):
            if event.kind == "unshare" and event.user == user.name and owner != user.name:
                return  # access gone: the stream ends
            yield gateway_pb2.Event(
                kind=event.kind,
                key=event.key,
                name=event.name,
                size=event.size,
                time=event.time,
                time_at=_timestamp(event.time),
                revision=event.revision,
                user=event.user,
                owner=owner,
                catalog=name,
            )

    # users ------------------------------------------------------------------

    async def CreateUser(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateUserResponse:
        await self._admin(context)
        name = validation.user_name(request.name)
        token = await self.registry.create_user(name, container=request.container)
        return gateway_pb2.CreateUserResponse(name=name, token=token)

    async def WhoAmI(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.WhoAmIResponse:
        user = await self._caller(context)
        return gateway_pb2.WhoAmIResponse(name=user.name, admin=user.admin, container=user.container)

    async def ListUsers(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListUsersResponse:
        await self._admin(context)
        users = await self.registry.list_users()
        return gateway_pb2.ListUsersResponse(
            users=[
                gateway_pb2.UserInfo(
                    name=u.name,
                    admin=u.admin,
                    created=u.created,
                    created_at=_timestamp(u.created),
                    container=u.container,
                )
                for u in users
            ]
        )

    async def RemoveUser(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RemoveUserRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RemoveUserResponse:
        await self._admin(context)
        name = validation.user_name(request.name)
        existed = True
        try:
            revoked = await self.registry.remove_user(name)
        except NotFound:
            if not request.purge:
                raise
            revoked, existed = 0, False  # removed before: purge what it left
        evicted = 0
        if request.purge:
            owned = [c["name"] for c in await self.registry.catalogs(name) if c["owner"] == name]
            if not existed and not owned:
                raise NotFound(f"There is no user {name!r}, and no catalog of that name is left.")
            for catalog in owned:
                evicted += await self._delete_catalog(name, catalog, force=True)
            log.info("Purged user %s: %d catalog(s), %d object(s) evicted.", name, len(owned), evicted)
        return gateway_pb2.RemoveUserResponse(tokens_revoked=revoked, objects_evicted=evicted)

    async def _token_owner(self, context: grpc.aio.ServicerContext, name: str) -> str:
        """The user whose tokens a call manages: the caller, or anyone for an admin."""
        user = await self._user(context)
        if not name or name == user.name:
            return user.name
        if not user.admin:
            raise PermissionDenied("Only an admin may manage another user's tokens.")
        return (await self.registry.get_user(validation.user_name(name))).name

    async def CreateToken(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateTokenResponse:
        owner = await self._token_owner(context, request.user)
        token, info = await self.registry.create_token(owner)
        return gateway_pb2.CreateTokenResponse(token=token, info=_token_info(info))

    async def ListTokens(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListTokensResponse:
        owner = await self._token_owner(context, request.user)
        return gateway_pb2.ListTokensResponse(tokens=[_token_info(i) for i in await self.registry.list_tokens(owner)])

    async def RevokeToken(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RevokeTokenResponse:
        user = await self._user(context)
        if not TOKEN_ID_PATTERN.fullmatch(request.id):
            raise InvalidArgument(f"{request.id[:40]!r} is not a token id (16 hex digits).")
        await self.registry.revoke_token(request.id, user)
        return gateway_pb2.RevokeTokenResponse()

    # containers -------------------------------------------------------------

    async def RegisterContainer(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RegisterContainerRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RegisterContainerResponse:
        info = request.container
        await self._acting_for(context, info.id)
        if not info.address or len(info.address) > 256:
            raise InvalidArgument("A container must announce its address (host:port).")
        ttl = self.policy.container_ttl
        lease_id = await self.registry.register_container(_as_dict(info), ttl)
        self._containers_read = 0.0
        return gateway_pb2.RegisterContainerResponse(
            lease_id=lease_id, ttl_seconds=ttl, ticket_keys=await self._ticket_keys()
        )

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
        alive = await self.registry.refresh_container(current, request.lease_id)
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
                gateway_pb2.ChunkId(key=record.key, index=i) for i, chunk in enumerate(record.chunks) if chunk == held
            )
        return reply

    async def ListContainers(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListContainersRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListContainersResponse:
        await self._user(context)
        found = await self.registry.containers()
        return gateway_pb2.ListContainersResponse(containers=[ParseDict(c, common_pb2.ContainerInfo()) for c in found])


def _timestamp(seconds: float) -> Timestamp:
    """``seconds`` since the epoch as a Timestamp (the float fields beside them stay, for older clients)."""
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def _as_dict(info: common_pb2.ContainerInfo) -> dict[str, Any]:
    return MessageToDict(info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _catalog_info(info: dict[str, Any]) -> gateway_pb2.CatalogInfo:
    return gateway_pb2.CatalogInfo(
        owner=info["owner"],
        name=info["name"],
        created=info["created"],
        created_at=_timestamp(info["created"]),
        objects=info.get("objects", 0),
        bytes=info.get("bytes", 0),
        shared_with=info.get("shared_with", []),
        k=info.get("k", 0),
        m=info.get("m", 0),
    )


def _token_info(info: TokenInfo) -> gateway_pb2.TokenInfo:
    return gateway_pb2.TokenInfo(id=info.id, user=info.user, created=info.created, created_at=_timestamp(info.created))


def _object_info(record: ObjectRecord) -> common_pb2.ObjectInfo:
    return common_pb2.ObjectInfo(
        key=record.key,
        name=record.name,
        catalog=record.catalog,
        owner=record.owner,
        size=record.size,
        created=record.created,
        created_at=_timestamp(record.created),
    )
