"""Gateways and containers of several worker processes on one port (``--workers 2``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynostore.container.server import ContainerSettings
from dynostore.errors import InvalidArgument
from dynostore.gateway.server import GatewaySettings
from dynostore.local import ContainerSpec, LocalFabric
from dynostore.rpc.workers import metrics_listen_for, reserve_port
from tests.integration.conftest import Session, eventually
from tests.servers import s3_client


@pytest.fixture(scope="module")
def workers_fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """A fabric whose one gateway runs two workers, and so does its first container."""
    root = tmp_path_factory.mktemp("workers")
    containers = [ContainerSpec(settings={"workers": 2}), *(ContainerSpec() for _ in range(4))]
    fabric = LocalFabric(containers=containers, root=root, gateway_args=["--workers", "2"])
    with fabric, fabric.client() as client:
        yield Session(fabric, client, fabric.create_user("wendy"))


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s children, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def _workers(session: Session, server: str = "gateway") -> list[int]:
    handle = session.fabric.gateways[0] if server == "gateway" else session.fabric.containers[0]
    assert handle.pid is not None
    return _children(handle.pid)


def _socket_owners(port: int) -> set[int]:
    """The pids holding established TCP connections on local ``port`` (``ss -tnp``)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", "sport", "=", f":{port}"], capture_output=True, text=True, check=True
    ).stdout
    owners = set()
    for line in out.splitlines():
        for part in line.split("pid=")[1:]:
            owners.add(int(part.split(",", 1)[0]))
    return owners


def test_two_workers_share_the_port_and_both_serve(workers_fabric: Session) -> None:
    gateway_workers, container_workers = _workers(workers_fabric), _workers(workers_fabric, "container")
    assert len(gateway_workers) == len(container_workers) == 2
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to see which worker holds each connection")
    clients = [workers_fabric.fabric.client() for _ in range(24)]
    try:
        keys = [c.put(f"object {i}".encode() * 2000, workers_fabric.token, "w") for i, c in enumerate(clients)]
        # 24 connections spread by the kernel: all on one worker has odds 2**-23. A put writes a
        # chunk to every container, so both container workers took writes: both check tickets.
        assert set(gateway_workers) <= _socket_owners(workers_fabric.fabric.gateways[0].port)
        assert set(container_workers) <= _socket_owners(workers_fabric.fabric.containers[0].port)
        chunks = workers_fabric.fabric.containers[0].root / "data" / "chunks"
        assert eventually(lambda: all(any(chunks.glob(f"{key[:2]}/{key}.*")) for key in keys), within=15)
        for i, (client, key) in enumerate(zip(clients, keys, strict=True)):
            assert client.get(key, workers_fabric.token) == f"object {i}".encode() * 2000
    finally:
        for client in clients:
            client.close()


def test_a_killed_worker_is_started_again_and_nothing_is_lost(workers_fabric: Session) -> None:
    session = workers_fabric
    before = [session.client.put(os.urandom(50_000), session.token, "w") for _ in range(5)]
    victim = _workers(session)[1]
    os.kill(victim, signal.SIGKILL)
    # The other worker serves new calls at once; the supervisor starts a second one again.
    after = [session.client.put(os.urandom(50_000), session.token, "w") for _ in range(5)]
    assert eventually(lambda: len(_workers(session)) == 2 and victim not in _workers(session), within=30)
    with session.fabric.client() as fresh:
        for key in before + after:
            assert len(fresh.get(key, session.token)) == 50_000


def test_a_killed_container_worker_is_started_again_and_nothing_is_lost(workers_fabric: Session) -> None:
    session = workers_fabric
    container = session.fabric.containers[0]
    before = [session.client.put(os.urandom(50_000), session.token, "w") for _ in range(5)]
    for victim in _workers(session, "container"):  # worker 0 (the registered one), then worker 1
        os.kill(victim, signal.SIGKILL)
        after = [session.client.put(os.urandom(50_000), session.token, "w") for _ in range(5)]

        def replaced(victim: int = victim) -> bool:
            workers = _workers(session, "container")
            return len(workers) == 2 and victim not in workers

        assert eventually(replaced, within=30)
        with session.fabric.client() as fresh:
            for key in before + after:
                assert len(fresh.get(key, session.token)) == 50_000
            assert eventually(lambda: _registered(session, container.container_id), within=30)
        before += after


def _registered(session: Session, container_id: str) -> bool:
    """Whether the gateway lists the container as up (worker 0 registers again when it starts again)."""
    with session.fabric.client() as client:
        return any(c.id == container_id and c.up for c in client.status(session.fabric.admin_token).containers)


def test_container_workers_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="workers"):
        ContainerSettings(gateway="127.0.0.1:1", root=tmp_path, workers=0)
    with pytest.raises(InvalidArgument, match="memory"):
        ContainerSettings(gateway="127.0.0.1:1", backend="memory", workers=2)
    with pytest.raises(InvalidArgument, match="root"):
        ContainerSettings(gateway="127.0.0.1:1", backend="s3", container_id="c-1", workers=2)
    assert ContainerSettings(gateway="127.0.0.1:1", root=tmp_path, workers=3).workers == 3


def test_stopping_the_gateway_stops_every_worker(tmp_path: Path) -> None:
    with LocalFabric(containers=3, root=tmp_path, k=2, m=1, gateway_args=["--workers", "2"]) as fabric:
        supervisor = fabric.gateways[0].pid
        assert supervisor is not None
        workers = _children(supervisor)
        assert len(workers) == 2
        fabric.gateways[0].stop()
        assert eventually(lambda: all(_gone(pid) for pid in workers), within=15)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (reaped, or a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_workers_setting_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="workers"):
        GatewaySettings(workers=0)
    assert GatewaySettings(workers=4).workers == 4


def test_each_worker_gets_its_own_metrics_port() -> None:
    assert metrics_listen_for(None, 1) is None
    assert metrics_listen_for("127.0.0.1:9100", 0) == "127.0.0.1:9100"
    assert metrics_listen_for("127.0.0.1:9100", 2) == "127.0.0.1:9102"
    assert metrics_listen_for("127.0.0.1:0", 3) == "127.0.0.1:0"


def test_a_reserved_port_is_shared_but_not_with_a_plain_server() -> None:
    first, address = reserve_port("127.0.0.1:0")
    with first:
        second, again = reserve_port(address)  # another worker's bind with SO_REUSEPORT
        second.close()
        assert again == address
        plain = socket.socket()
        with plain, pytest.raises(OSError, match="in use"):
            plain.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))


def test_s3_door_workers_share_the_port_and_a_killed_one_is_replaced(tmp_path: Path) -> None:
    """``dynostore s3 --workers 2``: boto3's pooled connections reach both; a multipart upload spans them."""
    from boto3.s3.transfer import TransferConfig

    mib = 1 << 20
    with LocalFabric(containers=3, root=tmp_path, k=2, m=1, s3=True, s3_args=["--workers", "2"]) as fabric:
        assert fabric.s3 is not None
        assert fabric.s3.pid is not None
        workers = _children(fabric.s3.pid)
        assert len(workers) == 2
        with fabric.client() as client:
            access_key, secret = client.create_s3_key(token_user=fabric.create_user("sam"))

        def door() -> Any:
            return s3_client(fabric.s3_endpoint, access_key, secret)

        s3 = door()
        s3.create_bucket(Bucket="spread")
        others = [door() for _ in range(24)]  # a connection each, kept open
        for i, other in enumerate(others):
            other.put_object(Bucket="spread", Key=f"small/{i}", Body=f"small {i}".encode())
        if shutil.which("ss") is not None:
            assert set(workers) <= _socket_owners(fabric.s3.port)  # all on one worker: odds 2**-23
        for i in range(24):  # each read on the next connection, so mostly on the other worker
            got = others[(i + 1) % 24].get_object(Bucket="spread", Key=f"small/{i}")["Body"].read()
            assert got == f"small {i}".encode()
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(48 * mib + 5))
        config = TransferConfig(multipart_threshold=8 * mib, multipart_chunksize=8 * mib, max_concurrency=6)
        s3.upload_file(str(source), "spread", "big.bin", Config=config)  # 7 parts, up to 6 connections
        copy = tmp_path / "copy.bin"
        s3.download_file("spread", "big.bin", str(copy), Config=config)
        assert copy.read_bytes() == source.read_bytes()
        os.kill(workers[0], signal.SIGKILL)
        s3.put_object(Bucket="spread", Key="after", Body=b"after the kill")  # boto3 retries on the other
        supervisor = fabric.s3.pid

        def replaced() -> bool:
            now = _children(supervisor)
            return len(now) == 2 and workers[0] not in now

        assert eventually(replaced, within=30)
        assert s3.get_object(Bucket="spread", Key="after")["Body"].read() == b"after the kill"
        assert s3.head_object(Bucket="spread", Key="big.bin")["ContentLength"] == 48 * mib + 5
        workers = _children(supervisor)
        fabric.s3.stop()
        assert eventually(lambda: all(_gone(pid) for pid in [supervisor, *workers]), within=15)
