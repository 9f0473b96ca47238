"""Drain, decommission and rebalance against real processes: nothing lost, nothing less redundant."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from dynostore._proto import gateway_pb2 as g
from dynostore._proto import gateway_pb2_grpc
from dynostore.client import Client, MoveStatus
from dynostore.errors import FailedPrecondition, InvalidArgument, NotFound
from dynostore.local import ContainerHandle, ContainerSpec, LocalFabric
from dynostore.rpc import auth_metadata
from tests.integration.conftest import chunk_paths, eventually

pytestmark = pytest.mark.integration

SITES = ["north", "north", "south", "south", "east", "east"]


def put_objects(client: Client, token: str, count: int, seed: int, big: int = 0, size: int = 0) -> dict[str, bytes]:
    """``count`` objects of 20-120 KiB, or ``size`` (the last ``big`` of them 4 MiB: two segments, streamed)."""
    rng = random.Random(seed)
    objects = {}
    for i in range(count):
        length = 4 * 1024 * 1024 if i >= count - big else size or rng.randrange(20_000, 120_000)
        data = rng.randbytes(length)
        objects[client.put(data=data, token_user=token, catalog="moves")] = data
    return objects


def holders(client: Client, token: str, key: str) -> list[str]:
    """The container of each chunk of ``key``, by index."""
    return [c.container_id for c in sorted(client.stat(key, token_user=token).chunks, key=lambda c: c.index)]


def assert_spread(client: Client, token: str, keys: list[str], sites: dict[str, str], avoid: str) -> None:
    """Every chunk stored, none on ``avoid``, one per container, at most two per site (5 chunks over 3 sites)."""
    for key in keys:
        stat = client.stat(key, token_user=token)
        ids = [c.container_id for c in stat.chunks]
        assert all(c.stored and c.live for c in stat.chunks), (key, stat.chunks)
        assert avoid not in ids, (key, ids)
        assert len(set(ids)) == len(ids), (key, ids)
        assert max(Counter(sites[c] for c in ids).values()) <= 2, (key, ids)


@contextmanager
def readers(client: Client, token: str, objects: dict[str, bytes]) -> Iterator[list[str]]:
    """A thread reading the objects over and over; yields the list of failures it met (checked by the caller)."""
    failures: list[str] = []
    stop = threading.Event()
    reads = [0]

    def loop() -> None:
        keys = list(objects)
        while not stop.is_set():
            key = random.choice(keys)
            try:
                if client.get(key, token_user=token) != objects[key]:
                    failures.append(f"{key}: wrong bytes")
            except Exception as exc:
                failures.append(f"{key}: {exc!r}")
            reads[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(timeout=60)
    assert reads[0] > 0


def test_drain_moves_everything_off_and_rm_forgets_the_container(tmp_path: Path) -> None:
    with (
        LocalFabric(6, root=tmp_path / "fabric", sites=SITES, gateway_args=["--container-ttl", "3"]) as fabric,
        fabric.client() as client,
        Client(fabric.gateway) as reader_client,
    ):
        admin, token = fabric.admin_token, fabric.create_user("mover")
        objects = put_objects(client, token, 40, seed=1, big=2)
        sites = {c.container_id: c.site for c in fabric.containers}
        drained = fabric.containers[0]
        on_it = [k for k in objects if drained.container_id in holders(client, token, k)]
        assert len(on_it) >= 20
        # Decommissioning before the drain is refused: records name the container.
        with pytest.raises(FailedPrecondition, match="drain it first"):
            client.remove_container(drained.container_id, token_user=admin)
        with pytest.raises(InvalidArgument):
            client.drain_container(drained.container_id, token_user=admin, bandwidth=10)
        with pytest.raises(NotFound):
            client.drain_container("no-such-container", token_user=admin)

        seen: list[MoveStatus] = []
        with readers(reader_client, token, objects) as failures:
            status = client.drain_container(drained.container_id, token_user=admin, progress=seen.append, poll=0.2)
        assert failures == []
        assert status.done
        assert status.active
        assert status.stuck_objects == 0
        assert status.chunks_moved >= len(on_it)
        assert status.objects_moved >= len(on_it)
        assert status.bytes_moved > 0
        assert status.chunks_left == 0
        assert any(s.running for s in seen)

        for key, data in objects.items():
            assert client.get(key, token_user=token) == data
        assert_spread(client, token, list(objects), sites, avoid=drained.container_id)
        # The old copies are deleted once the new ones are recorded.
        assert [p for k in objects for p in chunk_paths(fabric, k) if drained.root in p.parents] == []

        row = next(c for c in client.status(token_user=admin).containers if c.id == drained.container_id)
        assert row.draining
        assert row.drain.done
        assert row.drain.chunks_moved == status.chunks_moved
        # New puts never land on a draining container.
        fresh = put_objects(client, token, 10, seed=2)
        assert all(drained.container_id not in holders(client, token, k) for k in fresh)

        # rm: refused while it is registered, then forgets it once its daemon stopped.
        with pytest.raises(FailedPrecondition, match="registered"):
            client.remove_container(drained.container_id, token_user=admin)
        drained.stop()
        assert eventually(
            lambda: not next(c for c in client.status(token_user=admin).containers if c.id == drained.container_id).up,
            within=15,
        )
        assert client.remove_container(drained.container_id, token_user=admin) == 0
        assert drained.container_id not in {c.id for c in client.status(token_user=admin).containers}
        # Nothing came to depend on the removed container: two more may die and everything still reads.
        fabric.containers[2].kill()
        fabric.containers[5].kill()
        for key, data in {**objects, **fresh}.items():
            assert client.get(key, token_user=token) == data


def cli(fabric: LocalFabric, *args: str) -> list[str]:
    return [sys.executable, "-m", "dynostore", *args, "--gateway", fabric.gateway, "--token", fabric.admin_token]


def test_drain_interrupted_by_killing_the_command_and_the_gateway_resumes_and_loses_nothing(tmp_path: Path) -> None:
    with LocalFabric(6, root=tmp_path / "fabric", sites=SITES) as fabric, fabric.client() as client:
        admin, token = fabric.admin_token, fabric.create_user("mover")
        objects = put_objects(client, token, 30, seed=3, big=1)
        sites = {c.container_id: c.site for c in fabric.containers}
        drained = fabric.containers[2].container_id

        def drain() -> g.MoveStatus:
            with grpc.insecure_channel(fabric.gateway) as channel:
                reply = gateway_pb2_grpc.GatewayStub(channel).GetStatus(
                    g.GetStatusRequest(), metadata=auth_metadata(admin), timeout=30
                )
            return next(c.drain for c in reply.containers if c.container.id == drained)

        # A slow drain (bandwidth-limited) run by the command; kill the command, then the gateway, mid-way.
        command = subprocess.Popen(
            cli(fabric, "container", "drain", drained, "--bandwidth", "150K"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert eventually(lambda: drain().chunks_moved >= 2, within=60)
        finally:
            command.send_signal(signal.SIGKILL)
            command.wait(timeout=30)
        assert eventually(lambda: drain().chunks_moved >= 4, within=60)  # the gateway carries on without it
        fabric.gateways[0].kill()
        fabric.gateways[0].start()
        interrupted = drain()
        assert not interrupted.done
        assert interrupted.chunks_left > 0
        for key, data in objects.items():
            assert client.get(key, token_user=token) == data

        # Running the command again resumes the drain (the flag persisted) and finishes it.
        again = subprocess.run(
            cli(fabric, "container", "drain", drained),
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ},
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "done" in again.stdout
        final = drain()
        assert final.done
        assert final.chunks_left == 0
        assert final.chunks_moved >= interrupted.chunks_moved
        for key, data in objects.items():
            assert client.get(key, token_user=token) == data
        assert_spread(client, token, list(objects), sites, avoid=drained)
        listing = subprocess.run(cli(fabric, "container", "ls"), capture_output=True, text=True, timeout=60)
        assert any(drained in line and "DRAINING" in line for line in listing.stdout.splitlines()), listing.stdout


def test_rebalance_after_adding_two_empty_containers(tmp_path: Path) -> None:
    capacity = 32 * 1024 * 1024
    spec = ContainerSpec(backend="memory", settings={"capacity_bytes": capacity})
    with (
        LocalFabric([spec] * 5, root=tmp_path / "fabric") as fabric,
        fabric.client() as client,
        Client(fabric.gateway) as reader_client,
    ):
        admin, token = fabric.admin_token, fabric.create_user("mover")
        objects = put_objects(client, token, 30, seed=4, size=60_000)
        for index in (5, 6):
            handle = ContainerHandle(index, fabric, f"site{index}", spec)
            fabric.containers.append(handle)
            handle.start()
        new = {fabric.containers[5].container_id, fabric.containers[6].container_id}
        assert eventually(lambda: new <= {c.id for c in client.status(token_user=admin).containers if c.up}, 15)

        def per_container() -> Counter[str]:
            return Counter(cid for key in objects for cid in holders(client, token, key))

        before = per_container()
        assert not new & set(before)
        with readers(reader_client, token, objects) as failures:
            status = client.rebalance(token_user=admin, poll=0.2)
        assert failures == []
        assert status.done
        assert not status.active
        assert status.chunks_moved > 0
        after = per_container()
        assert all(after[cid] > 0 for cid in new), after
        # Even within a chunk or two: 150 chunks over 7 equal containers, about 21 each.
        assert max(after.values()) - min(after.values()) <= 3, after
        assert max(after.values()) < max(before.values())
        for key, data in objects.items():
            assert client.get(key, token_user=token) == data
            ids = holders(client, token, key)
            assert len(set(ids)) == len(ids)
        assert client.status(token_user=admin).rebalance.done


def test_a_drain_with_nowhere_to_go_keeps_the_chunks_and_reports_the_objects(tmp_path: Path) -> None:
    with LocalFabric(5, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        admin, token = fabric.admin_token, fabric.create_user("mover")
        objects = put_objects(client, token, 4, seed=5)
        drained = fabric.containers[0].container_id
        status = client.drain_container(drained, token_user=admin, poll=0.2)
        assert not status.done
        assert status.stuck_objects == len(objects)
        assert set(status.stuck_keys) == set(objects)
        for key, data in objects.items():
            assert drained in holders(client, token, key)  # kept: nothing became less redundant
            assert client.get(key, token_user=token) == data
            # A repair takes a chunk on a draining container as held: it does not double it up elsewhere.
            assert client.repair(key, token_user=token) == 0
            assert len(set(holders(client, token, key))) == 5
        stopped = client.stop_drain(drained, token_user=admin)
        assert not stopped.active
        # No longer draining: new puts may use it again.
        assert not next(c for c in client.status(token_user=admin).containers if c.id == drained).draining


def test_a_drain_rebuilds_what_it_cannot_copy_and_a_stopped_drain_takes_chunks_again(tmp_path: Path) -> None:
    with LocalFabric(6, root=tmp_path / "fabric", sites=SITES) as fabric, fabric.client() as client:
        admin, token = fabric.admin_token, fabric.create_user("mover")
        objects = put_objects(client, token, 10, seed=6, big=1)
        sites = {c.container_id: c.site for c in fabric.containers}
        first, second = fabric.containers[0], fabric.containers[3]
        # A corrupt chunk on the drained container: its copy fails its checksum, so it is rebuilt.
        damaged = next(k for k in objects if first.container_id in holders(client, token, k))
        (path,) = [p for p in chunk_paths(fabric, damaged) if first.root in p.parents]
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        status = client.drain_container(first.container_id, token_user=admin, poll=0.2)
        assert status.done
        assert first.container_id not in holders(client, token, damaged)
        assert client.repair(damaged, token_user=token, verify=True) == 0  # the moved chunk is sound

        # The first container takes chunks again once its drain stops; the second is drained while down,
        # so every chunk of it is rebuilt from the others, some onto the first one.
        client.stop_drain(first.container_id, token_user=admin)
        second.stop()
        on_second = [k for k in objects if second.container_id in holders(client, token, k)]
        assert on_second
        status = client.drain_container(second.container_id, token_user=admin, poll=0.2)
        assert status.done
        assert status.chunks_moved == len(on_second)
        assert all(first.container_id in holders(client, token, k) for k in on_second)
        for key, data in objects.items():
            assert client.get(key, token_user=token) == data
        assert_spread(client, token, list(objects), {**sites}, avoid=second.container_id)


def test_a_gateway_set_to_rebalance_by_itself_spreads_chunks_onto_new_containers(tmp_path: Path) -> None:
    spec = ContainerSpec(backend="memory", settings={"capacity_bytes": 32 * 1024 * 1024})
    root, gateway_args = tmp_path / "fabric", ["--rebalance-interval", "1"]
    with LocalFabric([spec] * 5, root=root, gateway_args=gateway_args) as fabric, fabric.client() as client:
        token = fabric.create_user("mover")
        objects = put_objects(client, token, 12, seed=7, size=40_000)
        handle = ContainerHandle(5, fabric, "site5", spec)
        fabric.containers.append(handle)
        handle.start()
        new = handle.container_id
        # 60 chunks over 6 equal containers: the new one gets about 10 without anyone asking.
        assert eventually(lambda: sum(new in holders(client, token, k) for k in objects) >= 8, within=60)
        for key, data in objects.items():
            assert client.get(key, token_user=token) == data
