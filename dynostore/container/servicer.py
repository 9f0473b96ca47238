"""gRPC adapter of a data container: validates requests, calls the backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from dynostore import validation
from dynostore._proto import container_pb2 as pb
from dynostore._proto import container_pb2_grpc as pb_grpc
from dynostore.container.backends import Backend
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss, InvalidArgument

# Enough for any policy the validators accept (k <= 32, m <= 16).
MAX_CHUNKS = validation.MAX_K + validation.MAX_M


def _chunk_ref(key: str, index: int) -> tuple[str, int]:
    return validation.key(key), validation.chunk_index(index, MAX_CHUNKS)


class ContainerServicer(pb_grpc.ContainerServicer):
    """Serves PutChunk/GetChunk/DeleteChunk/Stat over one backend."""

    def __init__(self, backend: Backend, container_id: str, site: str) -> None:
        """Serve ``backend`` as container ``container_id`` at ``site``."""
        self.backend = backend
        self.container_id = container_id
        self.site = site

    async def PutChunk(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[pb.PutChunkRequest], context: grpc.aio.ServicerContext
    ) -> pb.PutChunkResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("PutChunk must start with a header message.")
        key, index = _chunk_ref(first.header.key, first.header.index)
        writer = await self.backend.open_writer(key, index)
        size = fragments = 0
        try:
            async for message in request_iterator:
                if message.WhichOneof("part") != "fragment":
                    raise InvalidArgument("PutChunk takes one header, then only fragments.")
                data = message.fragment.data
                if checksum(data) != message.fragment.crc32:
                    raise DataLoss(f"Fragment {fragments} of chunk {index} arrived corrupted.")
                await writer.write(data, message.fragment.crc32)
                size += len(data)
                fragments += 1
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        return pb.PutChunkResponse(size=size, fragments=fragments)

    async def GetChunk(  # noqa: N802 - gRPC method name
        self, request: pb.GetChunkRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GetChunkResponse]:
        key, index = _chunk_ref(request.key, request.index)
        async for offset, data, crc in self.backend.read(key, index, request.offset, request.length):
            yield pb.GetChunkResponse(fragment=pb.Fragment(data=data, crc32=crc, offset=offset))

    async def DeleteChunk(  # noqa: N802 - gRPC method name
        self, request: pb.DeleteChunkRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteChunkResponse:
        key, index = _chunk_ref(request.key, request.index)
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
