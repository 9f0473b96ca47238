"""The put/get pipeline: erasure-code, place, move chunks in parallel, verify.

This is the one implementation of the data path; :class:`AsyncClient` and
the synchronous :class:`Client` are thin layers over it. Objects of one
segment travel as whole chunks, batched per container; larger objects stream
each chunk segment by segment.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from dynostore import validation
from dynostore._proto import common_pb2, container_pb2, container_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from dynostore.client.chunks import (
    ChunkReader,
    ChunkRef,
    ChunkWriter,
    ContainerStub,
    WholeChunkReader,
    read_whole_chunks,
    write_whole_chunks,
)
from dynostore.client.placement import PlacementPolicy, SpreadPlacement
from dynostore.client.repair import repair as repair_object
from dynostore.erasure import Codec
from dynostore.erasure.checksum import checksum
from dynostore.errors import (
    AlreadyExists,
    DataLoss,
    DynoStoreError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    error_for_code,
)
from dynostore.rpc import auth_metadata, from_rpc_error, open_channel
from dynostore.rpc.tls import Tls

log = logging.getLogger(__name__)
T = TypeVar("T")

# Puts of one object take their key from a pool of this many planned keys.
PLAN_POOL_SIZE = 64
# A pool's view of the live containers is renewed after this long.
PLAN_POOL_SECONDS = 2.0
# put_many and get_many work in groups of this many objects (one control call each).
GROUP = 256
# Relayed objects travel in messages of this many bytes; a relayed put may take
# the control timeout plus one second per RELAY_MIN_RATE bytes.
RELAY_MESSAGE = 1024 * 1024
RELAY_MIN_RATE = 4 * 1024 * 1024

# Segments are produced by the caller: an async iterator of bytes, each
# ``segment_size`` long except the last.
SegmentSource = Callable[[int], AsyncIterator[bytes]]
Progress = Callable[[int], None]
Reader = ChunkReader | WholeChunkReader


@dataclass(frozen=True)
class ObjectInfo:
    """What :meth:`Client.list` yields for each object."""

    key: str
    name: str
    catalog: str
    owner: str
    size: int
    created: float


def object_info(message: common_pb2.ObjectInfo) -> ObjectInfo:
    """Convert the wire message into the public type."""
    return ObjectInfo(
        key=message.key,
        name=message.name,
        catalog=message.catalog,
        owner=message.owner,
        size=message.size,
        created=message.created,
    )


@dataclass(frozen=True)
class PutItem:
    """One object to put: its bytes (as segments), size and name."""

    segments: SegmentSource
    size: int
    name: str = ""


class _RetriedIntoError(Exception):
    """A retried call met an error (``error``) its first attempt may have caused."""

    def __init__(self, error: DynoStoreError) -> None:
        super().__init__(str(error))
        self.error = error


class _CommitOutcomeUnknownError(Exception):
    """A commit failed in a way that leaves open whether it landed; ``error`` is what the caller sees."""

    def __init__(self, error: DynoStoreError) -> None:
        super().__init__(str(error))
        self.error = error


# Codes of a gateway that is down, starting or shutting down (it cancels the calls in flight): tried again.
_RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

# Errors with which the gateway refuses a commit before it writes anything: after
# one of these on the first attempt the commit surely did not land.
_COMMIT_REFUSALS = (
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    DataLoss,
)


@dataclass(frozen=True)
class Reservation:
    """A key reserved for a later put, with the ticket that lets its owner commit it."""

    key: str
    plan_ticket: str
    chunk_ticket: str


@dataclass
class _PlanPool:
    plan: gateway_pb2.PlanPutResponse
    keys: collections.deque[gateway_pb2.PlannedKey]
    fetched: float


@dataclass
class _Placed:
    """An object on its way in: key, plan, codec and target containers."""

    item: PutItem
    planned: gateway_pb2.PlannedKey
    policy: common_pb2.ECPolicy
    codec: Codec
    targets: list[common_pb2.ContainerInfo]
    errors: list[str | None]
    # Small objects go inline: their bytes travel in the commit, no chunks.
    inline: bool = False
    data: bytes = b""


class Pipeline:
    """Async data path against one gateway; owns channels to the gateway and containers."""

    def __init__(
        self,
        gateway: str,
        *,
        placement: PlacementPolicy | None = None,
        timeout: float = 30.0,
        fragment_timeout: float = 20.0,
        retry_timeout: float = 3.0,
        retries: int = 3,
        queue_depth: int = 2,
        tls: Tls | None = None,
        relay: bool = False,
    ) -> None:
        """Talk to ``gateway``; control calls time out after ``timeout`` seconds.

        ``fragment_timeout`` bounds the wait for any one fragment from or to a
        container, so a hung container costs at most that long before parity
        is used instead. A container that could not be reached gets one more
        try, waiting up to ``retry_timeout`` for its connection, before a get
        gives up or a put records its chunk as missing. Control calls that
        find the gateway unavailable are retried ``retries`` times with
        exponential backoff. With ``tls``, every channel (gateway and
        containers) uses TLS and trusts its CA. With ``relay``, object bytes
        go through the gateway (``RelayPut``/``RelayGet``), for clients that
        cannot reach the containers.
        """
        self.gateway_address = gateway
        self.tls = tls
        self.placement = placement or SpreadPlacement()
        self.timeout = timeout
        self.fragment_timeout = fragment_timeout
        self.retry_timeout = retry_timeout
        self.retries = retries
        self.queue_depth = queue_depth
        self.relay = relay
        self._channels: dict[str, grpc.aio.Channel] = {}
        # Stubs are made once per channel: a stub binds every method of its service.
        self._gateway_stub: gateway_pb2_grpc.GatewayStub | None = None
        self._container_stubs: dict[str, container_pb2_grpc.ContainerStub] = {}
        self._plans: dict[tuple[str, str, int, int], _PlanPool] = {}
        self._plan_lock = asyncio.Lock()

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self.tls)
        return channel

    def _gateway(self) -> gateway_pb2_grpc.GatewayStub:
        if self._gateway_stub is None:
            self._gateway_stub = gateway_pb2_grpc.GatewayStub(self._channel(self.gateway_address))
        return self._gateway_stub

    def gateway_stub(self) -> gateway_pb2_grpc.GatewayStub:
        """The gateway's stub, for control calls made through :meth:`call`."""
        return self._gateway()

    def _container(self, address: str) -> container_pb2_grpc.ContainerStub:
        stub = self._container_stubs.get(address)
        if stub is None:
            stub = self._container_stubs[address] = ContainerStub(self._channel(address))
        return stub

    def container_stub(self, address: str) -> container_pb2_grpc.ContainerStub:
        """The stub of the container at ``address`` (one channel per address)."""
        return self._container(address)

    def _stubs(self, addresses: Sequence[str]) -> dict[str, container_pb2_grpc.ContainerStub]:
        return {a: self._container(a) for a in set(addresses)}

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = self._channels, {}
        self._gateway_stub, self._container_stubs = None, {}
        for channel in channels.values():
            await channel.close()

    async def call(
        self,
        method: Callable[..., Awaitable[T]],
        request: object,
        token: str,
        *,
        tolerate_after_retry: type[DynoStoreError] | None = None,
    ) -> T:
        """Make one control call to the gateway, mapping failures to DynoStore errors.

        An unavailable gateway, or one that cancelled the call as it shut
        down, is retried with exponential backoff and jitter.
        An error of type ``tolerate_after_retry`` met on a retry (the first
        attempt may have done the work) raises ``_RetriedIntoError`` instead.
        """
        for attempt in range(self.retries + 1):
            try:
                return await method(request, metadata=auth_metadata(token), timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if attempt and tolerate_after_retry and isinstance(error, tolerate_after_retry):
                    raise _RetriedIntoError(error) from error
                if exc.code() not in _RETRIED_CODES or attempt == self.retries:
                    raise error from None
                delay = 0.1 * 2**attempt * (1 + random.random())
                log.info("Gateway unavailable (%s); retrying in %.2f s.", exc.details(), delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # put --------------------------------------------------------------------

    async def put(
        self,
        items: Sequence[PutItem],
        *,
        token: str,
        catalog: str,
        k: int = 0,
        m: int = 0,
        progress: Progress | None = None,
        planned: Sequence[Reservation] | None = None,
    ) -> list[str]:
        """Store objects and return their keys, in order.

        Each ``item.segments(segment_size)`` must yield that object's bytes in
        segments of that size. An object becomes visible only after its
        chunks are durable on at least k+1 containers and the gateway
        committed it; if any object of a group fails, none of the group is
        committed and their chunks are removed. ``planned`` gives keys
        reserved earlier with :meth:`plan_keys`, one per item.
        """
        validation.token(token)
        if "/" in catalog:
            validation.catalog_ref(catalog, "")
            raise PermissionDenied("Objects can be put only into your own catalogs (a plain catalog name).")
        validation.catalog(catalog)
        for item in items:
            validation.object_name(item.name)
        if k or m:
            validation.ec_params(k, m)
        if planned is not None and len(planned) != len(items):
            raise InvalidArgument("Give one planned key per object.")
        if self.relay:
            return [
                await self._relay_put(item, token, catalog, k, m, progress, planned[i] if planned else None)
                for i, item in enumerate(items)
            ]
        keys: list[str] = []
        for start in range(0, len(items), GROUP):
            group_planned = (
                [
                    gateway_pb2.PlannedKey(key=r.key, plan_ticket=r.plan_ticket, chunk_ticket=r.chunk_ticket)
                    for r in planned[start : start + GROUP]
                ]
                if planned is not None
                else None
            )
            keys += await self._put_group(items[start : start + GROUP], token, catalog, k, m, progress, group_planned)
        return keys

    async def _put_group(
        self,
        items: Sequence[PutItem],
        token: str,
        catalog: str,
        k: int,
        m: int,
        progress: Progress | None,
        reserved: Sequence[gateway_pb2.PlannedKey] | None,
    ) -> list[str]:
        if reserved is not None:
            locations = await self.locate([r.key for r in reserved], token)
            taken = [r.key for r, loc in zip(reserved, locations, strict=True) if not loc.code]
            if taken:
                raise AlreadyExists(f"Reserved keys {taken} hold objects already.")
            async with self._plan_lock:
                plan, planned = (await self._pool(token, catalog, k, m)).plan, list(reserved)
        else:
            plan, planned = await self._plan(token, catalog, k, m, len(items), pooled=len(items) == 1)
        codec = Codec(plan.policy.k, plan.policy.m)
        placed = []
        for item, key in zip(items, planned, strict=True):
            if plan.inline_max_bytes and item.size <= plan.inline_max_bytes:
                placed.append(_Placed(item, key, plan.policy, codec, [], [], inline=True))
            else:
                targets = self.placement.place(plan.containers, codec.n, -(-max(item.size, 1) // codec.k) + 1024)
                placed.append(_Placed(item, key, plan.policy, codec, targets, []))
        committing = False
        try:
            for p in placed:
                if p.inline:
                    p.data = await _one_segment(p.item, p.policy.segment_size)
                    if progress:
                        progress(p.item.size)
            whole = [p for p in placed if not p.inline and p.item.size <= plan.policy.segment_size]
            if whole:
                await self._write_whole(whole, progress)
            for p in placed:
                if p.item.size > plan.policy.segment_size:
                    p.errors = await self._write_streamed(p, progress)
            quorum = min(codec.k + 1, codec.n)
            for p in placed:
                if p.inline:
                    continue
                if (stored := sum(e is None for e in p.errors)) < quorum:
                    failed = "; ".join(f"chunk {i}: {e}" for i, e in enumerate(p.errors) if e)
                    raise Unavailable(
                        f"Only {stored} of {codec.n} chunks could be stored (at least {quorum} needed): {failed}"
                    )
            if any(e for p in placed for e in p.errors):
                self._plans.pop(_pool_key(token, catalog, k, m), None)  # the container view is stale: plan afresh
            committing = True
            await self._commit(placed, token, catalog)
        except _CommitOutcomeUnknownError as unknown:
            # A record may name these chunks: leave them to the containers' garbage collection,
            # which deletes chunks only once no record has named them for gc_grace.
            log.warning("Commit of %d objects ended without an answer; their chunks are kept.", len(placed))
            raise unknown.error from None
        except BaseException as exc:
            # Out of the commit, a DynoStoreError is a refusal; anything else (cancelled) may have landed.
            if not committing or isinstance(exc, DynoStoreError):
                await self._discard(placed)
            raise
        return [p.planned.key for p in placed]

    async def _relay_put(
        self,
        item: PutItem,
        token: str,
        catalog: str,
        k: int,
        m: int,
        progress: Progress | None,
        planned: Reservation | None,
    ) -> str:
        """Stream one object to the gateway, which stores it with this same pipeline."""
        header = gateway_pb2.RelayPutHeader(catalog=catalog, name=item.name, size=item.size, k=k, m=m)
        if planned is not None:
            header.planned.key = planned.key
            header.planned.plan_ticket = planned.plan_ticket
            header.planned.chunk_ticket = planned.chunk_ticket

        async def requests() -> AsyncIterator[gateway_pb2.RelayPutRequest]:
            yield gateway_pb2.RelayPutRequest(header=header)
            async for segment in item.segments(RELAY_MESSAGE):
                if segment:
                    yield gateway_pb2.RelayPutRequest(data=segment)
                if progress:
                    progress(len(segment))

        deadline = self.timeout + item.size / RELAY_MIN_RATE
        try:
            reply = await self._gateway().RelayPut(requests(), metadata=auth_metadata(token), timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return reply.key

    async def plan_keys(self, count: int, token: str, k: int = 0, m: int = 0) -> list[Reservation]:
        """Reserve ``count`` keys to give objects later with :meth:`put` (``planned=``)."""
        validation.token(token)
        plan = await self.call(self._gateway().PlanPut, gateway_pb2.PlanPutRequest(k=k, m=m, count=count), token)
        return [Reservation(p.key, p.plan_ticket, p.chunk_ticket) for p in plan.plans]

    async def _plan(
        self, token: str, catalog: str, k: int, m: int, count: int, *, pooled: bool
    ) -> tuple[gateway_pb2.PlanPutResponse, list[gateway_pb2.PlannedKey]]:
        """Planned keys with the policy and container view to use for them.

        Single puts take keys from a pool planned in one call, renewed
        when it runs out or its container view is older than ``PLAN_POOL_SECONDS``.
        """
        if not pooled:
            plan = await self.call(self._gateway().PlanPut, _plan_request(catalog, k, m, count), token)
            return plan, list(plan.plans)
        async with self._plan_lock:
            pool = await self._pool(token, catalog, k, m)
            return pool.plan, [pool.keys.popleft()]

    async def _pool(self, token: str, catalog: str, k: int, m: int) -> _PlanPool:
        """The pool of planned keys for this token and policy, renewed if empty or stale.

        Puts that ask for no policy (k 0) get their catalog's, so they pool by catalog.
        """
        which = _pool_key(token, catalog, k, m)
        pool = self._plans.get(which)
        now = time.monotonic()
        if pool is None or not pool.keys or now - pool.fetched > PLAN_POOL_SECONDS:
            plan = await self.call(self._gateway().PlanPut, _plan_request(catalog, k, m, PLAN_POOL_SIZE), token)
            pool = self._plans[which] = _PlanPool(plan, collections.deque(plan.plans), now)
        return pool

    async def _write_whole(self, placed: list[_Placed], progress: Progress | None) -> None:
        """Objects of one segment: every chunk whole, batched per container."""
        refs: list[ChunkRef] = []
        fragments: list[bytes] = []
        for p in placed:
            segment = await _one_segment(p.item, p.policy.segment_size)
            for index, (target, fragment) in enumerate(zip(p.targets, p.codec.encode(segment), strict=True)):
                refs.append(ChunkRef(target.address, p.planned.key, index, target.id, p.planned.chunk_ticket))
                fragments.append(fragment)
        stubs = self._stubs([r.address for r in refs])
        errors = await write_whole_chunks(stubs, refs, fragments, self.timeout, self.retry_timeout)
        position = 0
        for p in placed:
            p.errors = errors[position : position + p.codec.n]
            position += p.codec.n
            if progress:
                progress(p.item.size)

    async def _write_streamed(self, p: _Placed, progress: Progress | None) -> list[str | None]:
        """Many segments: one PutChunk stream per chunk, fed segment by segment."""
        writers = [
            ChunkWriter(self._container(t.address), p.planned.key, i, self.queue_depth, t.id, p.planned.chunk_ticket)
            for i, t in enumerate(p.targets)
        ]
        for w in writers:
            w.start()
        total = 0
        try:
            async for segment in p.item.segments(p.policy.segment_size):
                if total and not segment:
                    break
                total += len(segment)
                fragments = p.codec.encode(segment)
                await asyncio.gather(
                    *(w.send(f, self.fragment_timeout) for w, f in zip(writers, fragments, strict=True))
                )
                if progress:
                    progress(len(segment))
            await asyncio.gather(*(w.finish(self.fragment_timeout) for w in writers))
        except BaseException:
            await asyncio.gather(*(w.cancel() for w in writers))
            raise
        if total != p.item.size:
            raise InvalidArgument(
                f"The source changed while it was stored ({p.item.size} bytes announced, {total} read)."
            )
        return [w.error for w in writers]

    async def _commit(self, placed: list[_Placed], token: str, catalog: str) -> None:
        request = gateway_pb2.CommitPutRequest(
            objects=[
                gateway_pb2.ObjectCommit(
                    key=p.planned.key,
                    catalog=catalog,
                    name=p.item.name,
                    size=p.item.size,
                    plan_ticket=p.planned.plan_ticket,
                    inline=True,
                    data=p.data,
                    crc32=checksum(p.data),
                )
                if p.inline
                else gateway_pb2.ObjectCommit(
                    key=p.planned.key,
                    catalog=catalog,
                    name=p.item.name,
                    size=p.item.size,
                    policy=p.policy,
                    plan_ticket=p.planned.plan_ticket,
                    chunks=[
                        common_pb2.ChunkLocation(index=i, container_id=t.id, stored=e is None)
                        for i, (t, e) in enumerate(zip(p.targets, p.errors, strict=True))
                    ],
                )
                for p in placed
            ]
        )
        try:
            await self.call(self._gateway().CommitPut, request, token, tolerate_after_retry=DynoStoreError)
            return
        except _RetriedIntoError as retried:
            # An earlier attempt may have landed and lost its answer.
            error = retried.error
        except _COMMIT_REFUSALS:
            raise  # the first and only attempt was refused: nothing was written
        except DynoStoreError as exc:
            error = exc  # unavailable, timed out, internal: the commit may have landed
        await self._settle_commit(placed, token, error)

    async def _settle_commit(self, placed: list[_Placed], token: str, error: DynoStoreError) -> None:
        """Find out whether a commit that ended in ``error`` landed; return if it did, as ours.

        Raises:
            _CommitOutcomeUnknownError: it did not land (it may still, if it is in flight), or the
                gateway cannot tell now.
        """
        try:
            locations = await self.locate([p.planned.key for p in placed], token)
        except DynoStoreError:
            raise _CommitOutcomeUnknownError(_unknown_outcome(error)) from None
        if all(_committed_as(p, location) for p, location in zip(placed, locations, strict=True)):
            log.info("A commit that ended in %s had landed.", type(error).__name__)
            return
        if isinstance(error, AlreadyExists):
            raise _CommitOutcomeUnknownError(error)
        raise _CommitOutcomeUnknownError(_unknown_outcome(error))

    async def _discard(self, placed: list[_Placed]) -> None:
        """Best effort removal of the chunks that puts which failed did store (and only those)."""
        await asyncio.gather(
            *(
                self.delete_chunks(
                    p.planned.key,
                    p.planned.chunk_ticket,
                    [(i, t.address) for i, t in enumerate(p.targets) if not p.errors or p.errors[i] is None],
                )
                for p in placed
            )
        )

    async def delete_chunks(self, key: str, ticket: str, chunks: Sequence[tuple[int, str]]) -> None:
        """Best effort removal of chunks ``(index, container address)`` of ``key``."""

        async def delete(index: int, address: str) -> None:
            request = container_pb2.DeleteChunkRequest(key=key, index=index, ticket=ticket)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._container(address).DeleteChunk(request, timeout=5)

        await asyncio.gather(*(delete(index, address) for index, address in chunks))

    # get --------------------------------------------------------------------

    async def locate(self, keys: Sequence[str], token: str) -> list[gateway_pb2.Location]:
        """Object metadata and chunk locations, one per key (``code`` says why one is missing)."""
        for key in keys:
            validation.key(key)
        validation.token(token)
        found: list[gateway_pb2.Location] = []
        for start in range(0, len(keys), GROUP):
            request = gateway_pb2.LocateRequest(keys=keys[start : start + GROUP])
            found += (await self.call(self._gateway().Locate, request, token)).locations
        return found

    async def locate_one(self, key: str, token: str) -> gateway_pb2.Location:
        """Metadata and chunk locations of one object.

        Raises:
            NotFound: no object has this key.
            PermissionDenied: the object belongs to another user.
        """
        (location,) = await self.locate([key], token)
        if location.code:
            raise error_for_code(location.code, location.message)
        return location

    async def get(self, key: str, *, token: str, progress: Progress | None = None) -> AsyncIterator[bytes]:
        """Yield the object's bytes segment by segment, verified and decoded.

        Raises:
            NotFound: no object has this key.
            DataLoss: fewer than k chunks can be read for some segment.
        """
        if self.relay:
            async for data in self._relay_get(key, token, progress):
                yield data
            return
        async for segment in self.read_checked(await self.locate_one(key, token), token, progress):
            yield segment

    async def read_checked(
        self, location: gateway_pb2.Location, token: str, progress: Progress | None = None
    ) -> AsyncIterator[bytes]:
        """:meth:`read`, asking the gateway again when chunks turn out lost.

        A get that races an evict finds the chunks deleted: that is ``NotFound``,
        not ``DataLoss``. A record that changed before anything was handed out
        (a repair moved chunks) is read once more at its new locations.

        Raises:
            NotFound: the object was evicted while it was read.
            DataLoss: more than m chunks of a segment are really gone.
        """
        key = location.object.key
        yielded = False
        try:
            async for segment in self.read(location, progress):
                yielded = True
                yield segment
            return
        except DataLoss:
            try:
                now = await self.locate_one(key, token)
            except NotFound:
                raise NotFound(f"Object {key} was evicted while it was read.") from None
            if yielded or list(now.chunks) == list(location.chunks):
                raise
        async for segment in self.read(now, progress):
            yield segment

    async def _relay_get(self, key: str, token: str, progress: Progress | None) -> AsyncIterator[bytes]:
        """An object's bytes through the gateway; each message must come within ``fragment_timeout``."""
        validation.key(key)
        validation.token(token)
        call = self._gateway().RelayGet(gateway_pb2.RelayGetRequest(key=key), metadata=auth_metadata(token))
        try:
            while True:
                try:
                    reply = await asyncio.wait_for(call.read(), self.fragment_timeout)
                except TimeoutError:
                    raise Unavailable(f"The gateway sent nothing of {key} for {self.fragment_timeout} s.") from None
                if reply is grpc.aio.EOF:  # read() raises for a stream that ended in an error
                    return
                if reply.data:
                    if progress:
                        progress(len(reply.data))
                    yield reply.data
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def get_many(self, keys: Sequence[str], token: str) -> list[list[bytes] | None]:
        """The segments of each object (joined, its bytes), None where no object has the key.

        One Locate call per group of objects; objects of one segment are read
        as whole chunks, batched per container, falling back to the per-object
        path (parity, retries) for any that miss a chunk. Segments are handed
        out unjoined so that the caller joins them in its own thread (see
        :meth:`Client.get`).

        Raises:
            PermissionDenied: an object belongs to another user.
            DataLoss: an object cannot be rebuilt.
        """
        if self.relay:
            return [await self._relay_get_or_none(key, token) for key in keys]
        locations = await self.locate(keys, token)
        results: list[list[bytes] | None] = [None] * len(keys)
        whole: list[int] = []
        for i, location in enumerate(locations):
            if location.code == NotFound.code.value[0]:
                continue
            if location.code:
                raise error_for_code(location.code, location.message)
            if location.inline:
                results[i] = [_inline_bytes(location)]
            elif location.object.size <= location.policy.segment_size:
                whole.append(i)
            else:
                results[i] = await self._read_or_none(location, token)
        for i, data in zip(whole, await self._read_whole([locations[i] for i in whole]), strict=True):
            results[i] = [data] if data is not None else await self._read_or_none(locations[i], token)
        return results

    async def _read_or_none(self, location: gateway_pb2.Location, token: str) -> list[bytes] | None:
        """The segments of one located object, None if it was evicted meanwhile."""
        try:
            return [s async for s in self.read_checked(location, token)]
        except NotFound:
            return None

    async def _relay_get_or_none(self, key: str, token: str) -> list[bytes] | None:
        try:
            return [data async for data in self._relay_get(key, token, None)]
        except NotFound:
            return None

    async def _read_whole(self, locations: list[gateway_pb2.Location]) -> list[bytes | None]:
        """One-segment objects from their data chunks, batched; None where one is missing."""
        refs: list[ChunkRef] = []
        wanted: list[list[int]] = []
        for location in locations:
            k = location.policy.k
            usable = sorted(
                (c for c in location.chunks if c.stored and c.address), key=lambda c: (c.index >= k, c.index)
            )[:k]
            wanted.append([len(refs) + j for j in range(len(usable))])
            refs += [ChunkRef(c.address, location.object.key, c.index, ticket=location.chunk_ticket) for c in usable]
        fragments = await read_whole_chunks(self._stubs([r.address for r in refs]), refs, self.fragment_timeout)
        decoded: list[bytes | None] = []
        for location, positions in zip(locations, wanted, strict=True):
            codec = Codec(location.policy.k, location.policy.m)
            parts: list[bytes | None] = [None] * codec.n
            for position in positions:
                parts[refs[position].index] = fragments[position]
            if sum(p is not None for p in parts) < codec.k:
                decoded.append(None)
            else:
                decoded.append(codec.decode(parts))
        return decoded

    async def read(self, location: gateway_pb2.Location, progress: Progress | None = None) -> AsyncIterator[bytes]:
        """Decode an object segment by segment, switching to parity where chunks fail.

        Data chunks are read first; a chunk that fails, times out or fails its
        checksum is replaced by another from the same segment on.
        """
        if location.inline:
            data = _inline_bytes(location)
            if progress:
                progress(len(data))
            yield data
            return
        key = location.object.key
        policy = location.policy
        codec = Codec(policy.k, policy.m)
        size = location.object.size
        count = max(1, -(-size // policy.segment_size))
        full_fragment = codec.fragment_size(policy.segment_size) if size >= policy.segment_size else 0
        candidates = sorted(
            (c for c in location.chunks if c.stored and c.address), key=lambda c: (c.index >= codec.k, c.index)
        )
        by_index = {c.index: c for c in candidates}
        # One segment: each chunk is one fragment, read in one unary call.
        reader_type = WholeChunkReader if count == 1 else ChunkReader
        active: list[Reader] = []
        spare = [(loc, False) for loc in candidates]
        unreachable: list[common_pb2.ChunkLocation] = []
        # Why each chunk that was tried could not be read.
        failures: dict[int, DynoStoreError | None] = {}
        try:
            for segment in range(count):
                offset = segment * full_fragment
                fragments: list[bytes | memoryview | None] = [None] * codec.n
                while (have := sum(f is not None for f in fragments)) < codec.k:
                    if len(active) < codec.k and not spare and unreachable:
                        # Last chance before giving up: wait for those connections, all at once.
                        spare, unreachable = [(loc, True) for loc in unreachable], []
                    while spare and (len(active) < codec.k or spare[0][1]):
                        loc, patient = spare.pop(0)
                        stub = self._container(loc.address)
                        active.append(
                            reader_type(stub, key, loc.index, offset, ticket=location.chunk_ticket, patient=patient)
                        )
                    waiting = [r for r in active if fragments[r.index] is None]
                    if not waiting:
                        raise _unreadable(location, segment, have, failures)
                    got = await self._first_fragments(waiting, codec.k - have)
                    for reader in waiting:
                        if reader not in got:  # cut short: enough others answered first
                            active.remove(reader)
                            await reader.close()
                            spare.insert(0, (by_index[reader.index], False))
                        elif (fragment := got[reader]) is None:
                            log.info("Chunk %d of %s failed, using another: %s", reader.index, key, reader.error)
                            failures[reader.index] = reader.error
                            active.remove(reader)
                            await reader.close()
                            if isinstance(reader.error, Unavailable) and not reader.patient:
                                unreachable.append(by_index[reader.index])
                        else:
                            reader.patient = False
                            fragments[reader.index] = fragment
                data = codec.decode(fragments)
                if progress:
                    progress(len(data))
                yield data
        finally:
            for reader in active:
                await reader.close()

    async def _first_fragments(self, readers: list[Reader], need: int) -> dict[Reader, bytes | memoryview | None]:
        """Next fragment (or None on failure) of each reader, until ``need`` succeeded.

        Readers still waiting when enough others answered are left out of the result.
        """
        tasks = {
            asyncio.ensure_future(r.next(self.retry_timeout if r.patient else self.fragment_timeout)): r
            for r in readers
        }
        results: dict[Reader, bytes | memoryview | None] = {}
        pending = set(tasks)
        try:
            while pending and sum(v is not None for v in results.values()) < need:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    results[tasks[task]] = task.result()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return results

    # repair -----------------------------------------------------------------

    async def repair(self, key: str, token: str, progress: Progress | None = None, *, verify: bool = False) -> int:
        """Rebuild the chunks of an object that are missing, on dead containers or (``verify``) damaged.

        See :func:`dynostore.client.repair.repair`.
        """
        return await repair_object(self, key, token, progress, verify=verify)

    # other calls --------------------------------------------------------------

    async def exists(self, key: str, token: str) -> bool:
        """Whether ``key`` names an object the token may read."""
        validation.key(key)
        validation.token(token)
        reply = await self.call(self._gateway().Exists, gateway_pb2.ExistsRequest(key=key), token)
        return reply.exists

    async def evict(self, key: str, token: str) -> bool:
        """Remove an object; return whether it existed."""
        validation.key(key)
        validation.token(token)
        reply = await self.call(self._gateway().Evict, gateway_pb2.EvictRequest(key=key), token)
        return reply.existed

    async def list(self, catalog: str, token: str) -> list[ObjectInfo]:
        """Objects of a catalog (``name``, or ``owner/name`` for one shared with you)."""
        validation.catalog_ref(catalog, "")
        validation.token(token)
        call = self._gateway().List(
            gateway_pb2.ListRequest(catalog=catalog), metadata=auth_metadata(token), timeout=self.timeout
        )
        try:
            return [object_info(m) async for m in call]
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def create_user(self, name: str, token: str, container: bool = False) -> str:
        """Create a user (admin token needed) and return its token; ``container``: a container credential."""
        validation.user_name(name)
        validation.token(token)
        request = gateway_pb2.CreateUserRequest(name=name, container=container)
        reply = await self.call(self._gateway().CreateUser, request, token)
        return reply.token


async def _one_segment(item: PutItem, segment_size: int) -> bytes:
    """All the bytes of an object of at most one segment."""
    source = item.segments(segment_size)
    segment: bytes = await anext(aiter(source), b"")
    rest: bytes = await anext(source, b"")
    if len(segment) != item.size or rest:
        raise InvalidArgument(f"The source changed while it was stored ({item.size} bytes announced).")
    return segment


def _plan_request(catalog: str, k: int, m: int, count: int) -> gateway_pb2.PlanPutRequest:
    """A PlanPut for puts into ``catalog``: the catalog matters only when they ask for no policy."""
    return gateway_pb2.PlanPutRequest(k=k, m=m, count=count, catalog="" if k else catalog)


def _pool_key(token: str, catalog: str, k: int, m: int) -> tuple[str, str, int, int]:
    """Which pool of planned keys puts take from: one per policy asked for, or per catalog when none is."""
    return token, "" if k else catalog, k, m


def _committed_as(placed: _Placed, location: gateway_pb2.Location) -> bool:
    """Whether ``location`` is the record that committing ``placed`` writes."""
    if location.code or location.object.size != placed.item.size or location.inline != placed.inline:
        return False
    return [c.container_id for c in location.chunks] == [t.id for t in placed.targets]


def _unknown_outcome(error: DynoStoreError) -> DynoStoreError:
    """``error`` (of the same class) saying that the put may or may not have been committed."""
    return type(error)(
        f"{error} The commit's outcome is unknown: the object may appear under its key, whole; "
        "if it does not, its chunks are left to garbage collection."
    )


def _inline_bytes(location: gateway_pb2.Location) -> bytes:
    """An inline object's bytes, verified against their CRC-32."""
    if len(location.data) != location.object.size or checksum(location.data) != location.crc32:
        raise DataLoss(f"The inline bytes of object {location.object.key} fail their checksum.")
    return location.data


def _unreadable(
    location: gateway_pb2.Location, segment: int, have: int, failures: dict[int, DynoStoreError | None]
) -> DynoStoreError:
    """The error for a segment with fewer than k readable chunks.

    ``DataLoss`` only when more than m chunks are really gone: recorded as
    missing, or answered as absent or corrupt by their container. Chunks on
    containers that are down, unregistered or slow may come back: that is
    ``Unavailable``, which a later try may get past.
    """
    k, key = location.policy.k, location.object.key
    gone = [c.index for c in location.chunks if not c.stored or isinstance(failures.get(c.index), DataLoss | NotFound)]
    away = [c.index for c in location.chunks if c.index not in gone and (not c.address or c.index in failures)]
    if len(location.chunks) - len(gone) >= k:
        return Unavailable(
            f"Object {key}: segment {segment} has only {have} readable chunks now, {k} are needed; "
            f"chunks {_indices(away)} are on containers that are down or unreachable, so try again later."
        )
    return DataLoss(
        f"Object {key}: segment {segment} has only {have} readable chunks, {k} are needed. "
        f"Lost chunks: {_indices(gone)}."
    )


def _indices(indices: list[int]) -> str:
    return ", ".join(map(str, indices)) or "none"


__all__ = ["ObjectInfo", "Pipeline", "PutItem", "Reservation"]
