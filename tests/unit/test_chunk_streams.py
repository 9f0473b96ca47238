"""PutChunk/GetChunk over a real (in-process) gRPC server, with the SDK's stub and the generated one."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore._proto import container_pb2 as pb
from dynostore._proto import container_pb2_grpc as pb_grpc
from dynostore.client.chunks import ChunkReader, ChunkWriter, ContainerStub
from dynostore.container import wire
from dynostore.container.backends import MemoryBackend
from dynostore.container.servicer import SERVICE, ContainerServicer, add_to_server
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss
from dynostore.rpc import CHANNEL_OPTIONS, start_server
from dynostore.tickets import TicketVerifier, sign

KEY = "0123456789abcdef0123456789abcdef"


def _verifier_and_mint() -> tuple[TicketVerifier, Callable[[str, str], str]]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    verifier = TicketVerifier()
    verifier.set_keys({"k1": public})
    return verifier, lambda key, op: sign(private, "k1", key, op, 60)


def _serve(test: Callable[[grpc.aio.Channel, Callable[[str, str], str], MemoryBackend], Awaitable[None]]) -> None:
    async def go() -> None:
        verifier, mint = _verifier_and_mint()
        backend = MemoryBackend()
        servicer = ContainerServicer(backend, "c-1", "site", verifier)
        server, port = await start_server("127.0.0.1:0", lambda s: add_to_server(servicer, s), [SERVICE])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                await test(channel, mint, backend)
        finally:
            await server.stop(None)

    asyncio.run(go())


@pytest.mark.parametrize("stub_type", [ContainerStub, pb_grpc.ContainerStub], ids=["sdk-stub", "generated-stub"])
def test_put_then_get_round_trip(stub_type: Callable[[grpc.aio.Channel], pb_grpc.ContainerStub]) -> None:
    fragments = [os.urandom(1 << 20), os.urandom(1000), b"", os.urandom(70_000)]

    async def test(channel: grpc.aio.Channel, mint: Callable[[str, str], str], backend: MemoryBackend) -> None:
        stub = stub_type(channel)
        writer = ChunkWriter(stub, KEY, 3, 2, ticket=mint(KEY, "write"))
        writer.start()
        for fragment in fragments:
            await writer.send(fragment, 5)
        assert await writer.finish(5), writer.error
        assert [d for d, _ in backend.chunks[KEY, 3]] == fragments
        reader = ChunkReader(stub, KEY, 3, 0, ticket=mint(KEY, "read"))
        got = [await reader.next(5) for _ in fragments]
        assert got == fragments
        assert await reader.next(5) is None
        assert isinstance(reader.error, DataLoss)  # read past the end
        await reader.close()
        again = ChunkWriter(stub, KEY, 3, 2, ticket=mint(KEY, "write"))
        again.start()
        await again.send(b"x", 5)
        assert not await again.finish(5)
        assert again.error is not None
        assert again.error.startswith("ALREADY_EXISTS")

    _serve(test)


def test_corrupted_fragment_is_refused_and_nothing_is_stored() -> None:
    async def test(channel: grpc.aio.Channel, mint: Callable[[str, str], str], backend: MemoryBackend) -> None:
        stub = ContainerStub(channel)

        async def messages() -> AsyncIterator[pb.PutChunkRequest | bytes]:
            yield pb.PutChunkRequest(header=pb.ChunkHeader(key=KEY, index=0, ticket=mint(KEY, "write")))
            yield wire.encode_put_fragment(b"good", checksum(b"good"))
            yield wire.encode_put_fragment(b"evil", checksum(b"good"))

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PutChunk(messages())
        assert caught.value.code() == grpc.StatusCode.DATA_LOSS
        assert (KEY, 0) not in backend.chunks

    _serve(test)


def test_put_needs_a_header_and_a_write_ticket() -> None:
    async def test(channel: grpc.aio.Channel, mint: Callable[[str, str], str], backend: MemoryBackend) -> None:
        stub = ContainerStub(channel)

        async def no_header() -> AsyncIterator[bytes]:
            yield wire.encode_put_fragment(b"data", checksum(b"data"))

        async def read_ticket() -> AsyncIterator[pb.PutChunkRequest]:
            yield pb.PutChunkRequest(header=pb.ChunkHeader(key=KEY, index=0, ticket=mint(KEY, "read")))

        for messages, code in (
            (no_header, grpc.StatusCode.INVALID_ARGUMENT),
            (read_ticket, grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PutChunk(messages())
            assert caught.value.code() == code
        assert not backend.chunks

    _serve(test)


def test_reads_with_a_valid_ticket_report_missing_chunks_and_no_others() -> None:
    async def go() -> None:
        verifier, mint = _verifier_and_mint()
        damaged: list[tuple[str, int]] = []
        servicer = ContainerServicer(
            MemoryBackend(), "c-1", "site", verifier, on_damage=lambda k, i: damaged.append((k, i))
        )
        server, port = await start_server("127.0.0.1:0", lambda s: add_to_server(servicer, s), [SERVICE])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                stub = pb_grpc.ContainerStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    async for _ in stub.GetChunk(pb.GetChunkRequest(key=KEY, index=2, ticket=mint(KEY, "read"))):
                        pass
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
                header = pb.ChunkHeader(key=KEY, index=4, ticket=mint(KEY, "read"))
                reply = await stub.ReadChunks(pb.ReadChunksRequest(chunks=[header]))
                assert reply.results[0].status.code == grpc.StatusCode.NOT_FOUND.value[0]
                with pytest.raises(grpc.aio.AioRpcError) as refused:  # a write ticket: no read, no report
                    async for _ in stub.GetChunk(pb.GetChunkRequest(key=KEY, index=3, ticket=mint(KEY, "write"))):
                        pass
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await server.stop(None)
        assert damaged == [(KEY, 2), (KEY, 4)]

    asyncio.run(go())


class NeverReadingStub:
    """A container that accepts a PutChunk stream and then takes nothing from it (frozen)."""

    wire_format = True

    async def PutChunk(self, messages: AsyncIterator[object], metadata: object = None) -> None:
        await asyncio.Event().wait()


def test_a_stream_the_container_takes_nothing_from_fails_without_raising() -> None:
    """A writer that gave up while ending its stream says so (False, with the reason), not CancelledError."""

    async def go() -> None:
        writer = ChunkWriter(NeverReadingStub(), KEY, 0, 1)
        writer.start()
        await writer.send(b"fragment", 1)  # fills the queue of one
        assert not await writer.finish(0.1)
        assert writer.error is not None
        assert writer.error.startswith("DEADLINE_EXCEEDED")

    asyncio.run(go())


class EndingStub:
    """A container whose PutChunk call ends (say, it was killed) while its stream waits for a fragment.

    Like gRPC's stream-unary call, a task feeds the request generator; a
    cancel that comes after the call ended does not stop that task.
    """

    wire_format = True

    def __init__(self) -> None:
        self.call: asyncio.Future[None] | None = None
        self.feeder: asyncio.Task[None] | None = None

    def PutChunk(self, messages: AsyncIterator[object], metadata: object = None) -> Awaitable[None]:
        self.call = asyncio.get_running_loop().create_future()

        async def feed() -> None:
            async for _ in messages:
                pass

        self.feeder = asyncio.ensure_future(feed())
        return self._answer()

    async def _answer(self) -> None:
        assert self.call is not None
        assert self.feeder is not None
        try:
            await self.call
        except asyncio.CancelledError:
            if not self.call.done():
                self.feeder.cancel()
            raise


def test_a_stream_cancelled_just_after_its_call_ended_lets_its_generator_end() -> None:
    """A writer cancelled between its call's end and its task's wake-up does not leave the stream's feeder waiting."""

    async def go() -> None:
        stub = EndingStub()
        writer = ChunkWriter(stub, KEY, 0, 2)
        writer.start()
        await writer.send(b"fragment", 1)
        await asyncio.sleep(0.05)  # the feeder took the header and the fragment; it waits for the next
        assert stub.call is not None
        assert stub.feeder is not None
        assert not stub.feeder.done()
        stub.call.set_exception(ConnectionError("container killed"))
        await writer.cancel()  # before the writer's task saw the call end
        await asyncio.wait_for(stub.feeder, 1)
        assert writer.error is not None

    asyncio.run(go())
