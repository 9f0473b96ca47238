"""An etcd cluster of three members and two gateways: losing any one of them loses nothing."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynostore.client import Client
from dynostore.errors import DynoStoreError, Unavailable
from dynostore.local import EtcdHandle, LocalFabric, PinnedHandle, free_port
from dynostore.registry.etcd import EtcdClient
from dynostore.rpc.tls import Tls
from tests.conftest import SESSION_PIDS
from tests.integration.conftest import Session, dynostore_up, eventually, is_etcd_leader
from tests.integration.test_etcd_tls import can_read

# Bound on a failover: a new etcd leader is elected in about a second, a dead gateway is skipped at once.
FAILOVER = 20.0
SIZES = [100, 300_000]  # inline in etcd, and erasure-coded
# A client's call timeout in the failover tests: above what a put takes while the
# gateway's etcd calls move on to another member (about 1.5 s per member, plus an
# election), below etcd's own request timeout (7 s), which a call on a member
# that lost its leader (or is frozen) waited out before.
FAILOVER_CALL_TIMEOUT = 6.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """A fabric of 3 etcd members and 2 gateways for the module; each test leaves every process running."""
    root = tmp_path_factory.mktemp("cluster")
    with LocalFabric(containers=5, root=root, etcd_members=3, gateways=2) as fabric, fabric.client() as client:
        yield Session(fabric, client, fabric.create_user("carol"))


def _restart(handle: PinnedHandle) -> None:
    """Start ``handle`` again; its new process belongs to the module's fabric, which stops it."""
    address = handle.address
    handle.start()
    assert handle.pid is not None
    SESSION_PIDS.add(handle.pid)
    assert handle.address == address


def _put_works(client: Client, token: str) -> bool:
    try:
        key = client.put(b"after the loss", token_user=token, catalog="cluster")
        return client.get(key=key, token_user=token) == b"after the loss"
    except DynoStoreError:
        return False


def _put_everywhere(session: Session) -> dict[str, bytes]:
    objects = {}
    for number, size in enumerate(SIZES):
        data = bytes([number + 1]) * size
        objects[session.client.put(data, token_user=session.token, catalog="cluster")] = data
    return objects


def _read_back(session: Session, objects: dict[str, bytes]) -> None:
    for gateway in session.fabric.gateway_addresses:
        with Client(gateway, timeout=5, tls_ca=session.fabric.tls_ca) as client:
            assert eventually(functools.partial(_put_works, client, session.token), within=FAILOVER), gateway
            for key, data in objects.items():
                assert client.get(key=key, token_user=session.token) == data


def test_the_cluster_and_both_gateways_serve(cluster: Session) -> None:
    fabric = cluster.fabric
    assert len(fabric.etcd_members) == 3
    assert fabric.gateway == fabric.gateways[0].address
    assert len({m.data_dir for m in fabric.etcd_members}) == 3
    _read_back(cluster, _put_everywhere(cluster))


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_an_etcd_member_killed_loses_nothing(cluster: Session, role: str) -> None:
    objects = _put_everywhere(cluster)
    members = cluster.fabric.etcd_members
    assert eventually(lambda: any(map(is_etcd_leader, members)), within=FAILOVER)
    victim = next(m for m in members if is_etcd_leader(m) == (role == "leader"))
    victim.kill()
    try:
        _read_back(cluster, objects)
        assert _put_works(cluster.client, cluster.token)
    finally:
        _restart(victim)
    _read_back(cluster, objects)


def test_a_gateway_killed_the_client_of_both_goes_on(cluster: Session) -> None:
    objects = _put_everywhere(cluster)
    with Client(cluster.fabric.gateway_addresses, timeout=5) as client:
        assert _put_works(client, cluster.token)  # connected to one of the two, at random
        for victim in cluster.fabric.gateways:  # so one of the two rounds kills the client's own gateway
            victim.kill()
            try:
                for _ in range(5):
                    assert _put_works(client, cluster.token)
                for key, data in objects.items():
                    assert client.get(key=key, token_user=cluster.token) == data
            finally:
                _restart(victim)
    _read_back(cluster, objects)


def test_a_client_of_both_gateways_reads_its_own_writes(cluster: Session) -> None:
    with cluster.fabric.client() as client:
        for _ in range(100):  # spread over both, a record cached on the other gateway could outlive the evict
            key = client.put(b"soon gone", token_user=cluster.token, catalog="cluster")
            assert client.get(key=key, token_user=cluster.token) == b"soon gone"
            assert client.evict(key=key, token_user=cluster.token)
            assert not client.exists(key=key, token_user=cluster.token)


def test_dynostore_up_runs_a_cluster(tmp_path: Path) -> None:
    # A root remembers its ports: this one's first gateway is not at 8095, where other runs of `up` may be.
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "ports.json").write_text(json.dumps({"gateway_grpc": free_port()}))
    with dynostore_up("--root", str(tmp_path / "up"), "--containers", "3", "--k", "2", "--m", "1",
                      "--etcd-members", "3", "--gateways", "2") as (gateway, admin, text):  # fmt: skip
        assert len(gateway.split(",")) == 2
        assert len(text.split("etcd members: ")[1].split()[0].split(",")) == 3
        env = {**os.environ, "DYNOSTORE_GATEWAY": gateway, "DYNOSTORE_TOKEN": admin}
        done = subprocess.run(
            [sys.executable, "-m", "dynostore", "catalog", "create", "up"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with Client(gateway) as client:
            key = client.put(b"through both", token_user=admin, catalog="up")
            assert client.get(key=key, token_user=admin) == b"through both"


def test_a_tls_cluster_takes_client_certificates_at_every_member(tmp_path: Path) -> None:
    with LocalFabric(containers=2, k=1, m=1, root=tmp_path / "f", tls=True, etcd_members=3, gateways=2) as fabric:
        session = Session(fabric, fabric.client(timeout=5), fabric.create_user("tess"))
        with session.client:
            objects = _put_everywhere(session)
            fabric.etcd_members[0].kill()  # the first endpoint, whose host the TLS check names
            _read_back(session, objects)
            tls = fabric.etcd_tls
            assert tls is not None
            assert asyncio.run(can_read(fabric.etcd_client()))
            assert not asyncio.run(can_read(EtcdClient(fabric.etcd_endpoints, Tls(ca=tls.ca), timeout=5)))


def _leader(members: list[EtcdHandle]) -> EtcdHandle:
    assert eventually(lambda: any(map(is_etcd_leader, members)), within=FAILOVER)
    return next(m for m in members if is_etcd_leader(m))


def _stream_of_puts(session: Session, gateway: str, written: dict[str, bytes], failures: list[BaseException],
                    stop: threading.Event, evicted: list[str] | None = None) -> None:  # fmt: skip
    """Put objects through ``gateway`` one after the other until ``stop``, recording each key or failure.

    With ``evicted``, every third object is evicted right after its put (and
    its key recorded there), so that evicts too are in flight at any moment.
    """
    with Client(gateway, timeout=FAILOVER_CALL_TIMEOUT, tls_ca=session.fabric.tls_ca) as client:
        number = 0
        while not stop.is_set():
            number += 1
            data = bytes([number % 256]) * SIZES[number % 2]
            try:
                key = client.put(data, token_user=session.token, catalog="cluster")
                if evicted is None or number % 3:
                    written[key] = data
                else:
                    evicted.append(key)
                    client.evict(key, token_user=session.token)
            except DynoStoreError as exc:
                failures.append(exc)


def _at_least(written: dict[str, bytes], count: int) -> bool:
    return len(written) >= count


def test_an_etcd_leader_killed_during_a_stream_of_puts_and_evicts_fails_none(cluster: Session) -> None:
    members = cluster.fabric.etcd_members
    written: dict[str, bytes] = {}
    evicted: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    # Two writers per gateway, so puts (and evicts) are in flight on every member when the leader dies.
    writers = [
        threading.Thread(target=_stream_of_puts, args=(cluster, gateway, written, failures, stop, evicted))
        for gateway in cluster.fabric.gateway_addresses * 2
    ]
    for writer in writers:
        writer.start()
    try:
        for _ in range(2):  # two leaders in turn
            victim = _leader(members)
            assert eventually(functools.partial(_at_least, written, len(written) + 10), within=FAILOVER)
            victim.kill()
            try:
                resumed = functools.partial(_at_least, written, len(written) + 40)
                assert eventually(resumed, within=FAILOVER)  # puts resume
            finally:
                _restart(victim)
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
    # Each put and evict in flight went on on another member within its timeout (before: some waited out etcd's 7 s).
    assert not failures
    with Client(cluster.fabric.gateway_addresses, timeout=FAILOVER_CALL_TIMEOUT) as client:
        for key, data in written.items():
            assert client.get(key=key, token_user=cluster.token) == data
        assert evicted
        assert not any(client.exists(key, token_user=cluster.token) for key in evicted)


def test_each_etcd_member_frozen_in_turn_puts_and_gets_go_on(cluster: Session) -> None:
    members = cluster.fabric.etcd_members
    leader = _leader(members)
    for victim in [*(m for m in members if m is not leader), leader]:  # each follower, then the leader
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            for gateway in cluster.fabric.gateway_addresses:  # each on its own: neither may wait on the frozen one
                with Client(gateway, timeout=FAILOVER_CALL_TIMEOUT, tls_ca=cluster.fabric.tls_ca) as client:
                    for number in range(6):  # (before) spread over every member
                        data = bytes([number + 1]) * SIZES[number % 2]
                        key = client.put(data, token_user=cluster.token, catalog="cluster")
                        assert client.get(key=key, token_user=cluster.token) == data
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        _read_back(cluster, _put_everywhere(cluster))


# How long a gateway may serve a record from a cache whose watch is on a frozen member: its next
# etcd call (its announcement, every few seconds) gives up on that member within the call timeout,
# and the watch ends with it (well before gRPC's keepalive, about 15 s, would drop the connection).
FROZEN_STALE_LIMIT = 10.0


def test_no_gateway_serves_a_replaced_record_long_while_its_etcd_member_is_frozen(tmp_path: Path) -> None:
    """Both gateways start on member 0; frozen, the first gateway must stop trusting its cached record."""
    with LocalFabric(containers=5, root=tmp_path / "fabric", etcd_members=3, gateways=2) as fabric:
        token = fabric.create_user("frozen")
        first, second = (Client(g.address, timeout=FAILOVER_CALL_TIMEOUT) for g in fabric.gateways)
        try:
            key = first.put(b"old" * 10_000, token_user=token, catalog="frozen")
            assert first.get(key=key, token_user=token) == b"old" * 10_000  # cached by the first gateway
            member = fabric.etcd_members[0]
            assert member.pid is not None
            os.kill(member.pid, signal.SIGSTOP)
            try:
                second.put(b"new" * 10_000, token_user=token, catalog="frozen", replace=True, key=key)

                def fresh() -> bool:
                    try:
                        return first.get(key=key, token_user=token) == b"new" * 10_000
                    except Unavailable:  # while the calls move on (never DataLoss, which would raise)
                        return False

                assert eventually(fresh, within=FROZEN_STALE_LIMIT)
            finally:
                os.kill(member.pid, signal.SIGCONT)
        finally:
            first.close()
            second.close()
