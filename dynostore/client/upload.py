"""The put stage: plan keys, erasure-code, place and write chunks, commit (or settle an unknown commit).

A put becomes visible only with its commit; a commit whose answer is lost is
settled through Locate, and its chunks are never deleted while a record may
name them (the containers' garbage collection takes what no record names).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from dynostore import validation
from dynostore._proto import common_pb2, gateway_pb2
from dynostore.client.chunks import ChunkRef, ChunkWriter, WriteHedge, lagged_reason, write_whole_chunks
from dynostore.client.connection import (
    GROUP,
    RELAY_MESSAGE,
    RELAY_MIN_RATE,
    GatewayConnection,
    Progress,
    SegmentSource,
    _RetriedIntoError,
)
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
)
from dynostore.rpc import auth_metadata, from_rpc_error

log = logging.getLogger(__name__)

# Puts of one object take their key from a pool of this many planned keys.
PLAN_POOL_SIZE = 64
# A pool's view of the live containers is renewed after this long.
PLAN_POOL_SECONDS = 2.0
# Puts (single or a batch) larger than this plan their own keys, giving their size: the gateway
# refuses one that would exceed the quota before any chunk is written (one call, beside moving the bytes).
POOLED_MAX_BYTES = 16 * 1024 * 1024

# Errors with which the gateway refuses a commit (a put's, a repair's) before it writes anything: after
# one of these on the first attempt the commit surely did not land.
COMMIT_REFUSALS = (
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
class PutItem:
    """One object to put: its bytes (as segments), size, name and lifetime (seconds; 0: the catalog's).

    ``replace_key``: the key of an object of yours that this put replaces (it
    keeps that key); ``replace_name``: the put replaces every other object of
    its name in the catalog. A replacing put is put alone.
    """

    segments: SegmentSource
    size: int
    name: str = ""
    ttl: float = 0.0
    replace_key: str = ""
    replace_name: bool = False

    @property
    def replaces(self) -> bool:
        """Whether this put replaces objects."""
        return bool(self.replace_key or self.replace_name)


@dataclass(frozen=True)
class Reservation:
    """A key reserved for a later put, with the ticket that lets its owner commit it."""

    key: str
    plan_ticket: str
    chunk_ticket: str


class _CommitOutcomeUnknownError(Exception):
    """A commit failed in a way that leaves open whether it landed; ``error`` is what the caller sees."""

    def __init__(self, error: DynoStoreError) -> None:
        super().__init__(str(error))
        self.error = error


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


class Uploader(GatewayConnection):
    """Puts objects through one gateway (see :class:`GatewayConnection` for the arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plans: dict[tuple[str, str, int, int], _PlanPool] = {}
        self._plan_lock = asyncio.Lock()

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
            validation.ttl(item.ttl)
            if item.replace_key:
                validation.key(item.replace_key)
            if item.replace_name and not item.name:
                raise InvalidArgument("A put that replaces by name needs a name.")
        if k or m:
            validation.ec_params(k, m)
        if planned is not None and len(planned) != len(items):
            raise InvalidArgument("Give one planned key per object.")
        if any(item.replaces for item in items):
            if len(items) != 1:
                raise InvalidArgument("A put that replaces objects puts one object at a time.")
            items, planned = await self._replacing(items[0], planned[0] if planned else None, token)
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

    async def _replacing(
        self, item: PutItem, planned: Reservation | None, token: str
    ) -> tuple[list[PutItem], list[Reservation] | None]:
        """The item and reservation to put for a replacing put under a reserved key.

        A reserved key that holds no object yet is simply given this one; one
        that holds an object already is replaced by key (the new version's
        chunks then go under a fresh key).
        """
        if planned is None or item.replace_key != planned.key:
            return [item], [planned] if planned else None
        (location,) = await self.locate([planned.key], token)
        if location.code == NotFound.code.value[0]:
            return [dataclasses.replace(item, replace_key="")], [planned]
        return [dataclasses.replace(item, replace_key=planned.key)], None

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
                replacing = any(item.replaces for item in items)
                plan, planned = (await self._pool(token, catalog, k, m, replace=replacing)).plan, list(reserved)
        else:
            size = sum(item.size for item in items)
            replacing = any(item.replaces for item in items)
            pooled = len(items) <= PLAN_POOL_SIZE and size <= POOLED_MAX_BYTES
            plan, planned = await self._plan(token, catalog, k, m, len(items), size, pooled=pooled, replace=replacing)
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
            unknown.error.outcome_unknown = True
            raise unknown.error from None
        except BaseException as exc:
            # Out of the commit, a DynoStoreError is a refusal; anything else (cancelled) may have landed.
            if not committing or isinstance(exc, DynoStoreError):
                await self._discard(placed)
            raise
        return [p.item.replace_key or p.planned.key for p in placed]

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
        header = gateway_pb2.RelayPutHeader(
            catalog=catalog,
            name=item.name,
            size=item.size,
            k=k,
            m=m,
            ttl=item.ttl,
            replace_key=item.replace_key,
            replace_name=item.replace_name,
        )
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
        self, token: str, catalog: str, k: int, m: int, count: int, size: int, *, pooled: bool, replace: bool = False
    ) -> tuple[gateway_pb2.PlanPutResponse, list[gateway_pb2.PlannedKey]]:
        """Planned keys with the policy and container view to use for them (``size``: their objects' bytes).

        Puts of up to ``POOLED_MAX_BYTES`` (single ones, and the batches
        that coalesced ones make) take their keys from a pool planned in one
        call, renewed when it runs out or its container view is older than
        ``PLAN_POOL_SECONDS``; their quota is checked at commit. Larger ones
        plan their own keys, giving their size, so that the gateway refuses
        a put beyond the quota before any chunk is written.
        ``replace``: the keys are for puts that replace objects, which must
        not be refused before their commit weighs what they free: a pool
        they renew is planned without the quota check (the commit of every
        put checks the quota anyway).
        """
        if not pooled:
            request = _plan_request(catalog, k, m, count)
            request.size = size  # the gateway refuses here a put that would exceed the quota
            request.replace = replace
            plan = await self.call(self._gateway().PlanPut, request, token)
            return plan, list(plan.plans)
        keys: list[gateway_pb2.PlannedKey] = []
        async with self._plan_lock:
            while len(keys) < count:  # a pool that runs out part way is renewed (count <= PLAN_POOL_SIZE)
                pool = await self._pool(token, catalog, k, m, replace=replace)
                while pool.keys and len(keys) < count:
                    keys.append(pool.keys.popleft())
            return pool.plan, keys

    async def _pool(self, token: str, catalog: str, k: int, m: int, *, replace: bool = False) -> _PlanPool:
        """The pool of planned keys for this token and policy, renewed if empty or stale.

        Puts that ask for no policy (k 0) get their catalog's, so they pool by catalog.
        ``replace``: a renewal skips the gateway's quota check (see :meth:`_plan`).
        """
        which = _pool_key(token, catalog, k, m)
        pool = self._plans.get(which)
        now = time.monotonic()
        if pool is None or not pool.keys or now - pool.fetched > PLAN_POOL_SECONDS:
            request = _plan_request(catalog, k, m, PLAN_POOL_SIZE)
            request.replace = replace
            plan = await self.call(self._gateway().PlanPut, request, token)
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
        hedge = None
        if self.hedging:
            starts = [0]
            for p in placed:
                starts.append(starts[-1] + p.codec.n)
            objects = [range(a, b) for a, b in itertools.pairwise(starts)]
            hedge = WriteHedge(objects, min(placed[0].codec.k + 1, placed[0].codec.n), self.hedge.write_grace)
        errors = await write_whole_chunks(stubs, refs, fragments, self.timeout, self.retry_timeout, hedge)
        if hedge is not None:
            given_up = f"CANCELLED: {lagged_reason(hedge.quorum)}"
            self.hedge_counts.writes_given_up += sum(1 for e in errors if e == given_up)
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
        quorum = min(p.codec.k + 1, p.codec.n)
        total = 0
        try:
            async for segment in p.item.segments(p.policy.segment_size):
                if total and not segment:
                    break
                total += len(segment)
                fragments = p.codec.encode(segment)
                if self.hedging:
                    await self._hedged_step(writers, fragments, quorum)
                else:
                    await asyncio.gather(
                        *(w.send(f, self.fragment_timeout) for w, f in zip(writers, fragments, strict=True))
                    )
                if progress:
                    progress(len(segment))
            if self.hedging:
                await self._hedged_step(writers, None, quorum)
            else:
                await asyncio.gather(*(w.finish(self.fragment_timeout) for w in writers))
        except BaseException:
            await asyncio.gather(*(w.cancel() for w in writers))
            raise
        if total != p.item.size:
            raise InvalidArgument(
                f"The source changed while it was stored ({p.item.size} bytes announced, {total} read)."
            )
        return [w.error for w in writers]

    async def _hedged_step(self, writers: list[ChunkWriter], fragments: Sequence[bytes] | None, quorum: int) -> None:
        """Send each writer its fragment (``fragments`` None: finish each stream), not waiting without bound.

        Once ``quorum`` writers took their fragment (or, finishing, had it
        stored), the others get the hedge's write grace; those still busy
        then are abandoned, and their chunks recorded missing.
        """
        live = [w for w in writers if w.error is None]
        tasks: dict[asyncio.Future[Any], ChunkWriter]
        if fragments is None:
            tasks = {asyncio.ensure_future(w.finish(self.fragment_timeout)): w for w in live}
        else:
            tasks = {asyncio.ensure_future(w.send(fragments[w.index], self.fragment_timeout)): w for w in live}
        pending = set(tasks)
        began = time.monotonic()
        until: float | None = None
        try:
            while pending:
                wait = None if until is None else max(0.0, until - time.monotonic())
                done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break
                for task in done:
                    task.result()
                ok = sum(1 for t, w in tasks.items() if t.done() and w.error is None)
                if until is None and ok >= quorum:
                    until = time.monotonic() + self.hedge.write_grace(time.monotonic() - began)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in pending:
            writer = tasks[task]
            log.info("Chunk %d of %s lagged; it is recorded missing.", writer.index, writer.key)
            self.hedge_counts.writes_given_up += 1
            await writer.abandon(f"CANCELLED: {lagged_reason(quorum)}")

    async def _commit(self, placed: list[_Placed], token: str, catalog: str) -> None:
        request = gateway_pb2.CommitPutRequest(
            objects=[
                gateway_pb2.ObjectCommit(
                    key=p.planned.key,
                    catalog=catalog,
                    name=p.item.name,
                    size=p.item.size,
                    plan_ticket=p.planned.plan_ticket,
                    ttl=p.item.ttl,
                    replace_key=p.item.replace_key,
                    replace_name=p.item.replace_name,
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
                    ttl=p.item.ttl,
                    replace_key=p.item.replace_key,
                    replace_name=p.item.replace_name,
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
        except COMMIT_REFUSALS:
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
            locations = await self.locate([p.item.replace_key or p.planned.key for p in placed], token)
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
    """Whether ``location`` is the record that committing ``placed`` writes.

    A put that replaced an object by key is committed when that key's record
    is of the version planned for it (its chunks under the planned key).
    """
    if location.code or location.object.size != placed.item.size or location.inline != placed.inline:
        return False
    if location.object.version != (placed.planned.key if placed.item.replace_key else ""):
        return False
    return [c.container_id for c in location.chunks] == [t.id for t in placed.targets]


def _unknown_outcome(error: DynoStoreError) -> DynoStoreError:
    """``error`` (of the same class) saying that the put may or may not have been committed."""
    return type(error)(
        f"{error} The commit's outcome is unknown: the object may appear under its key, whole; "
        "if it does not, its chunks are left to garbage collection."
    )
