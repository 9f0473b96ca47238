"""The put/get pipeline: erasure-code, place, stream chunks in parallel, verify.

This is the one implementation of the data path. The synchronous
:class:`~dynostore.client.Client` drives it from a private event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from dynostore import validation
from dynostore._proto import common_pb2, container_pb2, container_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from dynostore.client.placement import PlacementPolicy, SpreadPlacement
from dynostore.erasure import Codec, checksum
from dynostore.errors import DataLoss, DeadlineExceeded, DynoStoreError, InvalidArgument, Unavailable
from dynostore.rpc import auth_metadata, from_rpc_error, open_channel

log = logging.getLogger(__name__)
T = TypeVar("T")

# Puts of at most this many bytes take their key from a pool of planned keys.
POOLED_PUT_BYTES = 1024 * 1024
PLAN_POOL_SIZE = 64
# A pool's view of the live containers is renewed after this long.
PLAN_POOL_SECONDS = 2.0


@dataclass
class _PlanPool:
    plan: gateway_pb2.PlanPutResponse
    keys: collections.deque[gateway_pb2.PlannedKey]
    fetched: float


# Segments are produced by the caller: an async iterator of bytes, each
# ``segment_size`` long except the last.
SegmentSource = Callable[[int], AsyncIterator[bytes]]
Progress = Callable[[int], None]


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
        queue_depth: int = 2,
    ) -> None:
        """Talk to ``gateway``; control calls time out after ``timeout`` seconds.

        ``fragment_timeout`` bounds the wait for any one fragment from a
        container, so a hung container costs at most that long before parity
        is used instead. A container that could not be reached gets one more
        try, waiting up to ``retry_timeout`` for its connection, before a get
        gives up or a small put records its chunk as missing.
        """
        self.gateway_address = gateway
        self.placement = placement or SpreadPlacement()
        self.timeout = timeout
        self.fragment_timeout = fragment_timeout
        self.retry_timeout = retry_timeout
        self.queue_depth = queue_depth
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._plans: dict[tuple[str, int, int], _PlanPool] = {}
        self._plan_lock = asyncio.Lock()

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address)
        return channel

    def _gateway(self) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(self._channel(self.gateway_address))

    def _container(self, address: str) -> container_pb2_grpc.ContainerStub:
        return container_pb2_grpc.ContainerStub(self._channel(address))

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    async def call(self, method: Callable[..., Awaitable[T]], request: object, token: str) -> T:
        """Make one control call to the gateway, mapping failures to DynoStore errors."""
        try:
            return await method(request, metadata=auth_metadata(token), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    # put --------------------------------------------------------------------

    async def put(
        self,
        segments: SegmentSource,
        size: int,
        *,
        token: str,
        catalog: str,
        name: str,
        k: int = 0,
        m: int = 0,
        progress: Progress | None = None,
    ) -> str:
        """Store an object of ``size`` bytes and return its key.

        ``segments(segment_size)`` must yield the object's bytes in segments of
        that size. The object becomes visible only after every chunk stream has
        ended and the gateway committed it.
        """
        validation.token(token)
        validation.catalog(catalog)
        validation.object_name(name)
        if k or m:
            validation.ec_params(k, m)
        plan, planned = await self._plan(token, k, m, pooled=size <= POOLED_PUT_BYTES)
        codec = Codec(plan.policy.k, plan.policy.m)
        segment_size = plan.policy.segment_size
        chunk_bytes = -(-max(size, 1) // codec.k) + 1024
        targets = self.placement.place(plan.containers, codec.n, chunk_bytes)
        try:
            write = self._write_whole if size <= segment_size else self._write_streamed
            errors = await write(planned.key, targets, codec, segments, segment_size, size, progress)
            if any(errors):
                self._plans.pop((token, k, m), None)  # the container view is stale: plan afresh
            results = [e is None for e in errors]
            stored = sum(results)
            quorum = min(codec.k + 1, codec.n)
            if stored < quorum:
                failed = "; ".join(f"chunk {i}: {e}" for i, e in enumerate(errors) if e)
                raise Unavailable(
                    f"Only {stored} of {codec.n} chunks could be stored (at least {quorum} needed): {failed}"
                )
        except BaseException:
            await self._discard(planned.key, targets)
            raise
        chunks = [
            common_pb2.ChunkLocation(index=i, container_id=t.id, stored=ok)
            for i, (t, ok) in enumerate(zip(targets, results, strict=True))
        ]
        await self.call(
            self._gateway().CommitPut,
            gateway_pb2.CommitPutRequest(
                key=planned.key,
                catalog=catalog,
                name=name,
                size=size,
                policy=plan.policy,
                chunks=chunks,
                plan_ticket=planned.plan_ticket,
            ),
            token,
        )
        return planned.key

    async def _plan(
        self, token: str, k: int, m: int, *, pooled: bool
    ) -> tuple[gateway_pb2.PlanPutResponse, gateway_pb2.PlannedKey]:
        """A planned key with the policy and container view to use for it.

        Small puts take keys from a pool planned in one call, renewed when it
        runs out or its container view is older than ``PLAN_POOL_SECONDS``.
        """
        if not pooled:
            plan = await self.call(self._gateway().PlanPut, gateway_pb2.PlanPutRequest(k=k, m=m, count=1), token)
            return plan, plan.plans[0]
        pool_key = (token, k, m)
        async with self._plan_lock:
            pool = self._plans.get(pool_key)
            now = time.monotonic()
            if pool is None or not pool.keys or now - pool.fetched > PLAN_POOL_SECONDS:
                plan = await self.call(
                    self._gateway().PlanPut, gateway_pb2.PlanPutRequest(k=k, m=m, count=PLAN_POOL_SIZE), token
                )
                pool = self._plans[pool_key] = _PlanPool(plan, collections.deque(plan.plans), now)
            return pool.plan, pool.keys.popleft()

    async def _write_whole(
        self,
        key: str,
        targets: list[common_pb2.ContainerInfo],
        codec: Codec,
        segments: SegmentSource,
        segment_size: int,
        size: int,
        progress: Progress | None,
    ) -> list[str | None]:
        """One segment: each chunk goes in one unary WriteChunk call. Returns per-chunk errors."""
        source = segments(segment_size)
        segment: bytes = await anext(aiter(source), b"")
        rest: bytes = await anext(source, b"")
        if len(segment) != size or rest:
            raise InvalidArgument(f"The source changed while it was stored ({size} bytes announced).")

        async def write(index: int, target: common_pb2.ContainerInfo, fragment: bytes) -> str | None:
            request = container_pb2.WriteChunkRequest(
                header=container_pb2.ChunkHeader(key=key, index=index),
                fragments=[container_pb2.Fragment(data=fragment, crc32=checksum(fragment))],
            )
            stub = self._container(target.address)
            try:
                await stub.WriteChunk(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    return f"{exc.code().name}: {exc.details()}"
                try:  # the channel may be backing off from a container that is back: wait for it once
                    await stub.WriteChunk(request, timeout=self.retry_timeout, wait_for_ready=True)
                except grpc.aio.AioRpcError as again:
                    return f"{again.code().name}: {again.details()}"
            return None

        fragments = codec.encode(segment)
        errors = await asyncio.gather(
            *(write(i, t, f) for i, (t, f) in enumerate(zip(targets, fragments, strict=False)))
        )
        if progress:
            progress(size)
        return list(errors)

    async def _write_streamed(
        self,
        key: str,
        targets: list[common_pb2.ContainerInfo],
        codec: Codec,
        segments: SegmentSource,
        segment_size: int,
        size: int,
        progress: Progress | None,
    ) -> list[str | None]:
        """Many segments: one PutChunk stream per chunk, fed segment by segment."""
        writers = [_ChunkWriter(self._container(t.address), key, i, self.queue_depth) for i, t in enumerate(targets)]
        for w in writers:
            w.start()
        total = 0
        try:
            async for segment in segments(segment_size):
                if total and not segment:
                    break
                total += len(segment)
                fragments = codec.encode(segment)
                await asyncio.gather(*(w.send(f) for w, f in zip(writers, fragments, strict=True)))
                if progress:
                    progress(len(segment))
            await asyncio.gather(*(w.finish() for w in writers))
        except BaseException:
            await asyncio.gather(*(w.cancel() for w in writers))
            raise
        if total != size:
            raise InvalidArgument(f"The source changed while it was stored ({size} bytes announced, {total} read).")
        return [w.error for w in writers]

    async def _discard(self, key: str, targets: list[common_pb2.ContainerInfo]) -> None:
        """Best effort removal of the chunks of a put that failed."""

        async def delete(index: int, address: str) -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._container(address).DeleteChunk(
                    container_pb2.DeleteChunkRequest(key=key, index=index), timeout=5
                )

        await asyncio.gather(*(delete(i, t.address) for i, t in enumerate(targets)))

    # get --------------------------------------------------------------------

    async def locate(self, key: str, token: str) -> gateway_pb2.LocateResponse:
        """Object metadata and chunk locations."""
        validation.key(key)
        validation.token(token)
        return await self.call(self._gateway().Locate, gateway_pb2.LocateRequest(key=key), token)

    async def get(self, key: str, *, token: str, progress: Progress | None = None) -> AsyncIterator[bytes]:
        """Yield the object's bytes segment by segment, verified and decoded.

        Data chunks are read first; a chunk that fails, times out or fails its
        checksum is replaced by a parity chunk from the same segment on.

        Raises:
            DataLoss: fewer than k chunks can be read for some segment.
        """
        located = await self.locate(key, token)
        policy = located.policy
        codec = Codec(policy.k, policy.m)
        size = located.object.size
        segment_size = policy.segment_size
        count = max(1, -(-size // segment_size))
        full_fragment = codec.fragment_size(segment_size) if size >= segment_size else 0
        candidates = [c for c in located.chunks if c.stored and c.address]
        candidates.sort(key=lambda c: (c.index >= codec.k, c.index))
        by_index = {c.index: c for c in candidates}
        # One segment: each chunk is one fragment, read in one unary call.
        reader_type = _WholeChunkReader if count == 1 else _ChunkReader
        active: list[_ChunkReader | _WholeChunkReader] = []
        spare = [(loc, False) for loc in candidates]
        unreachable: list[common_pb2.ChunkLocation] = []
        try:
            for segment in range(count):
                offset = segment * full_fragment
                fragments: list[bytes | None] = [None] * codec.n
                while (have := sum(f is not None for f in fragments)) < codec.k:
                    if len(active) < codec.k and not spare and unreachable:
                        # Last chance before giving up: wait for those connections, all at once.
                        spare, unreachable = [(loc, True) for loc in unreachable], []
                    while spare and (len(active) < codec.k or spare[0][1]):
                        loc, patient = spare.pop(0)
                        stub = self._container(loc.address)
                        active.append(reader_type(stub, key, loc.index, offset, patient=patient))
                    waiting = [r for r in active if fragments[r.index] is None]
                    if not waiting:
                        raise DataLoss(
                            f"Object {key}: segment {segment} has only {have} readable chunks, "
                            f"{codec.k} are needed. Lost chunks: {_lost(located, active)}."
                        )
                    got = await self._first_fragments(waiting, codec.k - have)
                    for reader in waiting:
                        if reader not in got:  # cut short: enough others answered first
                            active.remove(reader)
                            await reader.close()
                            spare.insert(0, (by_index[reader.index], False))
                        elif (fragment := got[reader]) is None:
                            log.info("Chunk %d of %s failed, using another: %s", reader.index, key, reader.error)
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

    async def _first_fragments(
        self, readers: list[_ChunkReader | _WholeChunkReader], need: int
    ) -> dict[_ChunkReader | _WholeChunkReader, bytes | None]:
        """Next fragment (or None on failure) of each reader, until ``need`` succeeded.

        Readers still waiting when enough others answered are left out of the result.
        """
        tasks = {
            asyncio.ensure_future(r.next(self.retry_timeout if r.patient else self.fragment_timeout)): r
            for r in readers
        }
        results: dict[_ChunkReader | _WholeChunkReader, bytes | None] = {}
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
        """Objects of a catalog."""
        validation.catalog(catalog)
        validation.token(token)
        call = self._gateway().List(
            gateway_pb2.ListRequest(catalog=catalog), metadata=auth_metadata(token), timeout=self.timeout
        )
        try:
            return [object_info(m) async for m in call]
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def create_user(self, name: str, token: str) -> str:
        """Create a user (admin token needed) and return its token."""
        validation.user_name(name)
        validation.token(token)
        reply = await self.call(self._gateway().CreateUser, gateway_pb2.CreateUserRequest(name=name), token)
        return reply.token


def _lost(located: gateway_pb2.LocateResponse, active: list[_ChunkReader | _WholeChunkReader]) -> str:
    alive = {r.index for r in active}
    return ", ".join(str(c.index) for c in located.chunks if c.index not in alive) or "none"


class _ChunkWriter:
    """Streams one chunk to one container, fed through a bounded queue."""

    def __init__(self, stub: container_pb2_grpc.ContainerStub, key: str, index: int, depth: int):
        self.stub = stub
        self.key = key
        self.index = index
        self.error: str | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=depth)
        self._task: asyncio.Task[bool] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _messages(self) -> AsyncIterator[container_pb2.PutChunkRequest]:
        yield container_pb2.PutChunkRequest(header=container_pb2.ChunkHeader(key=self.key, index=self.index))
        while (fragment := await self._queue.get()) is not None:
            yield container_pb2.PutChunkRequest(
                fragment=container_pb2.Fragment(data=fragment, crc32=checksum(fragment))
            )

    async def _run(self) -> bool:
        try:
            await self.stub.PutChunk(self._messages())
            return True
        except grpc.aio.AioRpcError as exc:
            self.error = f"{exc.code().name}: {exc.details()}"
        except Exception as exc:
            self.error = repr(exc)
        while not self._queue.empty():  # unblock a producer waiting on a full queue
            self._queue.get_nowait()
        return False

    async def send(self, fragment: bytes) -> None:
        if self.error is None:
            await self._queue.put(fragment)

    async def finish(self) -> bool:
        assert self._task is not None
        if self.error is None:
            await self._queue.put(None)
        return await self._task

    async def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class _ChunkReader:
    """Reads one chunk fragment by fragment from a payload offset, verifying CRCs."""

    def __init__(
        self, stub: container_pb2_grpc.ContainerStub, key: str, index: int, offset: int, *, patient: bool = False
    ):
        self.index = index
        self.patient = patient  # wait for the connection instead of failing fast
        self.error: DynoStoreError | None = None
        request = container_pb2.GetChunkRequest(key=key, index=index, offset=offset)
        self._call = stub.GetChunk(request, wait_for_ready=patient)
        self._stream = aiter(self._call)

    async def next(self, timeout: float) -> bytes | None:
        """The next fragment, or None (with ``error`` set) when this chunk failed."""
        try:
            reply = await asyncio.wait_for(anext(self._stream), timeout)
        except StopAsyncIteration:
            self.error = DataLoss("the chunk ended early")
            return None
        except TimeoutError:
            self.error = DeadlineExceeded(f"no fragment within {timeout} s")
            return None
        except grpc.aio.AioRpcError as exc:
            self.error = from_rpc_error(exc)
            return None
        fragment = reply.fragment
        if checksum(fragment.data) != fragment.crc32:
            self.error = DataLoss("a fragment failed its checksum in transit")
            return None
        return fragment.data

    async def close(self) -> None:
        self._call.cancel()


class _WholeChunkReader:
    """Reads a one-fragment chunk in a single ReadChunk call (same interface as _ChunkReader)."""

    def __init__(
        self, stub: container_pb2_grpc.ContainerStub, key: str, index: int, offset: int, *, patient: bool = False
    ):
        self.index = index
        self.patient = patient
        self.error: DynoStoreError | None = None
        self._stub = stub
        self._request = container_pb2.ReadChunkRequest(key=key, index=index)

    async def next(self, timeout: float) -> bytes | None:
        """The chunk's only fragment, or None (with ``error`` set) when it failed."""
        try:
            reply = await self._stub.ReadChunk(self._request, timeout=timeout, wait_for_ready=self.patient)
        except grpc.aio.AioRpcError as exc:
            self.error = from_rpc_error(exc)
            return None
        if len(reply.fragments) != 1:
            self.error = DataLoss(f"expected one fragment, found {len(reply.fragments)}")
            return None
        fragment = reply.fragments[0]
        if checksum(fragment.data) != fragment.crc32:
            self.error = DataLoss("a fragment failed its checksum in transit")
            return None
        return fragment.data

    async def close(self) -> None:
        """Nothing to release."""
