"""Relay: clients that reach only the gateway put and get through it, with the same pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.client import Client
from dynostore.errors import NotFound, PermissionDenied
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session

MiB = 1024 * 1024


def relay_client(s: Session) -> Client:
    return Client(s.fabric.gateway, tls_ca=s.fabric.tls_ca, relay=True)


@pytest.mark.parametrize("size", [0, 1000, 5000, 7 * MiB + 3])
def test_relay_round_trip_interoperates_with_direct_clients(shared: Session, size: int) -> None:
    data = os.urandom(size)
    with relay_client(shared) as relay:
        key = relay.put(data=data, token_user=shared.token, catalog="relayed", name="r")
        assert relay.get(key=key, token_user=shared.token) == data
        assert shared.client.get(key=key, token_user=shared.token) == data  # stored like any put
        direct = shared.client.put(data=data, token_user=shared.token, catalog="relayed")
        assert relay.get(key=direct, token_user=shared.token) == data
        # The relay client opened no channel but the gateway's.
        assert set(relay._async._pipeline._channels) == {shared.fabric.gateway}


def test_relay_batches_files_reservations_and_errors(shared: Session, tmp_path: Path) -> None:
    with relay_client(shared) as relay:
        datas = [os.urandom(n) for n in (10, 6000, 4 * MiB)]
        keys = relay.put_batch(datas, token_user=shared.token, catalog="relayed")
        assert relay.get_batch([*keys, "0" * 32], token_user=shared.token) == [*datas, None]
        source = tmp_path / "source.bin"
        source.write_bytes(os.urandom(9 * MiB))
        seen: list[int] = []
        key = relay.put_file(source, token_user=shared.token, catalog="relayed", progress=seen.append)
        assert sum(seen) == 9 * MiB
        relay.get_file(key, tmp_path / "copy.bin", token_user=shared.token)
        assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
        (reservation,) = relay.plan_keys(1, token_user=shared.token)
        later = relay.put(data=b"later", token_user=shared.token, catalog="relayed", planned=reservation)
        assert later == reservation.key
        with pytest.raises(NotFound):
            relay.get(key="1" * 32, token_user=shared.token)
        other = shared.fabric.create_user(f"relayother{os.getpid()}")
        with pytest.raises(PermissionDenied):
            relay.get(key=key, token_user=other)


def test_relay_refuses_malformed_streams_and_stores_nothing(shared: Session) -> None:
    metadata = auth_metadata(shared.token)
    header = gateway_pb2.RelayPutHeader(catalog="relay-bad", size=10)
    cases = [
        ([gateway_pb2.RelayPutRequest(data=b"no header")], "header"),
        ([gateway_pb2.RelayPutRequest(header=header), gateway_pb2.RelayPutRequest(data=b"short")], "sent 5"),
        ([gateway_pb2.RelayPutRequest(header=header), gateway_pb2.RelayPutRequest(data=b"x" * 11)], "more"),
        (
            [gateway_pb2.RelayPutRequest(header=header), gateway_pb2.RelayPutRequest(header=header)],
            "only data",
        ),
    ]
    with shared.channel(shared.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for messages, words in cases:
            with pytest.raises(grpc.RpcError) as info:
                stub.RelayPut(iter(messages), metadata=metadata, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in (info.value.details() or "")
        with pytest.raises(grpc.RpcError) as info:
            stub.RelayPut(iter([gateway_pb2.RelayPutRequest(header=header)]), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            list(stub.RelayGet(gateway_pb2.RelayGetRequest(key="../../etc/passwd"), metadata=metadata, timeout=30))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(NotFound):  # nothing was committed: not even the catalog was made
        list(shared.client.list("relay-bad", token_user=shared.token))


def test_cli_relay(shared: Session, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(2 * MiB + 1))
    env = {**shared.cli_env, "DYNOSTORE_TOKEN": shared.token, "DYNOSTORE_RELAY": "1"}
    run = [sys.executable, "-m", "dynostore"]
    key = subprocess.run(
        [*run, "put", str(source), "--catalog", "relayed"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([*run, "get", key, "-o", str(tmp_path / "out.bin")], env=env, check=True, timeout=120)
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()
