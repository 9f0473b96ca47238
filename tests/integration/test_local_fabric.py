"""LocalFabric's process handles: gateways and etcd members come back at the same address."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynostore import local
from dynostore.client import Client
from dynostore.errors import ResourceExhausted, Unavailable
from dynostore.local import LocalFabric, PinnedHandle
from dynostore.registry import keys
from tests.conftest import child_pids
from tests.integration.conftest import eventually

# Inline (kept in etcd) and erasure-coded over all three containers (k=2, m=1).
SIZES = [100, 300_000]


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[LocalFabric]:
    """A small fabric of the test's own: three containers, each chunk of a put on each."""
    with LocalFabric(containers=3, root=tmp_path / "fabric", k=2, m=1) as fabric:
        yield fabric


def put_all(client: Client, token: str) -> dict[str, bytes]:
    objects = {}
    for size in SIZES:
        data = os.urandom(size)
        objects[client.put(data=data, token_user=token, catalog="c")] = data
    return objects


def put_eventually(client: Client, token: str) -> dict[str, bytes]:
    """Put the objects of ``SIZES`` once the fabric takes puts again (the containers registered again)."""
    done: dict[str, bytes] = {}

    def put() -> bool:
        try:
            done.update(put_all(client, token))
        except (Unavailable, ResourceExhausted):  # the gateway has no etcd yet, or no containers
            return False
        return True

    assert eventually(put)
    return done


def read_back(client: Client, token: str, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        assert client.get(key=key, token_user=token) == data


def registered(fabric: LocalFabric) -> dict[str, int]:
    """Container id -> lease of each membership record in etcd."""

    async def records() -> dict[str, int]:
        prefix = keys.containers_prefix()
        async with fabric.etcd_client() as etcd:
            return {kv.key[len(prefix) :].decode(): kv.lease for kv in await etcd.get_prefix(prefix)}

    return asyncio.run(records())


async def drop_membership(fabric: LocalFabric) -> None:
    """Delete every container's membership record, as the expiry of their leases would."""
    async with fabric.etcd_client() as etcd:
        await etcd.delete_prefix(keys.containers_prefix())


def handle(fabric: LocalFabric, kind: str) -> PinnedHandle:
    return fabric.gateways[0] if kind == "gateway" else fabric.etcd_members[0]


@pytest.mark.parametrize(("kind", "fault"), [("gateway", "kill"), ("gateway", "stop"), ("etcd", "kill")])
def test_restart_at_the_same_address(fabric: LocalFabric, kind: str, fault: str) -> None:
    token = fabric.create_user("alice")
    server = handle(fabric, kind)
    addresses = (fabric.gateway, fabric.etcd_address)
    assert fabric.gateways[0].address == fabric.gateway
    assert fabric.etcd_members[0].address == fabric.etcd_address
    with fabric.client() as before:
        objects = put_all(before, token)
        getattr(server, fault)()
        assert not server.running
        server.start()
        assert server.running
        assert (fabric.gateways[0].address, fabric.etcd_members[0].address) == addresses
        assert (fabric.gateway, fabric.etcd_address) == addresses
        objects |= put_eventually(before, token)
        with fabric.client() as after:
            objects |= put_eventually(after, token)
            read_back(after, token, objects)
        read_back(before, token, objects)


def test_containers_register_again_with_a_restarted_gateway(fabric: LocalFabric) -> None:
    token = fabric.create_user("carol")
    ids = {c.container_id for c in fabric.containers}
    leases = registered(fabric)
    assert set(leases) == ids
    with fabric.client() as client:
        objects = put_all(client, token)
        fabric.gateways[0].kill()
        # As if the gateway had been away for longer than the containers' leases.
        asyncio.run(drop_membership(fabric))
        assert registered(fabric) == {}
        fabric.gateways[0].start()
        # A container learns at its next heartbeat (every container_ttl / 3 s) that it is gone.
        assert eventually(lambda: set(registered(fabric)) == ids)
        assert not set(registered(fabric).values()) & set(leases.values())  # new leases
        objects |= put_eventually(client, token)
        read_back(client, token, objects)


def test_a_restart_waits_for_its_port(fabric: LocalFabric, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = fabric.gateways[0]
    address = gateway.address
    gateway.kill()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", gateway.port))
    squatter.listen()
    with squatter:
        monkeypatch.setattr(local.processes, "PORT_WAIT", 0.3)
        with pytest.raises(RuntimeError, match="still taken"):
            gateway.start()
        assert not gateway.running
        monkeypatch.undo()
        threading.Timer(1.0, squatter.close).start()
        gateway.start()  # waits for the port rather than moving
    assert gateway.address == fabric.gateway == address
    token = fabric.create_user("bob")
    with fabric.client() as client:
        read_back(client, token, put_eventually(client, token))


def test_no_process_outlives_the_fabric(tmp_path: Path) -> None:
    started: set[int] = set()

    def note(fabric: LocalFabric) -> None:
        started.update(p.pid for p in fabric.processes if p.pid is not None)

    with LocalFabric(containers=2, root=tmp_path / "fabric", k=1, m=1) as fabric:
        note(fabric)
        assert len(started) == 4  # etcd, gateway, two containers
        assert started <= child_pids()
        for server in [fabric.etcd_members[0], fabric.gateways[0], fabric.containers[0]]:
            server.kill()
            server.start()
            note(fabric)
        fabric.gateways[0].stop()
        fabric.gateways[0].start()
        note(fabric)
        fabric.containers[1].kill()  # left dead: stopping the fabric copes
        assert len(started) == 8
    assert not started & child_pids()
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]
