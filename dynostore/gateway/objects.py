"""The gateway's object RPCs: plan, commit, locate, relay, repair, exists, evict, list."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.json_format import ParseDict

from dynostore import tickets as chunk_tickets
from dynostore import validation
from dynostore._proto import common_pb2, gateway_pb2
from dynostore.client.pipeline import RELAY_MESSAGE, Pipeline, PutItem, Reservation
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss, DynoStoreError, InvalidArgument, NotFound, PermissionDenied, Unavailable
from dynostore.gateway.base import (
    MAX_BATCH,
    MAX_PLANNED_KEYS,
    GatewayCalls,
    _object_info,
    _timestamp,
    _token_from,
)
from dynostore.metrics import OBJECT_BYTES_COMMITTED, OBJECTS_COMMITTED, RELAY_BYTES
from dynostore.registry import ObjectRecord, User
from dynostore.registry.usage import check_quota

log = logging.getLogger(__name__)


class ObjectCalls(GatewayCalls):
    """The gateway's object RPCs: plan, commit, locate, relay, repair, exists, evict, list."""

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
        if (user.quota_bytes or user.quota_objects) and not request.replace:
            # Keys planned ahead (size unknown) need room for one object at least.
            used = await self.registry.usage(user.name)
            check_quota(
                user.name, user.quota_bytes, user.quota_objects, used, request.size, count if request.size else 1
            )
        plans = []
        # The keys of one plan are a run (a random prefix, then numbered): one chunk ticket serves them all.
        prefix = secrets.token_hex(chunk_tickets.RUN_PREFIX // 2)
        chunk_ticket = await self.authority.sign_run(prefix, count, "write", lifetime=self.signer.lifetime)
        for key in chunk_tickets.run_keys(prefix, count):
            ticket, expires = self.signer.sign(key, user.name)
            plans.append(
                gateway_pb2.PlannedKey(
                    key=key,
                    plan_ticket=ticket,
                    expires=expires,
                    expires_at=_timestamp(expires),
                    chunk_ticket=chunk_ticket,
                )
            )
        placeable = await self._placeable(await self._rejoined_containers())
        containers = [ParseDict(c, common_pb2.ContainerInfo()) for c in placeable]
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
        replacing = [c for c in request.objects if c.replace_key or c.replace_name]
        for commit in replacing:
            if commit.replace_key:
                validation.key(commit.replace_key)
            if commit.replace_name and not commit.name:
                raise InvalidArgument("A put that replaces by name needs a name.")
        if replacing and len(request.objects) != 1:
            raise InvalidArgument("A put that replaces objects is committed alone, one per CommitPut.")
        now = time.time()
        records = [self._record(commit, user, now) for commit in request.objects]
        if len({r.key for r in records}) != len(records):
            raise InvalidArgument("A CommitPut batch names the same key twice.")
        quota = user if user.quota_bytes or user.quota_objects else None
        if replacing:
            (commit,), (record,) = replacing, records
            replaced = await self.registry.commit_replacing(
                record, quota, replace_key=commit.replace_key, replace_name=commit.replace_name
            )
            for old in replaced:  # after the commit: readers of the old version re-locate and find the new
                if old.chunk_key != record.chunk_key and not old.inline:
                    self._in_background(self.delete_chunks(old))
        else:
            await self.registry.commit(records, quota=quota)
        for record in records:
            OBJECTS_COMMITTED.labels("inline" if record.inline else "chunked").inc()
            OBJECT_BYTES_COMMITTED.inc(record.size)
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
        ttl = validation.ttl(commit.ttl)
        return ObjectRecord(
            key=key,
            owner=user.name,
            catalog=catalog,
            name=name,
            size=commit.size,
            created=now,
            expires=now + ttl if ttl else 0.0,
            **layout,
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
        now = time.time()
        read = await self.registry.get_objects(keys, fresh=request.fresh)
        records = [None if r is None or r.expired(now) else r for r in read]
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
        location.chunk_ticket = await self.authority.sign(record.chunk_key, "read")
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
        replace_key = validation.key(header.replace_key) if header.replace_key else ""
        if header.replace_name and not header.name:
            raise InvalidArgument("A put that replaces by name needs a name.")

        relayed_in = RELAY_BYTES.labels("in")

        async def segments(segment_size: int) -> AsyncIterator[bytes]:
            buffer = bytearray()
            received = 0
            async for message in request_iterator:
                if message.WhichOneof("part") != "data":
                    raise InvalidArgument("RelayPut takes one header, then only data.")
                received += len(message.data)
                relayed_in.inc(len(message.data))
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
        item = PutItem(segments, size, header.name, validation.ttl(header.ttl), replace_key, header.replace_name)
        (key,) = await self._relay().put(
            [item],
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
        relayed_out = RELAY_BYTES.labels("out")
        async for segment in relay.read_checked(location, _token_from(context)):
            relayed_out.inc(len(segment))
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
            reply.write_ticket = await self.authority.sign(record.chunk_key, "repair")  # may also replace stored copies
            drained = await self._draining()  # readable, but no place for a chunk
            reply.containers.extend(ParseDict(c, common_pb2.ContainerInfo()) for c in live if c["id"] not in drained)
            reply.draining.extend(ParseDict(c, common_pb2.ContainerInfo()) for c in live if c["id"] in drained)
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
        if request.keys:
            return await self._evict_batch(request, user)
        key = validation.key(request.key)
        try:
            await self._owned(key, user)
        except NotFound:
            return gateway_pb2.EvictResponse(existed=False)
        record = await self.registry.delete_object(key)
        if record is None:
            return gateway_pb2.EvictResponse(existed=False)
        self._in_background(self.delete_chunks(record))
        return gateway_pb2.EvictResponse(existed=True)

    async def _evict_batch(self, request: gateway_pb2.EvictRequest, user: User) -> gateway_pb2.EvictResponse:
        """Evict ``request.keys`` together: one outcome each; those allowed go in a few etcd transactions."""
        if request.key:
            raise InvalidArgument("Evict takes a key or a list of keys, not both.")
        if len(request.keys) > MAX_BATCH:
            raise InvalidArgument(f"Evict takes at most {MAX_BATCH} keys, not {len(request.keys)}.")
        keys = [validation.key(k) for k in request.keys]
        distinct = list(dict.fromkeys(keys))  # a key given twice is evicted once, then did not exist
        now = time.time()
        allowed: list[str] = []
        refused: dict[str, DynoStoreError] = {}
        for key, record in zip(distinct, await self.registry.get_objects(distinct), strict=True):
            if record is None or record.expired(now):
                continue
            try:
                await self._check_owner(record, user)
                allowed.append(key)
            except PermissionDenied as exc:
                refused[key] = exc
        reply = gateway_pb2.EvictResponse()
        for key in keys:
            result = reply.results.add()
            if (error := refused.get(key)) is not None:
                result.code, result.message = error.code.value[0], str(error)
        removed = dict(zip(allowed, await self.registry.delete_objects(allowed), strict=True))
        for key, result in zip(keys, reply.results, strict=True):
            if (record := removed.pop(key, None)) is not None:
                result.existed = True
                self._in_background(self.delete_chunks(record))
        return reply

    async def List(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.ObjectInfo]:
        name = validation.object_name(request.name)
        _, owner, catalog = await self._existing_catalog(context, request.catalog)
        if name:
            listed = await self.registry.list_named(owner, catalog, name, time.time())
        else:
            listed = await self.registry.list_catalog(owner, catalog, live_at=time.time())
        for key, entry in listed:
            yield common_pb2.ObjectInfo(
                key=key,
                name=entry["name"],
                catalog=catalog,
                owner=owner,
                size=entry["size"],
                created=entry["created"],
                created_at=_timestamp(entry["created"]),
                expires=entry.get("expires", 0.0),
            )
