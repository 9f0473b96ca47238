"""Small objects kept inline in etcd: one commit to put, one Locate to get."""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.errors import DataLoss, InvalidArgument, NotFound
from dynostore.local import LocalFabric
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session

INLINE_MAX = 4096


def locate(s: Session, key: str) -> gateway_pb2.Location:
    with s.channel(s.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        reply = stub.Locate(gateway_pb2.LocateRequest(keys=[key]), metadata=auth_metadata(s.token), timeout=10)
    (location,) = reply.locations
    return location


def chunk_files(fabric: LocalFabric, key: str) -> list[Path]:
    return [p for c in fabric.containers for p in (c.root / "data" / "chunks").rglob(f"{key}.*")]


@pytest.mark.parametrize("size", [0, 1, 1024, INLINE_MAX])
def test_small_objects_are_inline_without_chunks(shared: Session, size: int) -> None:
    data = os.urandom(size)
    key = shared.client.put(data=data, token_user=shared.token, catalog="inline")
    location = locate(shared, key)
    assert location.inline
    assert location.data == data
    assert location.crc32 == zlib.crc32(data)
    assert not location.chunks
    assert not location.chunk_ticket
    assert chunk_files(shared.fabric, key) == []
    assert shared.client.get(key=key, token_user=shared.token) == data


def test_one_byte_over_the_limit_is_erasure_coded(shared: Session) -> None:
    data = os.urandom(INLINE_MAX + 1)
    key = shared.client.put(data=data, token_user=shared.token, catalog="inline")
    location = locate(shared, key)
    assert not location.inline
    assert not location.data
    assert len(location.chunks) == 5
    assert len(chunk_files(shared.fabric, key)) == 5
    assert shared.client.get(key=key, token_user=shared.token) == data


def test_batches_mix_inline_and_coded_objects(shared: Session) -> None:
    sizes = [10, 70_000, 4000, 0, 5 * 1024 * 1024] + [INLINE_MAX] * 70  # commits go 32 objects per transaction
    objects = [os.urandom(n) for n in sizes]
    keys = shared.client.put_batch(objects, token_user=shared.token, catalog="inline")
    assert [locate(shared, k).inline for k in keys] == [n <= INLINE_MAX for n in sizes]
    assert shared.client.get_batch(keys, token_user=shared.token) == objects


def test_evict_removes_inline_bytes_from_etcd(shared: Session) -> None:
    key = shared.client.put(data=b"forget me", token_user=shared.token, catalog="inline")
    stored_under = f"/dynostore/v1/inline/{key}"
    assert asyncio.run(etcd_keys(shared.fabric, stored_under)) == [stored_under.encode()]
    shared.client.evict(key=key, token_user=shared.token)
    with pytest.raises(NotFound):
        shared.client.get(key=key, token_user=shared.token)
    assert not shared.client.exists(key=key, token_user=shared.token)
    assert asyncio.run(etcd_keys(shared.fabric, stored_under)) == []


async def etcd_keys(fabric: LocalFabric, prefix: str) -> list[bytes]:
    client = fabric.etcd_client()
    try:
        return [kv.key for kv in await client.get_prefix(prefix.encode())]
    finally:
        await client.close()


def commit(s: Session, **fields: Any) -> None:
    """CommitPut one object made of ``fields`` on a freshly planned key."""
    with s.channel(s.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        metadata = auth_metadata(s.token)
        (plan,) = stub.PlanPut(gateway_pb2.PlanPutRequest(), metadata=metadata, timeout=10).plans
        base: dict[str, Any] = {"key": plan.key, "plan_ticket": plan.plan_ticket, "catalog": "inline"}
        try:
            stub.CommitPut(
                gateway_pb2.CommitPutRequest(objects=[gateway_pb2.ObjectCommit(**{**base, **fields})]),
                metadata=metadata,
                timeout=10,
            )
        except grpc.RpcError as exc:
            assert locate(s, plan.key).code == grpc.StatusCode.NOT_FOUND.value[0]  # nothing was stored
            raise {
                grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
                grpc.StatusCode.DATA_LOSS: DataLoss,
            }[exc.code()](exc.details()) from None


def test_bad_inline_commits_are_refused_and_store_nothing(shared: Session) -> None:
    good = b"payload"
    crc = zlib.crc32(good)
    with pytest.raises(DataLoss, match="CRC-32"):
        commit(shared, inline=True, data=good, size=len(good), crc32=crc ^ 1)
    big = os.urandom(INLINE_MAX + 1)
    with pytest.raises(InvalidArgument, match="at most 4096"):
        commit(shared, inline=True, data=big, size=len(big), crc32=zlib.crc32(big))
    with pytest.raises(InvalidArgument, match="announces"):
        commit(shared, inline=True, data=good, size=len(good) + 1, crc32=crc)
    with pytest.raises(InvalidArgument, match="Only inline commits carry data"):
        commit(shared, data=good, size=len(good), crc32=crc)


def test_inline_objects_outlive_every_container(tmp_path: Path) -> None:
    with LocalFabric(containers=5, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("carol")
        objects = {client.put(data=os.urandom(n), token_user=token, catalog="c"): n for n in (0, 100, 4096)}
        payloads = {key: client.get(key=key, token_user=token) for key in objects}
        for container in fabric.containers:
            container.kill()
        for key, data in payloads.items():
            assert client.get(key=key, token_user=token) == data


def test_inline_can_be_turned_off(tmp_path: Path) -> None:
    with (
        LocalFabric(containers=5, root=tmp_path / "fabric", inline_max_bytes=0) as fabric,
        fabric.client() as client,
    ):
        token = fabric.create_user("dave")
        key = client.put(data=b"small but coded", token_user=token, catalog="c")
        assert len(chunk_files(fabric, key)) == 5
        assert client.get(key=key, token_user=token) == b"small but coded"
