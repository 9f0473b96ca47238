"""Moving chunks between the client and containers: streams and batched whole chunks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc

from dynostore._proto import container_pb2, container_pb2_grpc, gateway_pb2
from dynostore.client.latency import HedgePolicy, LatencyTracker
from dynostore.container import wire
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss, DeadlineExceeded, DynoStoreError, error_for_code
from dynostore.rpc import from_rpc_error
from dynostore.rpc.requests import request_metadata

# A batch call carries at most this many chunks or bytes (messages are capped at 64 MiB).
BATCH_CHUNKS = 256
BATCH_BYTES = 16 * 1024 * 1024


def chunk_key(location: gateway_pb2.Location) -> str:
    """The key a located object's chunks are stored under: its version's if it was replaced by key, else its own."""
    return location.object.version or location.object.key


def whole_fragment(result: container_pb2.ReadChunkResult) -> tuple[bytes | None, DynoStoreError | None]:
    """The one verified fragment of a ReadChunks result, or the error that stands for it."""
    if result.status.code:
        return None, error_for_code(result.status.code, result.status.message)
    if len(result.fragments) != 1:
        return None, DataLoss(f"expected one fragment, found {len(result.fragments)}")
    fragment = result.fragments[0]
    if checksum(fragment.data) != fragment.crc32:
        return None, DataLoss("a fragment failed its checksum in transit")
    return fragment.data, None


class ContainerStub(container_pb2_grpc.ContainerStub):
    """The generated stub, with ``PutChunk``/``GetChunk`` on the copy-saving wire format of :mod:`wire`.

    ``GetChunk`` yields :class:`wire.WireFragment` (or a ``GetChunkResponse``
    for an unusual message); ``PutChunk`` takes serialized requests as well
    as messages. :class:`ChunkReader` and :class:`ChunkWriter` work with both
    this stub and the generated one.
    """

    wire_format = True

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        """Make the stub's callables on ``channel`` (synchronous or asyncio)."""
        super().__init__(channel)
        self.GetChunk = channel.unary_stream(
            "/dynostore.v1.Container/GetChunk",
            request_serializer=container_pb2.GetChunkRequest.SerializeToString,
            response_deserializer=wire.decode_get_reply,
            _registered_method=True,
        )
        self.PutChunk = channel.stream_unary(
            "/dynostore.v1.Container/PutChunk",
            request_serializer=wire.serialize,
            response_deserializer=container_pb2.PutChunkResponse.FromString,
            _registered_method=True,
        )
        self.WriteChunks = channel.unary_unary(
            "/dynostore.v1.Container/WriteChunks",
            request_serializer=wire.serialize,
            response_deserializer=container_pb2.WriteChunksResponse.FromString,
            _registered_method=True,
        )


def verified_data(reply: wire.WireFragment | container_pb2.GetChunkResponse) -> bytes | memoryview:
    """The data of a ``GetChunk`` reply from either stub, CRC verified (a view: no copy).

    Raises:
        DataLoss: the fragment fails its checksum.
    """
    fragment = reply if isinstance(reply, wire.WireFragment) else reply.fragment
    if checksum(fragment.data) != fragment.crc32:
        raise DataLoss("a fragment failed its checksum in transit")
    return fragment.data


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of one object at one container address."""

    address: str
    key: str
    index: int
    container_id: str = ""
    ticket: str = ""


@dataclass(frozen=True)
class WriteHedge:
    """When a put stops waiting for its lagging chunks: see :meth:`HedgePolicy.write_grace`."""

    # Positions (into the refs written) of each object's chunks.
    objects: Sequence[range]
    # Chunks of each object that must be stored before any lagging one is given up.
    quorum: int
    # Seconds more for the others, given the seconds the quorum took.
    grace: Callable[[float], float]


def lagged_reason(quorum: int) -> str:
    """Why a put gave up a chunk that lagged (the commit records it missing)."""
    return f"lagged past the hedge grace once {quorum} chunks were ahead (a commit records it missing, for repair)"


def _batches(refs: Sequence[ChunkRef], sizes: Sequence[int]) -> list[list[int]]:
    """Positions of ``refs`` grouped per address into calls within the batch limits."""
    by_address: dict[str, list[list[int]]] = {}
    used: dict[str, int] = {}
    for i, ref in enumerate(refs):
        groups = by_address.setdefault(ref.address, [[]])
        if len(groups[-1]) >= BATCH_CHUNKS or (groups[-1] and used[ref.address] + sizes[i] > BATCH_BYTES):
            groups.append([])
            used[ref.address] = 0
        groups[-1].append(i)
        used[ref.address] = used.get(ref.address, 0) + sizes[i]
    return [group for groups in by_address.values() for group in groups]


async def write_whole_chunks(
    stubs: dict[str, container_pb2_grpc.ContainerStub],
    refs: Sequence[ChunkRef],
    fragments: Sequence[bytes],
    timeout: float,
    retry_timeout: float,
    hedge: WriteHedge | None = None,
) -> list[str | None]:
    """Write one-fragment chunks, one WriteChunks call per container (and batch limit).

    Returns an error description per chunk (None when stored). A call that
    cannot reach its container is tried once more, waiting for the connection.
    With ``hedge``, once every object has ``hedge.quorum`` chunks stored, the
    calls still running get ``hedge.grace`` more seconds and are then
    cancelled (their chunks count as not stored).
    """
    errors: list[str | None] = [None] * len(refs)
    stored: set[int] = set()

    async def call(group: list[int]) -> None:
        stub = stubs[refs[group[0]].address]
        headers = [
            container_pb2.ChunkHeader(
                key=refs[i].key, index=refs[i].index, container_id=refs[i].container_id, ticket=refs[i].ticket
            )
            for i in group
        ]
        request: bytes | container_pb2.WriteChunksRequest
        if getattr(stub, "wire_format", False):  # encoded by hand: the fragments are copied once, not three times
            request = wire.encode_write_chunks(
                [(h, fragments[i], checksum(fragments[i])) for h, i in zip(headers, group, strict=True)]
            )
        else:
            request = container_pb2.WriteChunksRequest(
                chunks=[
                    container_pb2.WholeChunk(
                        header=h, fragments=[container_pb2.Fragment(data=fragments[i], crc32=checksum(fragments[i]))]
                    )
                    for h, i in zip(headers, group, strict=True)
                ]
            )
        try:
            try:
                reply = await stub.WriteChunks(request, timeout=timeout, metadata=request_metadata())
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                # The channel may be backing off from a container that is back: wait for it once.
                reply = await stub.WriteChunks(
                    request, timeout=retry_timeout, wait_for_ready=True, metadata=request_metadata()
                )
        except grpc.aio.AioRpcError as exc:
            for i in group:
                errors[i] = f"{exc.code().name}: {exc.details()}"
            return
        for i, status in zip(group, reply.results, strict=True):
            if status.code:
                error = error_for_code(status.code, status.message)
                errors[i] = f"{type(error).__name__}: {error}"
            else:
                stored.add(i)

    groups = _batches(refs, [len(f) for f in fragments])
    if hedge is None:
        await asyncio.gather(*(call(g) for g in groups))
        return errors
    tasks: dict[asyncio.Future[None], list[int]] = {asyncio.ensure_future(call(g)): g for g in groups}
    began = time.monotonic()
    until: float | None = None  # when the grace for the chunks lagging behind ends

    def grace_ends() -> float | None:
        nonlocal until
        if until is None and all(len(stored.intersection(o)) >= hedge.quorum for o in hedge.objects):
            until = time.monotonic() + hedge.grace(time.monotonic() - began)
        return until

    pending = await _run_until(tasks, grace_ends)
    for task in pending:
        for i in tasks[task]:
            errors[i] = f"CANCELLED: {lagged_reason(hedge.quorum)}"
    return errors


async def _run_until(
    tasks: Iterable[asyncio.Future[None]],
    deadline: Callable[[], float | None],
    enough: Callable[[], bool] = lambda: False,
) -> set[asyncio.Future[None]]:
    """Await ``tasks`` until all are done, ``enough()``, or the time ``deadline()`` passes; the rest cancelled.

    ``deadline`` (a ``time.monotonic()`` time, or None for none yet) and
    ``enough`` are asked again after each task that ends; a task's error
    is raised. Returns the tasks cancelled.
    """
    pending = set(tasks)
    try:
        while pending:
            until = deadline()
            wait = None if until is None else max(0.0, until - time.monotonic())
            done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            for task in done:
                task.result()
            if enough():
                break
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return pending


async def read_whole_chunks(
    stubs: dict[str, container_pb2_grpc.ContainerStub],
    refs: Sequence[ChunkRef],
    timeout: float,
    hedge: tuple[HedgePolicy, LatencyTracker] | None = None,
    needs: Sequence[tuple[Sequence[int], int]] = (),
) -> list[bytes | None]:
    """Read one-fragment chunks, one ReadChunks call per container; None where a chunk failed.

    With ``hedge`` (a policy and the client's latency estimates), calls
    still running past the read deadline that the finished ones set are
    cancelled (their chunks None: the caller reads those objects another
    way), and every call updates the estimates. ``needs``: per object, the
    positions in ``refs`` of its chunks and how many it needs (k); once
    every object has them, the calls still running are cancelled too (a
    spare read beside k).
    """
    found: list[bytes | None] = [None] * len(refs)
    began = time.monotonic()
    took: list[float] = []

    async def call(group: list[int]) -> None:
        request = container_pb2.ReadChunksRequest(
            chunks=[
                container_pb2.ChunkHeader(key=refs[i].key, index=refs[i].index, ticket=refs[i].ticket) for i in group
            ]
        )
        address = refs[group[0]].address
        try:
            reply = await stubs[address].ReadChunks(request, timeout=timeout, metadata=request_metadata())
        except grpc.aio.AioRpcError:
            if hedge is not None:
                hedge[1].lagged(address, max(time.monotonic() - began, hedge[0].cap))
            return
        for i, result in zip(group, reply.results, strict=True):
            found[i], _ = whole_fragment(result)
        if hedge is not None:
            took.append(time.monotonic() - began)
            hedge[1].observe(address, took[-1], sum(len(found[i] or b"") for i in group), first=True)

    groups = _batches(refs, [0] * len(refs))
    if hedge is None or len(groups) < 2:
        await asyncio.gather(*(call(g) for g in groups))
        return found
    policy, latency = hedge
    tasks: dict[asyncio.Future[None], list[int]] = {asyncio.ensure_future(call(g)): g for g in groups}

    def read_deadline() -> float | None:
        return began + policy.read_deadline(took, None) if took else None

    def enough() -> bool:
        return bool(needs) and all(sum(found[p] is not None for p in positions) >= k for positions, k in needs)

    pending = await _run_until(tasks, read_deadline, enough)
    for task in pending:
        latency.lagged(refs[tasks[task][0]].address, time.monotonic() - began)
    return found


class ChunkWriter:
    """Streams one chunk to one container, fed through a bounded queue."""

    def __init__(
        self,
        stub: container_pb2_grpc.ContainerStub,
        key: str,
        index: int,
        depth: int,
        container_id: str = "",
        ticket: str = "",
        *,
        replace: bool = False,
    ) -> None:
        """Stream chunk ``index`` of ``key`` through ``stub``, at most ``depth`` fragments queued.

        ``replace`` asks the container to write over a copy it may hold
        (repair's rewrite in place); without it an existing copy fails the write.
        """
        self.stub = stub
        self.container_id = container_id
        self.ticket = ticket
        self.replace = replace
        self.key = key
        self.index = index
        self.error: str | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=depth)
        self._task: asyncio.Task[bool] | None = None

    def start(self) -> None:
        """Open the stream."""
        self._task = asyncio.create_task(self._run())

    async def _messages(self) -> AsyncIterator[container_pb2.PutChunkRequest | bytes]:
        header = container_pb2.ChunkHeader(
            key=self.key, index=self.index, container_id=self.container_id, ticket=self.ticket, replace=self.replace
        )
        yield container_pb2.PutChunkRequest(header=header)
        encoded = getattr(self.stub, "wire_format", False)
        while (fragment := await self._queue.get()) is not None:
            if encoded:
                yield wire.encode_put_fragment(fragment, checksum(fragment))
            else:
                yield container_pb2.PutChunkRequest(
                    fragment=container_pb2.Fragment(data=fragment, crc32=checksum(fragment))
                )

    async def _run(self) -> bool:
        try:
            await self.stub.PutChunk(self._messages(), metadata=request_metadata())
            return True
        except grpc.aio.AioRpcError as exc:
            self.error = f"{exc.code().name}: {exc.details()}"
        except Exception as exc:
            self.error = repr(exc)
        self._release()
        return False

    def _release(self) -> None:
        """Let the request generator end: drop what is queued (freeing a waiting producer) and queue the end.

        A generator waiting for a fragment of a stream that ended would keep
        gRPC's task feeding the stream pending until it is garbage (and says so).
        """
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def send(self, fragment: bytes, timeout: float) -> None:
        """Queue a fragment; a container that takes none for ``timeout`` seconds fails."""
        if self.error is None:
            await self._put(fragment, timeout)

    async def finish(self, timeout: float) -> bool:
        """End the stream and wait for the container's answer."""
        assert self._task is not None
        if self.error is None:
            await self._put(None, timeout)
        if self._task.cancelled():  # given up already (the container took no data): awaiting it would raise
            return False
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self.error = f"DEADLINE_EXCEEDED: no answer within {timeout} s"
            await self.cancel()
            return False

    async def _put(self, item: bytes | None, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._queue.put(item), timeout)
        except TimeoutError:
            self.error = f"DEADLINE_EXCEEDED: the container took no data for {timeout} s"
            await self.cancel()

    async def cancel(self) -> None:
        """Abandon the stream; the container drops what it received.

        The request generator is released too: a call that had just ended
        (its container killed) when the cancel came does not stop gRPC's
        task feeding it, so that task would wait for a fragment for ever.
        """
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.error is None:
            self.error = "CANCELLED: the stream was abandoned"
        self._release()

    async def abandon(self, reason: str) -> None:
        """Give the chunk up (``error`` says why): cancel the stream and let its request generator end."""
        self.error = reason
        await self.cancel()


class ChunkReader:
    """Reads one chunk fragment by fragment from a payload offset, verifying CRCs."""

    def __init__(
        self,
        stub: container_pb2_grpc.ContainerStub,
        key: str,
        index: int,
        offset: int,
        *,
        ticket: str = "",
        patient: bool = False,
        address: str = "",
    ):
        self.index = index
        self.patient = patient  # wait for the connection instead of failing fast
        self.address = address  # the container's, for latency estimates
        self.received = 0  # fragments read so far
        self.error: DynoStoreError | None = None
        request = container_pb2.GetChunkRequest(key=key, index=index, offset=offset, ticket=ticket)
        # Replies are taken with read(), not by iterating: an async generator cut short by a
        # timeout would be left for the garbage collector to close, perhaps on a closed loop.
        self._call = stub.GetChunk(request, wait_for_ready=patient, metadata=request_metadata())

    async def next(self, timeout: float) -> bytes | memoryview | None:
        """The next fragment, or None (with ``error`` set) when this chunk failed."""
        try:
            reply = await asyncio.wait_for(self._call.read(), timeout)
        except TimeoutError:
            self.error = DeadlineExceeded(f"no fragment within {timeout} s")
            return None
        except grpc.aio.AioRpcError as exc:
            self.error = from_rpc_error(exc)
            return None
        if reply is grpc.aio.EOF:  # read() raises for a stream that ended in an error
            self.error = DataLoss("the chunk ended early")
            return None
        try:
            data = verified_data(reply)
        except DataLoss as exc:
            self.error = exc
            return None
        self.received += 1
        return data  # a view of the received message: decoding copies it once, into the segment

    async def close(self) -> None:
        """Stop the stream."""
        self._call.cancel()


class WholeChunkReader:
    """Reads a one-fragment chunk in a single ReadChunks call (same interface as ChunkReader)."""

    def __init__(
        self,
        stub: container_pb2_grpc.ContainerStub,
        key: str,
        index: int,
        offset: int,
        *,
        ticket: str = "",
        patient: bool = False,
        address: str = "",
    ):
        self.index = index
        self.patient = patient
        self.address = address
        self.received = 0
        self.error: DynoStoreError | None = None
        self._stub = stub
        header = container_pb2.ChunkHeader(key=key, index=index, ticket=ticket)
        self._request = container_pb2.ReadChunksRequest(chunks=[header])

    async def next(self, timeout: float) -> bytes | memoryview | None:
        """The chunk's only fragment, or None (with ``error`` set) when it failed."""
        try:
            reply = await self._stub.ReadChunks(
                self._request, timeout=timeout, wait_for_ready=self.patient, metadata=request_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            self.error = from_rpc_error(exc)
            return None
        fragment, self.error = whole_fragment(reply.results[0])
        self.received += fragment is not None
        return fragment

    async def close(self) -> None:
        """Nothing to release."""
