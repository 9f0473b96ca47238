"""gRPC adapter of a data container: validates requests, calls the backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from dynostore import validation
from dynostore._proto import container_pb2 as pb
from dynostore._proto import container_pb2_grpc as pb_grpc
from dynostore.container import wire
from dynostore.container.backends import Backend
from dynostore.erasure.checksum import checksum
from dynostore.errors import AlreadyExists, DataLoss, DynoStoreError, FailedPrecondition, InvalidArgument, NotFound
from dynostore.metrics import (
    CHECKSUM_FAILURES,
    CHUNK_BYTES_READ,
    CHUNK_BYTES_WRITTEN,
    CHUNK_READS,
    CHUNK_WRITES,
    outcome,
)
from dynostore.tickets import TicketVerifier

log = logging.getLogger(__name__)

# Enough for any policy the validators accept (k <= 32, m <= 16).
MAX_CHUNKS = validation.MAX_K + validation.MAX_M
# The most ReadChunks returns in one reply, and the most chunks a batch call takes.
MAX_READ_BYTES = 32 * 1024 * 1024
MAX_BATCH = 1024
SERVICE = "dynostore.v1.Container"


def _status(exc: Exception) -> pb.ChunkStatus:
    """The per-chunk status of a failure; unexpected errors are logged, not described."""
    if isinstance(exc, DynoStoreError):
        return pb.ChunkStatus(code=exc.code.value[0], message=str(exc))
    log.exception("Unexpected error on a chunk", exc_info=exc)
    return pb.ChunkStatus(code=grpc.StatusCode.INTERNAL.value[0], message="Internal error; see the container log.")


def _chunk_ref(key: str, index: int) -> tuple[str, int]:
    return validation.key(key), validation.chunk_index(index, MAX_CHUNKS)


class ContainerServicer(pb_grpc.ContainerServicer):
    """Serves PutChunk/GetChunk/DeleteChunk/Stat over one backend."""

    def __init__(
        self,
        backend: Backend,
        container_id: str,
        site: str,
        verifier: TicketVerifier,
        on_damage: Callable[[str, int], None] | None = None,
    ) -> None:
        """Serve ``backend`` as container ``container_id`` at ``site``, checking tickets with ``verifier``.

        ``on_damage(key, index)`` hears of every chunk that a read with a
        valid ticket found gone or failing its checksum, unless the read asked
        to be ``quiet`` (a repair's check, which rebuilds the chunk itself).
        """
        self.backend = backend
        self.container_id = container_id
        self.site = site
        self.verifier = verifier
        self.on_damage = on_damage

    def _damaged(self, key: str, index: int, exc: Exception) -> None:
        if isinstance(exc, DataLoss):
            CHECKSUM_FAILURES.labels("read").inc()
        if self.on_damage is not None and isinstance(exc, NotFound | DataLoss):
            self.on_damage(key, index)

    def _check_addressee(self, header: pb.ChunkHeader) -> None:
        if header.container_id and header.container_id != self.container_id:
            raise FailedPrecondition(
                f"This is container {self.container_id}, not {header.container_id[:64]}; its address was reused."
            )

    async def _write(
        self,
        key: str,
        index: int,
        fragments: AsyncIterator[pb.Fragment | wire.WireFragment],
        *,
        replace: bool = False,
    ) -> pb.PutChunkResponse:
        """Verify and store fragments; the chunk appears only if all of them arrive intact.

        Chunks are written once: a chunk that exists is replaced only when the
        write asks for it (``replace``, which repair sets to rewrite a damaged
        copy in place), so a put cannot alter a committed object. A
        replacement is made durable before it takes the old copy's place.
        """
        if replace:
            writer = await self.backend.open_replacement(key, index)
        elif await self.backend.exists(key, index):
            raise AlreadyExists(
                f"Chunk {index} of {key} is stored already; chunks are written once (only repair replaces them)."
            )
        else:
            writer = await self.backend.open_writer(key, index)
        size = count = 0
        try:
            async for fragment in fragments:
                if checksum(fragment.data) != fragment.crc32:
                    CHECKSUM_FAILURES.labels("arrival").inc()
                    raise DataLoss(f"Fragment {count} of chunk {index} arrived corrupted.")
                await writer.write(fragment.data, fragment.crc32)
                size += len(fragment.data)
                count += 1
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        CHUNK_BYTES_WRITTEN.inc(size)
        if replace:
            log.info("Chunk %d of %s written in place of any copy stored here (repair).", index, key)
        return pb.PutChunkResponse(size=size, fragments=count)

    async def PutChunk(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[pb.PutChunkRequest | wire.WireFragment],
        context: grpc.aio.ServicerContext,
    ) -> pb.PutChunkResponse:
        """Store a streamed chunk; fragments come decoded by :func:`wire.decode_put_request`."""
        with outcome(CHUNK_WRITES):
            return await self._put_chunk(request_iterator)

    async def _put_chunk(
        self, request_iterator: AsyncIterator[pb.PutChunkRequest | wire.WireFragment]
    ) -> pb.PutChunkResponse:
        first = await anext(aiter(request_iterator), None)
        if not isinstance(first, pb.PutChunkRequest) or first.WhichOneof("part") != "header":
            raise InvalidArgument("PutChunk must start with a header message.")
        key, index = _chunk_ref(first.header.key, first.header.index)
        self._check_addressee(first.header)
        self.verifier.check(first.header.ticket, key, _write_ops(first.header))

        async def fragments() -> AsyncIterator[pb.Fragment | wire.WireFragment]:
            async for message in request_iterator:
                if isinstance(message, wire.WireFragment):
                    yield message
                elif message.WhichOneof("part") == "fragment":
                    yield message.fragment
                else:
                    raise InvalidArgument("PutChunk takes one header, then only fragments.")

        return await self._write(key, index, fragments(), replace=first.header.replace)

    async def WriteChunks(  # noqa: N802 - gRPC method name
        self, request: pb.WriteChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.WriteChunksResponse:
        if len(request.chunks) > MAX_BATCH:
            raise InvalidArgument(f"WriteChunks takes at most {MAX_BATCH} chunks, not {len(request.chunks)}.")

        async def write(chunk: pb.WholeChunk) -> pb.ChunkStatus:
            async def fragments() -> AsyncIterator[pb.Fragment]:
                for fragment in chunk.fragments:
                    yield fragment

            try:
                with outcome(CHUNK_WRITES):
                    key, index = _chunk_ref(chunk.header.key, chunk.header.index)
                    self._check_addressee(chunk.header)
                    self.verifier.check(chunk.header.ticket, key, _write_ops(chunk.header))
                    await self._write(key, index, fragments(), replace=chunk.header.replace)
            except Exception as exc:
                return _status(exc)
            return pb.ChunkStatus()

        return pb.WriteChunksResponse(results=await asyncio.gather(*(write(c) for c in request.chunks)))

    async def GetChunk(  # noqa: N802 - gRPC method name
        self, request: pb.GetChunkRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Stream a chunk as serialized ``GetChunkResponse`` messages (see :func:`wire.serialize`)."""
        with outcome(CHUNK_READS):
            key, index = _chunk_ref(request.key, request.index)
            self.verifier.check(request.ticket, key, "read")
            sent = False
            try:
                async for offset, data, crc in self.backend.read(key, index, request.offset, request.length):
                    sent = True
                    CHUNK_BYTES_READ.inc(len(data))
                    yield wire.encode_get_reply(offset, data, crc)
            except (NotFound, DataLoss) as exc:
                if not request.quiet:
                    self._damaged(key, index, exc)
                raise
            if not sent and request.offset:
                raise InvalidArgument(f"Offset {request.offset} is past the end of chunk {index} of {key}.")

    async def ReadChunks(  # noqa: N802 - gRPC method name
        self, request: pb.ReadChunksRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Read whole chunks into one reply, serialized by :func:`wire.encode_read_chunks`."""
        if len(request.chunks) > MAX_BATCH:
            raise InvalidArgument(f"ReadChunks takes at most {MAX_BATCH} chunks, not {len(request.chunks)}.")
        results: list[pb.ChunkStatus | list[tuple[int, bytes | memoryview, int]]] = []
        budget = MAX_READ_BYTES
        for header in request.chunks:
            try:
                with outcome(CHUNK_READS):
                    fragments, budget = await self._read_whole(header, budget)
            except Exception as exc:
                results.append(_status(exc))
            else:
                results.append(fragments)
        return wire.encode_read_chunks(results)

    async def _read_whole(
        self, header: pb.ChunkHeader, budget: int
    ) -> tuple[list[tuple[int, bytes | memoryview, int]], int]:
        """Read one chunk of a ``ReadChunks`` call: its fragments, and what is left of the reply's ``budget``.

        Raises:
            FailedPrecondition: the chunk does not fit in what is left.
        """
        key, index = _chunk_ref(header.key, header.index)
        self.verifier.check(header.ticket, key, "read")
        fragments: list[tuple[int, bytes | memoryview, int]] = []
        try:
            async for offset, data, crc in self.backend.read(key, index):
                budget -= len(data)
                if budget < 0:
                    raise FailedPrecondition(
                        f"Chunk {index} of {key} does not fit in a {MAX_READ_BYTES}-byte reply; use GetChunk."
                    )
                # A view may be of a buffer the backend reuses: keep bytes of its own until the reply is encoded.
                fragments.append((offset, data if isinstance(data, bytes) else bytes(data), crc))
        except (NotFound, DataLoss) as exc:
            if not header.quiet:
                self._damaged(key, index, exc)
            raise
        CHUNK_BYTES_READ.inc(sum(len(f[1]) for f in fragments))
        return fragments, budget

    async def DeleteChunk(  # noqa: N802 - gRPC method name
        self, request: pb.DeleteChunkRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteChunkResponse:
        key, index = _chunk_ref(request.key, request.index)
        self.verifier.check(request.ticket, key, WRITE_OPS)
        return pb.DeleteChunkResponse(existed=await self.backend.delete(key, index))

    async def Stat(  # noqa: N802 - gRPC method name
        self, request: pb.StatRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatResponse:
        usage = await self.backend.usage()
        return pb.StatResponse(
            id=self.container_id,
            site=self.site,
            backend=self.backend.name,
            capacity_bytes=usage.capacity_bytes,
            free_bytes=usage.free_bytes,
            chunks=usage.chunks,
        )


# Tickets that may write a new chunk or delete one: a put's ("write") and a repair's ("repair").
WRITE_OPS = ("write", "repair")


def _write_ops(header: pb.ChunkHeader) -> tuple[str, ...]:
    """Which tickets may make this write: only a repair's may replace a stored copy."""
    return ("repair",) if header.replace else WRITE_OPS


def add_to_server(servicer: ContainerServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` like the generated code does, with the fast wire format of the chunk streams."""
    handlers = {
        "PutChunk": grpc.stream_unary_rpc_method_handler(
            servicer.PutChunk,
            request_deserializer=wire.decode_put_request,
            response_serializer=pb.PutChunkResponse.SerializeToString,
        ),
        "GetChunk": grpc.unary_stream_rpc_method_handler(
            servicer.GetChunk,
            request_deserializer=pb.GetChunkRequest.FromString,
            response_serializer=wire.serialize,
        ),
        "ReadChunks": grpc.unary_unary_rpc_method_handler(
            servicer.ReadChunks,
            request_deserializer=pb.ReadChunksRequest.FromString,
            response_serializer=wire.serialize,
        ),
    }
    for name, request, reply in (
        ("WriteChunks", pb.WriteChunksRequest, pb.WriteChunksResponse),
        ("DeleteChunk", pb.DeleteChunkRequest, pb.DeleteChunkResponse),
        ("Stat", pb.StatRequest, pb.StatResponse),
    ):
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request.FromString,
            response_serializer=reply.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
