"""Bytes that are no protobuf message, sent to every method of every server: INVALID_ARGUMENT, and a quiet log."""

from __future__ import annotations

import importlib
import pkgutil
import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from dynostore import _proto
from dynostore._proto import container_pb2 as c
from dynostore._proto import gateway_pb2 as g
from dynostore.local import LocalFabric
from dynostore.rpc import auth_metadata

pytestmark = pytest.mark.integration

GARBAGE = {
    "invalid wire type": b"\xff\xff\xff",
    "truncated varint": b"\x08\x80",
    "nested length past the end": b"\x12\x05\x0a\x09ab\x10\x01",
}
# How often each garbage message goes to each method: the log must not grow with it.
REPEATS = 3
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]


def proto_services() -> dict[str, ServiceDescriptor]:
    """Every service in the generated code of DynoStore's protos, by name."""
    found: dict[str, ServiceDescriptor] = {}
    for info in pkgutil.iter_modules(_proto.__path__):
        if info.name.endswith("_pb2"):
            found.update(importlib.import_module(f"{_proto.__name__}.{info.name}").DESCRIPTOR.services_by_name)
    return found


SERVICES = proto_services()
# The services each kind of server registers besides health checking and reflection.
SERVES = {"gateway": ["Gateway"], "container": ["Container"]}
GATEWAY = SERVICES["Gateway"]
CONTAINER = SERVICES["Container"]


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFabric, str]]:
    """A small fabric of its own (its logs must hold only what these tests cause) and a user token."""
    with LocalFabric(containers=3, k=2, m=1, root=tmp_path_factory.mktemp("fabric")) as local:
        yield local, local.create_user("mallory")


def servers(local: LocalFabric) -> dict[str, tuple[str, Path, list[ServiceDescriptor]]]:
    """Each server's address, log file and services (every server also has health and reflection)."""
    gateway_log = next(p for p in local.processes if p.name == "gateway").log_path
    container = local.containers[0]
    places = {"gateway": (local.gateway, gateway_log), "container": (container.address, container.log_path)}
    return {
        server: (address, log, [*(SERVICES[name] for name in SERVES[server]), HEALTH, REFLECTION])
        for server, (address, log) in places.items()
    }


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def call(channel: grpc.Channel, method: MethodDescriptor, messages: list[bytes], token: str) -> None:
    """Send raw ``messages`` (one unless the method takes a stream) and read every reply."""
    path, options = path_of(method), {"metadata": auth_metadata(token), "timeout": 30}
    if method.client_streaming and method.server_streaming:
        list(channel.stream_stream(path)(iter(messages), **options))
    elif method.client_streaming:
        channel.stream_unary(path)(iter(messages), **options)
    elif method.server_streaming:
        list(channel.unary_stream(path)(messages[0], **options))
    else:
        channel.unary_unary(path)(messages[0], **options)


def status_of(channel: grpc.Channel, method: MethodDescriptor, messages: list[bytes], token: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, method, messages, token)
    return caught.value


def line_count(path: Path) -> int:
    return len(path.read_text(errors="replace").splitlines())


def new_lines(path: Path, start: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[start:]


@pytest.mark.parametrize("server", ["gateway", "container"])
def test_garbage_to_every_method_is_an_invalid_argument(fabric: tuple[LocalFabric, str], server: str) -> None:
    local, token = fabric
    assert sorted(SERVICES) == sorted(name for names in SERVES.values() for name in names), "a service on no server"
    address, log_path, services = servers(local)[server]
    methods = [method for service in services for method in service.methods]
    assert len(methods) > 5
    start = line_count(log_path)
    with grpc.insecure_channel(address) as channel:
        for method in methods:
            for what, garbage in GARBAGE.items():
                for _ in range(REPEATS):
                    error = status_of(channel, method, [garbage], token)
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (path_of(method), what, error)
                    assert error.details() == (f"The request is not a valid {method.input_type.full_name} message."), (
                        error.details()
                    )
    lines = new_lines(log_path, start)
    text = "\n".join(lines)
    assert "Traceback" not in text, text[-3000:]
    # One short line per method at most (rate-limited), a few for whatever else the server does meanwhile.
    calls = len(methods) * len(GARBAGE) * REPEATS
    assert len(lines) <= len(methods) + 5, f"{len(lines)} log lines for {calls} bad calls:\n{text[-3000:]}"
    assert all(len(line) < 300 for line in lines), text[-3000:]


def test_garbage_in_the_middle_of_a_stream(fabric: tuple[LocalFabric, str]) -> None:
    local, token = fabric
    found = servers(local)
    key = secrets.token_hex(16)
    header = c.PutChunkRequest(header=c.ChunkHeader(key=key, index=0, ticket=local.mint_ticket(key, "write")))
    relay = g.RelayPutRequest(header=g.RelayPutHeader(catalog="bad-requests", size=10))
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    cases = [
        ("gateway", GATEWAY.methods_by_name["RelayPut"], relay),
        ("container", CONTAINER.methods_by_name["PutChunk"], header),
        ("gateway", REFLECTION.methods_by_name["ServerReflectionInfo"], listing),
        ("container", REFLECTION.methods_by_name["ServerReflectionInfo"], listing),
    ]
    starts = {name: line_count(log) for name, (_, log, _) in found.items()}
    for server, method, first in cases:
        with grpc.insecure_channel(found[server][0]) as channel:
            for garbage in GARBAGE.values():
                error = status_of(channel, method, [first.SerializeToString(), garbage], token)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (server, path_of(method), error)
                assert "not a valid" in (error.details() or ""), error.details()
    for name, (_, log, _) in found.items():
        text = "\n".join(new_lines(log, starts[name]))
        assert "Traceback" not in text, text[-3000:]
    # Nothing was stored from the aborted streams.
    with grpc.insecure_channel(found["container"][0]) as channel:
        reply = channel.unary_unary(path_of(CONTAINER.methods_by_name["Stat"]))(
            c.StatRequest().SerializeToString(), timeout=30
        )
    assert c.StatResponse.FromString(reply).chunks == 0


@pytest.mark.parametrize("server", ["gateway", "container"])
def test_health_methods_answer_like_grpc_servers(fabric: tuple[LocalFabric, str], server: str) -> None:
    local, token = fabric
    address, log_path, _ = servers(local)[server]
    start = line_count(log_path)
    request = health_pb2.HealthCheckRequest().SerializeToString()
    with grpc.insecure_channel(address) as channel:
        if "List" in HEALTH.methods_by_name:
            error = status_of(channel, HEALTH.methods_by_name["List"], [b""], token)
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED, error
        check = channel.unary_unary(path_of(HEALTH.methods_by_name["Check"]))(request, timeout=30)
        assert health_pb2.HealthCheckResponse.FromString(check).status == health_pb2.HealthCheckResponse.SERVING
        watch = channel.unary_stream(path_of(HEALTH.methods_by_name["Watch"]))(request, timeout=30)
        first = next(iter(watch))
        assert health_pb2.HealthCheckResponse.FromString(first).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    text = "\n".join(new_lines(log_path, start))
    assert "Traceback" not in text, text[-3000:]
