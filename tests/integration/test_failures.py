"""Lost containers, corrupt disks and restarts, on fabrics of each test's own."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from dynostore._proto.common_pb2 import ContainerInfo
from dynostore.client import Client
from dynostore.errors import DataLoss, NotFound, Unavailable
from dynostore.local import LocalFabric
from tests.integration.conftest import Session

MiB = 1024 * 1024
# 1 and 1024 bytes are inline (kept in etcd); 5000 is one coded segment.
SIZES = [1, 1024, 5000, 3 * MiB + 5, 8 * MiB]


def put_all(s: Session, sizes: list[int] = SIZES) -> dict[str, bytes]:
    objects = {}
    for size in sizes:
        data = os.urandom(size)
        objects[s.client.put(data=data, token_user=s.token, catalog="c")] = data
    return objects


def chunk_files(fabric: LocalFabric, key: str) -> dict[int, Path]:
    """Chunk index -> its file, over every container of the fabric."""
    found = {}
    for container in fabric.containers:
        for path in (container.root / "data" / "chunks").rglob(f"{key}.*"):
            found[int(path.suffix[1:])] = path
    return found


def test_any_two_containers_lost(own: Session) -> None:
    objects = put_all(own)
    for lost in itertools.combinations(own.fabric.containers, 2):
        for container in lost:
            container.kill()
        for key, data in objects.items():
            assert own.client.get(key=key, token_user=own.token) == data, [c.name for c in lost]
        for container in lost:
            container.start()


@pytest.mark.parametrize("size", [5000, 4 * MiB])
def test_three_down_is_unavailable_not_data_loss(own: Session, size: int) -> None:
    """Three containers down: the chunks may come back, so the get is Unavailable, and works once they do."""
    ((key, data),) = put_all(own, [size]).items()
    for container in own.fabric.containers[:3]:
        container.kill()
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"3 are needed; .* down or unreachable"):
        own.client.get(key=key, token_user=own.token)
    assert time.monotonic() - started < 60  # bounded: no hang on dead containers
    for container in own.fabric.containers[:3]:
        container.start()
    assert own.client.get(key=key, token_user=own.token) == data


@pytest.mark.parametrize("size", [5000, 4 * MiB])
def test_three_chunks_gone_is_data_loss(own: Session, size: int) -> None:
    """DataLoss means the chunks are gone: three chunk files removed (or corrupt) of an object of k=3, m=2."""
    (key,) = put_all(own, [size])
    files = chunk_files(own.fabric, key)
    for index in (0, 1):
        files[index].unlink()
    raw = bytearray(files[4].read_bytes())
    raw[len(raw) // 2] ^= 0x55
    files[4].write_bytes(bytes(raw))
    with pytest.raises(DataLoss, match=r"3 are needed\. Lost chunks: 0, 1, 4"):
        own.client.get(key=key, token_user=own.token)


def test_corrupt_chunks_fall_back_to_parity(own: Session) -> None:
    objects = put_all(own, [5000, 7 * MiB])
    for key in objects:
        files = chunk_files(own.fabric, key)
        for index in (0, 2):  # two data chunks
            raw = bytearray(files[index].read_bytes())
            raw[len(raw) // 2] ^= 0x55
            files[index].write_bytes(bytes(raw))
    for key, data in objects.items():
        assert own.client.get(key=key, token_user=own.token) == data
    key = next(iter(objects))
    files = chunk_files(own.fabric, key)
    raw = bytearray(files[3].read_bytes())
    raw[-1] ^= 0x55
    files[3].write_bytes(bytes(raw))
    with pytest.raises(DataLoss):
        own.client.get(key=key, token_user=own.token)


class OntoTheDead:
    """Places chunk i on container i of the fabric, whether or not the gateway still lists it."""

    def __init__(self, fabric: LocalFabric) -> None:
        self.fabric = fabric

    def place(self, containers: Sequence[ContainerInfo], n: int, chunk_bytes: int) -> list[ContainerInfo]:
        return [ContainerInfo(id=c.container_id, address=c.address) for c in self.fabric.containers[:n]]


@pytest.mark.parametrize("size", [5000, 5 * MiB])
def test_put_with_one_container_down_records_the_missing_chunk(own: Session, size: int) -> None:
    """Chunk 4 goes to a dead container: the put succeeds and its record says chunk 4 is missing, there."""
    dead = own.fabric.containers[4]
    dead.kill()
    data = os.urandom(size)
    with Client(own.fabric.gateway, placement=OntoTheDead(own.fabric)) as client:
        keys = [client.put(data=data, token_user=own.token, catalog="c") for _ in range(3)]
    for key in keys:
        assert own.client.get(key=key, token_user=own.token) == data
        assert sorted(chunk_files(own.fabric, key)) == [0, 1, 2, 3]
        chunks = own.client.stat(key=key, token_user=own.token).chunks
        assert [(c.container_id, c.stored) for c in chunks] == [
            (c.container_id, c is not dead) for c in own.fabric.containers
        ]


def test_put_with_two_containers_down_fails_and_leaves_nothing(own: Session) -> None:
    for container in own.fabric.containers[:2]:
        container.kill()
    with pytest.raises(Unavailable, match="at least 4 needed"):
        own.client.put(data=os.urandom(MiB), token_user=own.token, catalog="doomed")
    with pytest.raises(NotFound):  # nothing was committed, so not even the catalog exists
        list(own.client.list(catalog="doomed", token_user=own.token))
    leftovers = [p for c in own.fabric.containers[2:] for p in (c.root / "data" / "chunks").rglob("*.*") if p.is_file()]
    assert leftovers == []


def test_container_restart_keeps_identity_and_chunks(own: Session) -> None:
    objects = put_all(own, [2 * MiB])
    container = own.fabric.containers[0]
    before = (container.container_id, container.address)
    container.stop()
    container.start()
    assert (container.container_id, container.address) == before
    for other in own.fabric.containers[1:3]:
        other.kill()
    for key, data in objects.items():
        assert own.client.get(key=key, token_user=own.token) == data


def test_whole_fabric_restart_is_durable(tmp_path: Path) -> None:
    root = tmp_path / "fabric"
    with LocalFabric(containers=5, root=root) as fabric:
        token = fabric.create_user("carol")
        admin = fabric.admin_token
        with fabric.client() as client:
            objects = {}
            for size in SIZES:
                data = os.urandom(size)
                objects[client.put(data=data, token_user=token, catalog="keep")] = data
    with LocalFabric(containers=5, root=root) as fabric:
        assert fabric.admin_token == admin
        with Client(fabric.gateway) as client:
            for key, data in objects.items():
                assert client.get(key=key, token_user=token) == data
            assert {i.key for i in client.list(catalog="keep", token_user=token)} == set(objects)
            fabric.containers[1].kill()
            fabric.containers[3].kill()
            for key, data in objects.items():
                assert client.get(key=key, token_user=token) == data
