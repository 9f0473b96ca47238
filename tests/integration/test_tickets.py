"""Chunk tickets: knowing a container's address gives no access to data."""

from __future__ import annotations

import time
import zlib

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore import tickets
from dynostore._proto import container_pb2, container_pb2_grpc
from tests.integration.conftest import Session


def located(session: Session, key: str) -> tuple[str, list[tuple[int, str]]]:
    """The read ticket and (index, address) of each stored chunk, as Locate hands them out."""
    import asyncio

    from dynostore.client.pipeline import Pipeline
    from dynostore.rpc.tls import Tls

    async def run() -> tuple[str, list[tuple[int, str]]]:
        pipeline = Pipeline(session.fabric.gateway, tls=Tls.load(session.fabric.tls_ca))
        try:
            location = await pipeline.locate_one(key, session.token)
            return location.chunk_ticket, [(c.index, c.address) for c in location.chunks if c.stored]
        finally:
            await pipeline.close()

    return asyncio.run(run())


def read(session: Session, address: str, key: str, index: int, ticket: str) -> grpc.StatusCode:
    with session.channel(address) as channel:
        reply = container_pb2_grpc.ContainerStub(channel).ReadChunks(
            container_pb2.ReadChunksRequest(chunks=[container_pb2.ChunkHeader(key=key, index=index, ticket=ticket)])
        )
    return grpc.StatusCode.OK if not reply.results[0].status.code else _code(reply.results[0].status.code)


def coded(text: bytes) -> bytes:
    """``text`` padded past the gateway's inline limit, so that it is stored as chunks."""
    return text + bytes(5000)


def _code(number: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == number)


def test_tickets_bind_key_and_operation(shared: Session) -> None:
    key = shared.client.put(data=coded(b"secret bytes"), token_user=shared.token, catalog="tickets")
    other = shared.client.put(data=coded(b"other bytes"), token_user=shared.token, catalog="tickets")
    ticket, chunks = located(shared, key)
    index, address = chunks[0]
    assert read(shared, address, key, index, ticket) == grpc.StatusCode.OK
    assert read(shared, address, key, index, "") == grpc.StatusCode.PERMISSION_DENIED
    other_ticket, _ = located(shared, other)
    assert (
        read(shared, address, key, index, other_ticket) == grpc.StatusCode.PERMISSION_DENIED
    )  # replayed for another key
    write = shared.fabric.mint_ticket(key, "write")
    assert read(shared, address, key, index, write) == grpc.StatusCode.PERMISSION_DENIED  # wrong operation
    forged = tickets.sign(Ed25519PrivateKey.generate(), ticket.split(".")[0], key, "read", 60)
    assert read(shared, address, key, index, forged) == grpc.StatusCode.PERMISSION_DENIED
    kid, expires, op, signature = ticket.split(".")
    tampered = f"{kid}.{int(expires) + 3600}.{op}.{signature}"
    assert read(shared, address, key, index, tampered) == grpc.StatusCode.PERMISSION_DENIED
    assert read(shared, address, key, index, "garbage") == grpc.StatusCode.PERMISSION_DENIED


def test_expired_tickets_are_refused(shared: Session) -> None:
    key = shared.client.put(data=coded(b"brief"), token_user=shared.token, catalog="tickets")
    _, chunks = located(shared, key)
    index, address = chunks[0]
    expired = shared.fabric.mint_ticket(key, "read", lifetime=-1)
    assert read(shared, address, key, index, expired) == grpc.StatusCode.PERMISSION_DENIED


def test_writes_and_deletes_need_write_tickets(shared: Session) -> None:
    key = "c" * 32
    address = shared.fabric.containers[1].address
    fragment = container_pb2.Fragment(data=b"x", crc32=zlib.crc32(b"x"))
    with shared.channel(address) as channel:
        stub = container_pb2_grpc.ContainerStub(channel)
        for ticket in ("", shared.fabric.mint_ticket(key, "read")):
            header = container_pb2.ChunkHeader(key=key, index=0, ticket=ticket)
            reply = stub.WriteChunks(
                container_pb2.WriteChunksRequest(chunks=[container_pb2.WholeChunk(header=header, fragments=[fragment])])
            )
            assert reply.results[0].code == grpc.StatusCode.PERMISSION_DENIED.value[0]
            with pytest.raises(grpc.RpcError) as info:
                stub.DeleteChunk(container_pb2.DeleteChunkRequest(key=key, index=0, ticket=ticket))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_key_rotation_without_downtime(shared: Session) -> None:
    key = shared.client.put(data=coded(b"before rotation"), token_user=shared.token, catalog="tickets")
    old_ticket, chunks = located(shared, key)
    with shared.fabric.client() as client:
        new_kid = client.rotate_ticket_key(token_user=shared.fabric.admin_token, grace_seconds=3600)
    assert new_kid != old_ticket.split(".")[0]
    deadline = time.monotonic() + 30  # containers learn the new key at their next heartbeat
    new_ticket = ""
    while time.monotonic() < deadline:
        new_ticket, _ = located(shared, key)
        if new_ticket.startswith(new_kid) and all(
            read(shared, a, key, i, new_ticket) == grpc.StatusCode.OK for i, a in chunks
        ):
            break
        time.sleep(0.5)
    assert new_ticket.startswith(new_kid)
    for index, address in chunks:
        assert read(shared, address, key, index, new_ticket) == grpc.StatusCode.OK
        assert read(shared, address, key, index, old_ticket) == grpc.StatusCode.OK  # grace period
    assert shared.client.get(key=key, token_user=shared.token) == coded(b"before rotation")
    with pytest.raises(PermissionError):
        shared.client.rotate_ticket_key(token_user=shared.token)


def test_a_write_ticket_cannot_alter_a_stored_chunk(shared: Session) -> None:
    key = shared.client.put(data=coded(b"original bytes"), token_user=shared.token, catalog="tickets")
    _, chunks = located(shared, key)
    write = shared.fabric.mint_ticket(key, "write")
    fragment = container_pb2.Fragment(data=b"evil", crc32=zlib.crc32(b"evil"))
    for index, address in chunks:
        header = container_pb2.ChunkHeader(key=key, index=index, ticket=write)
        with shared.channel(address) as channel:
            reply = container_pb2_grpc.ContainerStub(channel).WriteChunks(
                container_pb2.WriteChunksRequest(chunks=[container_pb2.WholeChunk(header=header, fragments=[fragment])])
            )
        assert reply.results[0].code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert shared.client.get(key=key, token_user=shared.token) == coded(b"original bytes")
