"""Chunk tickets: knowing a container's address gives no access to data."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
import zlib
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore import tickets
from dynostore._proto import container_pb2, container_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from dynostore.errors import Unavailable
from dynostore.gateway.tickets import ChunkTicketAuthority
from dynostore.local import etcd_binary, free_port
from dynostore.registry import Registry
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session, eventually


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


class Reader(threading.Thread):
    """Gets one object over and over until stopped, keeping every failure."""

    def __init__(self, session: Session, key: str, data: bytes) -> None:
        super().__init__()
        self.session, self.key, self.data = session, key, data
        self.reads = 0
        self.failures: list[BaseException] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                assert self.session.client.get(key=self.key, token_user=self.session.token) == self.data
                self.reads += 1
            except BaseException as exc:
                self.failures.append(exc)
            time.sleep(0.02)


# Containers learn of new and retired keys at their heartbeat (a third of the 10 s lease); gateways
# sign with a new key after the lease (10 s), then retire the older ones after the grace.
HEARTBEAT_BOUND = 40.0


def test_key_rotation_without_downtime(shared: Session) -> None:
    data = coded(b"before rotation")
    key = shared.client.put(data=data, token_user=shared.token, catalog="tickets")
    old_ticket, chunks = located(shared, key)
    reader = Reader(shared, key, data)
    reader.start()
    try:
        with shared.fabric.client() as client:
            new_kid = client.rotate_ticket_key(token_user=shared.fabric.admin_token, grace_seconds=3600)
        assert new_kid != old_ticket.split(".")[0]
        new_ticket = ""

        def new_key_accepted() -> bool:
            nonlocal new_ticket
            new_ticket, _ = located(shared, key)
            return new_ticket.startswith(new_kid) and all(
                read(shared, a, key, i, new_ticket) == grpc.StatusCode.OK for i, a in chunks
            )

        assert eventually(new_key_accepted, within=HEARTBEAT_BOUND)
        for index, address in chunks:
            assert read(shared, address, key, index, old_ticket) == grpc.StatusCode.OK  # grace period
        with shared.fabric.client() as client:  # rotate again, with the older keys retired at once
            newest = client.rotate_ticket_key(token_user=shared.fabric.admin_token, grace_seconds=1)

        def old_keys_refused() -> bool:
            return all(
                read(shared, a, key, i, t) == grpc.StatusCode.PERMISSION_DENIED
                for i, a in chunks
                for t in (old_ticket, new_ticket)
            )

        assert eventually(old_keys_refused, within=HEARTBEAT_BOUND)
        newest_ticket, _ = located(shared, key)
        assert newest_ticket.startswith(newest)
        assert all(read(shared, a, key, i, newest_ticket) == grpc.StatusCode.OK for i, a in chunks)
    finally:
        reader.stopping.set()
        reader.join()
    assert reader.failures == []  # no read failed during either switch
    assert reader.reads > 10
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
        header.replace = True  # only a repair's ticket may replace a stored copy
        with shared.channel(address) as channel:
            reply = container_pb2_grpc.ContainerStub(channel).WriteChunks(
                container_pb2.WriteChunksRequest(chunks=[container_pb2.WholeChunk(header=header, fragments=[fragment])])
            )
        assert reply.results[0].code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert shared.client.get(key=key, token_user=shared.token) == coded(b"original bytes")
    assert shared.client.repair(key, token_user=shared.token, verify=True) == 0


def test_a_repair_ticket_may_replace_a_copy(shared: Session) -> None:
    """What repair does to a damaged chunk: rewrite it in place, with the ticket PlanRepair signs."""
    scratch = "f" * 32  # no object's: written and replaced directly
    address = shared.fabric.containers[0].address

    def write(data: bytes, op: str, replace: bool) -> int:
        header = container_pb2.ChunkHeader(
            key=scratch, index=0, ticket=shared.fabric.mint_ticket(scratch, op), replace=replace
        )
        fragment = container_pb2.Fragment(data=data, crc32=zlib.crc32(data))
        with shared.channel(address) as channel:
            reply = container_pb2_grpc.ContainerStub(channel).WriteChunks(
                container_pb2.WriteChunksRequest(chunks=[container_pb2.WholeChunk(header=header, fragments=[fragment])])
            )
        return reply.results[0].code

    assert write(b"first", "write", replace=False) == 0
    assert write(b"second", "write", replace=True) == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert write(b"second", "repair", replace=True) == 0
    with shared.channel(address) as channel:
        read = container_pb2.ChunkHeader(key=scratch, index=0, ticket=shared.fabric.mint_ticket(scratch, "read"))
        reply = container_pb2_grpc.ContainerStub(channel).ReadChunks(container_pb2.ReadChunksRequest(chunks=[read]))
        assert [f.data for f in reply.results[0].fragments] == [b"second"]
        container_pb2_grpc.ContainerStub(channel).DeleteChunk(
            container_pb2.DeleteChunkRequest(key=scratch, index=0, ticket=shared.fabric.mint_ticket(scratch, "repair"))
        )


def test_gateways_starting_together_make_one_ticket_key(tmp_path: Path) -> None:
    """Workers (or gateways) starting at once on a new fabric agree on one chunk-ticket key."""
    client_port, peer_port = free_port(), free_port()
    url = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    command = [etcd_binary(), "--data-dir", str(tmp_path / "etcd"), "--log-level", "error"]
    command += ["--listen-client-urls", url, "--advertise-client-urls", url]
    command += [
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"default={peer}",
    ]
    etcd = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def start_together() -> list[str]:
        registries = [Registry(f"127.0.0.1:{client_port}") for _ in range(8)]
        try:
            for _ in range(300):  # until etcd has elected itself leader and answers
                try:
                    await registries[0].ticket_keys()
                    break
                except Unavailable:
                    await asyncio.sleep(0.1)
            await asyncio.gather(*(ChunkTicketAuthority(r).published() for r in registries))
            return [r.kid for r in await registries[0].ticket_keys()]
        finally:
            for registry in registries:
                await registry.close()

    try:
        assert eventually(lambda: _answers(client_port), within=30)
        assert len(asyncio.run(start_together())) == 1
    finally:
        etcd.terminate()
        etcd.wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_a_plan_ticket_run_writes_only_the_keys_planned(shared: Session) -> None:
    """PlanPut's keys share one chunk ticket; a container refuses it for a key the plan did not hand out."""
    with shared.channel(shared.fabric.gateway) as channel:
        plan = gateway_pb2_grpc.GatewayStub(channel).PlanPut(
            gateway_pb2.PlanPutRequest(count=3), metadata=auth_metadata(shared.token), timeout=10
        )
    keys = [p.key for p in plan.plans]
    (ticket,) = {p.chunk_ticket for p in plan.plans}
    assert len(ticket.split(".")) == 5
    assert keys == tickets.run_keys(keys[0][: tickets.RUN_PREFIX], 3)
    beyond = tickets.run_keys(keys[0][: tickets.RUN_PREFIX], 4)[3]
    fragment = container_pb2.Fragment(data=b"x", crc32=zlib.crc32(b"x"))
    with shared.channel(shared.fabric.containers[2].address) as channel:
        stub = container_pb2_grpc.ContainerStub(channel)
        chunks = [
            container_pb2.WholeChunk(
                header=container_pb2.ChunkHeader(key=k, index=0, ticket=ticket), fragments=[fragment]
            )
            for k in [*keys, beyond]
        ]
        reply = stub.WriteChunks(container_pb2.WriteChunksRequest(chunks=chunks))
        assert [r.code for r in reply.results] == [0, 0, 0, grpc.StatusCode.PERMISSION_DENIED.value[0]]
        for k in keys:  # the chunks were never committed: take them away again
            assert stub.DeleteChunk(container_pb2.DeleteChunkRequest(key=k, index=0, ticket=ticket)).existed
