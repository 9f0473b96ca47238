"""Repair: chunks recorded as missing or damaged are rebuilt in place; those on containers gone, elsewhere."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from dynostore._proto import common_pb2, container_pb2, container_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from dynostore.client import repair as repair_module
from dynostore.client.pipeline import Pipeline
from dynostore.errors import DynoStoreError, NotFound, PermissionDenied, Unavailable
from dynostore.local import ContainerSpec, LocalFabric
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session, eventually

MiB = 1024 * 1024


def holders(fabric: LocalFabric, token: str, key: str) -> dict[int, str]:
    """Chunk index -> name of the live container holding it (absent where none does)."""
    by_id = {c.container_id: c.name for c in fabric.containers}
    with grpc.insecure_channel(fabric.gateway) as channel:
        reply = gateway_pb2_grpc.GatewayStub(channel).Locate(
            gateway_pb2.LocateRequest(keys=[key]), metadata=auth_metadata(token), timeout=10
        )
    return {c.index: by_id[c.container_id] for c in reply.locations[0].chunks if c.address}


def chunk_file(fabric: LocalFabric, holder: str, key: str, index: int) -> Path:
    """The file of chunk ``index`` of ``key`` on the fs container named ``holder``."""
    container = next(c for c in fabric.containers if c.name == holder)
    return next((container.root / "data" / "chunks").rglob(f"{key}.{index}"))


def rot(path: Path, at: int = -3) -> None:
    """Flip bits of one byte of a chunk file (its checksums no longer match)."""
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x5A
    path.write_bytes(bytes(raw))


def rewritten(fabric: LocalFabric, token: str, key: str, index: int, holder: str, damaged: bytes | None) -> bool:
    """Whether chunk ``index`` is recorded on ``holder`` again, in a file other than ``damaged`` (None: none)."""
    if holders(fabric, token, key).get(index) != holder:
        return False
    try:
        return chunk_file(fabric, holder, key, index).read_bytes() != damaged
    except (StopIteration, FileNotFoundError):
        return False


def spread(fabric: LocalFabric, token: str, key: str) -> set[str]:
    """The live containers holding the chunks of ``key``."""
    return set(holders(fabric, token, key).values())


def wait_until_gone(fabric: LocalFabric, container_id: str) -> None:
    """Wait until the container's lease ran out and the gateway no longer lists it."""
    deadline = time.monotonic() + 40
    with grpc.insecure_channel(fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        metadata = auth_metadata(fabric.admin_token)
        while any(
            c.id == container_id
            for c in stub.ListContainers(gateway_pb2.ListContainersRequest(), metadata=metadata).containers
        ):
            assert time.monotonic() < deadline, f"{container_id} is still registered"
            time.sleep(0.5)
        until_planned(stub, metadata, container_id, present=False, deadline=deadline)


def until_planned(
    stub: gateway_pb2_grpc.GatewayStub, metadata: Any, container_id: str, *, present: bool, deadline: float
) -> None:
    """Wait until the gateway's cached view of the containers (what plans see) has, or lacks, ``container_id``."""
    while True:
        plan = stub.PlanPut(gateway_pb2.PlanPutRequest(count=1), metadata=metadata, timeout=10)
        if any(c.id == container_id for c in plan.containers) == present:
            return
        assert time.monotonic() < deadline, f"the gateway's plans still {'lack' if present else 'offer'} {container_id}"
        time.sleep(0.1)


def wait_until_planned(fabric: LocalFabric, container_id: str) -> None:
    """Wait until the gateway offers ``container_id`` in its plans (it registered again)."""
    with grpc.insecure_channel(fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        until_planned(
            stub, auth_metadata(fabric.admin_token), container_id, present=True, deadline=time.monotonic() + 40
        )


def test_lost_container_chunks_are_rebuilt_on_a_spare(tmp_path: Path) -> None:
    with LocalFabric(containers=6, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("erin")
        objects = {}
        for size in (5000, 5 * MiB):
            data = os.urandom(size)
            objects[client.put(data=data, token_user=token, catalog="c")] = data
        placed = {key: holders(fabric, token, key) for key in objects}
        assert all(len(p) == 5 for p in placed.values())
        # A container holding a chunk of both objects (5 of 6 containers hold one of each).
        name = next(n for n in placed[next(iter(objects))].values() if all(n in p.values() for p in placed.values()))
        lost = next(c for c in fabric.containers if c.name == name)
        lost.kill()
        wait_until_gone(fabric, lost.container_id)
        first, second = objects
        assert client.stat(first, token_user=token).degraded
        env = {**os.environ, "DYNOSTORE_GATEWAY": fabric.gateway, "DYNOSTORE_TOKEN": token}
        shown = subprocess.run(
            [sys.executable, "-m", "dynostore", "stat", first], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert "DEGRADED" in shown
        assert f"{lost.container_id}  container gone" in shown
        assert client.repair(first, token_user=token) == 1
        assert not client.stat(first, token_user=token).degraded
        assert client.repair(first, token_user=token) == 0  # nothing left to do
        cli = subprocess.run(
            [sys.executable, "-m", "dynostore", "repair", "--catalog", "c"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        assert f"{second}: rebuilt 1 chunk(s)" in cli.stdout
        assert "2 object(s) checked, 1 chunk(s) rebuilt, 0 object(s) not repaired" in cli.stdout
        for key, data in objects.items():
            assert len(holders(fabric, token, key)) == 5
            # Two more of the original holders go: only the rebuilt chunk keeps the object readable.
            others = [n for n in placed[key].values() if n != lost.name][:2]
            gone = [c for c in fabric.containers if c.name in others]
            for container in gone:
                container.kill()
            assert client.get(key=key, token_user=token) == data
            for container in gone:
                container.start()


def test_a_repair_whose_commit_outcome_is_unknown_leaves_its_new_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the copies were deleted at once, and the commit, still in flight, then named a deleted copy."""
    with LocalFabric(containers=6, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("ulla")
        data = os.urandom(5 * MiB)
        key = client.put(data=data, token_user=token, catalog="c")
        placed = holders(fabric, token, key)
        lost = next(c for c in fabric.containers if c.name == placed[0])
        lost.kill()
        wait_until_gone(fabric, lost.container_id)
        release = threading.Event()
        late: list[asyncio.Future[None]] = []
        commit = repair_module._commit_repair

        async def in_flight(pipeline: Pipeline, plan: Any, rebuilt: Any, token: str) -> None:
            """The call fails at once; the commit itself lands later, once ``release`` is set."""

            async def later() -> None:
                await asyncio.to_thread(release.wait, 60)
                await commit(pipeline, plan, rebuilt, token)

            late.append(asyncio.ensure_future(later()))
            raise Unavailable("injected: the gateway went away with the commit in flight")

        monkeypatch.setattr(repair_module, "_commit_repair", in_flight)
        with pytest.raises(Unavailable):
            client.repair(key, token_user=token)
        release.set()
        assert eventually(lambda: not client.stat(key, token_user=token).degraded, within=20)
        rebuilt_on = holders(fabric, token, key)[0]
        assert rebuilt_on not in placed.values()
        assert chunk_file(fabric, rebuilt_on, key, 0).exists()  # the copy the record names is there
        for name in [placed[1], placed[2]]:  # two more originals go: the object needs the rebuilt chunk
            next(c for c in fabric.containers if c.name == name).kill()
        assert client.get(key=key, token_user=token) == data


def test_repair_is_for_owners_and_existing_objects(shared: Session) -> None:
    key = shared.client.put(data=os.urandom(5000), token_user=shared.token, catalog="repairs", name="k")
    stat = shared.client.stat(key, token_user=shared.token)
    assert (stat.info.name, stat.info.size, stat.inline, stat.k, stat.m) == ("k", 5000, False, 3, 2)
    assert [c.index for c in stat.chunks if c.live] == [0, 1, 2, 3, 4]
    assert not stat.degraded
    assert shared.client.repair(key, token_user=shared.token) == 0
    inline = shared.client.put(data=b"tiny", token_user=shared.token, catalog="repairs")
    assert shared.client.stat(inline, token_user=shared.token).inline
    assert not shared.client.stat(inline, token_user=shared.token).chunks
    assert shared.client.repair(inline, token_user=shared.token) == 0
    other = shared.fabric.create_user(f"mallory{os.getpid()}{time.monotonic_ns()}")
    with pytest.raises(PermissionDenied):
        shared.client.repair(key, token_user=other)
    with pytest.raises(NotFound):
        shared.client.repair("0" * 32, token_user=shared.token)


def test_commit_repair_checks_containers_indexes_and_revision(shared: Session) -> None:
    data = os.urandom(5000)
    key = shared.client.put(data=data, token_user=shared.token, catalog="repairs")
    metadata = auth_metadata(shared.token)
    with shared.channel(shared.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        plan = stub.PlanRepair(gateway_pb2.PlanRepairRequest(key=key), metadata=metadata, timeout=10)
        assert plan.write_ticket
        assert len(plan.location.chunks) == 5
        live = plan.containers[0].id

        def commit(revision: int, index: int, container_id: str) -> grpc.StatusCode:
            chunk = common_pb2.ChunkLocation(index=index, container_id=container_id, stored=True)
            request = gateway_pb2.CommitRepairRequest(key=key, revision=revision, chunks=[chunk])
            try:
                stub.CommitRepair(request, metadata=metadata, timeout=10)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        assert commit(plan.revision, 9, live) == grpc.StatusCode.INVALID_ARGUMENT
        assert commit(plan.revision, 0, "f" * 32) == grpc.StatusCode.INVALID_ARGUMENT
        assert commit(plan.revision - 1, 0, live) == grpc.StatusCode.FAILED_PRECONDITION
        assert shared.client.get(key=key, token_user=shared.token) == data  # refusals changed nothing
        holder = plan.location.chunks[0].container_id  # record chunk 0 where it is: accepted, a new revision
        assert commit(plan.revision, 0, holder) == grpc.StatusCode.OK
        again = stub.PlanRepair(gateway_pb2.PlanRepairRequest(key=key), metadata=metadata, timeout=10)
        assert again.revision > plan.revision
        assert [(c.container_id, c.stored) for c in again.location.chunks] == [
            (c.container_id, c.stored) for c in plan.location.chunks
        ]
        assert commit(plan.revision, 0, holder) == grpc.StatusCode.FAILED_PRECONDITION  # that revision is gone
    assert shared.client.get(key=key, token_user=shared.token) == data


def test_the_gateway_repairs_chunks_of_a_lost_container_by_itself(tmp_path: Path) -> None:
    with (
        LocalFabric(containers=6, root=tmp_path / "fabric", repair_interval=1, repair_grace=0) as fabric,
        fabric.client() as client,
    ):
        token = fabric.create_user("frank")
        data = os.urandom(4 * MiB)
        key = client.put(data=data, token_user=token, catalog="c")
        placed = holders(fabric, token, key)
        lost = next(c for c in fabric.containers if c.name == placed[1])
        lost.kill()
        wait_until_gone(fabric, lost.container_id)
        deadline = time.monotonic() + 60
        while len(now := holders(fabric, token, key)) < 5:
            assert time.monotonic() < deadline, f"not repaired: {now}"
            time.sleep(0.5)
        assert lost.name not in now.values()
        for name in [n for n in placed.values() if n != lost.name][:2]:
            next(c for c in fabric.containers if c.name == name).kill()
        assert client.get(key=key, token_user=token) == data
        assert "Repair sweep" in (fabric.root / "logs" / "gateway.log").read_text()


def test_verify_rebuilds_corrupt_and_vanished_chunks(tmp_path: Path) -> None:
    with LocalFabric(containers=7, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("gina")
        data = os.urandom(5 * MiB)  # two segments: chunks are read by stream
        key = client.put(data=data, token_user=token, catalog="c")
        placed = holders(fabric, token, key)
        by_name = {c.name: c for c in fabric.containers}
        files = {i: chunk_file(fabric, n, key, i) for i, n in placed.items()}
        rot(files[0], at=files[0].stat().st_size // 2)
        rotten = files[0].read_bytes()
        files[1].unlink()
        assert client.repair(key, token_user=token) == 0  # the record sees nothing wrong
        assert client.repair(key, token_user=token, verify=True) == 2
        assert holders(fabric, token, key) == placed  # rewritten where they were: still on distinct containers
        assert files[0].read_bytes() != rotten  # the damaged copy was replaced
        assert files[1].exists()
        time.sleep(2.5)  # a container reporting what the verify found would delete the new copies by now
        assert client.repair(key, token_user=token, verify=True) == 0
        for index in (2, 3):  # only the rebuilt chunks keep the object readable now
            by_name[placed[index]].kill()
        assert client.get(key=key, token_user=token) == data


def test_verify_rewrites_two_rotten_chunks_of_each_object_in_place(tmp_path: Path) -> None:
    """Every container holds a chunk of each object: rotten chunks are rewritten where they were, none elsewhere."""
    with LocalFabric(containers=5, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("greta")
        rng = random.Random(14)
        objects = {}
        for size in [100 * 1024, 5 * MiB] * 4:  # one segment (chunks read and written whole) and two (streamed)
            data = os.urandom(size)
            objects[client.put(data=data, token_user=token, catalog="c")] = data
        placed = {key: holders(fabric, token, key) for key in objects}
        rotten = {}
        for key, where in placed.items():
            assert len(set(where.values())) == 5
            for index in rng.sample(range(5), 2):
                path = chunk_file(fabric, where[index], key, index)
                rot(path, at=path.stat().st_size // 2)
                rotten[key, index] = (path, path.read_bytes())
        outcomes: dict[str, int | str] = {}
        for key in objects:
            try:
                outcomes[key] = client.repair(key, token_user=token, verify=True)
            except DynoStoreError as exc:  # e.g. ALREADY_EXISTS, when a chunk went to where it was stored
                outcomes[key] = f"{type(exc).__name__}: {exc}"
        assert outcomes == dict.fromkeys(objects, 2)
        for key in objects:
            assert holders(fabric, token, key) == placed[key]  # the same 5 distinct containers as before
        for path, damaged in rotten.values():
            assert path.read_bytes() != damaged  # the record's copy is the rebuilt one
        time.sleep(2.5)  # longer than containers take to report damage a read found (and delete the copy)
        for key, data in objects.items():
            assert client.repair(key, token_user=token, verify=True) == 0
            assert holders(fabric, token, key) == placed[key]
            assert client.get(key=key, token_user=token) == data


def run_cli(fabric: LocalFabric, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``dynostore ARGS`` against ``fabric`` as the owner of ``token``."""
    env = {**os.environ, "DYNOSTORE_GATEWAY": fabric.gateway, "DYNOSTORE_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "dynostore", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_without_a_spare_container_repair_says_the_object_is_under_spread(tmp_path: Path) -> None:
    """One of 5 containers dies: its chunk is rebuilt on one holding another; a 6th container takes it back."""
    with LocalFabric(containers=6, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("hugo")
        sixth = fabric.containers[5]
        sixth.stop()  # it joins later
        wait_until_gone(fabric, sixth.container_id)
        data = os.urandom(5 * MiB)
        key = client.put(data=data, token_user=token, catalog="c")
        placed = holders(fabric, token, key)
        lost = next(c for c in fabric.containers if c.name == placed[4])
        lost.kill()
        wait_until_gone(fabric, lost.container_id)
        repaired = run_cli(fabric, token, "repair", key)
        assert repaired.returncode == 0, repaired.stderr  # durability is back
        assert f"{key}: rebuilt 1 chunk(s)" in repaired.stdout
        assert f"Object {key} is under-spread" in repaired.stderr
        shared = holders(fabric, token, key)
        assert len(shared) == 5
        assert len(set(shared.values())) == 4
        assert lost.name not in shared.values()
        shown = run_cli(fabric, token, "stat", key)
        assert "UNDER-SPREAD" in shown.stdout, shown.stdout
        assert "shares its container" in shown.stdout
        assert "DEGRADED" not in shown.stdout
        assert client.repair(key, token_user=token) == 0  # nowhere better to go yet
        sixth.start()
        wait_until_planned(fabric, sixth.container_id)
        assert client.repair(key, token_user=token) == 1  # a chunk leaves the shared container
        now = holders(fabric, token, key)
        assert len(set(now.values())) == 5
        assert sixth.name in now.values()
        assert "UNDER-SPREAD" not in run_cli(fabric, token, "stat", key).stdout
        moved = next(i for i, n in now.items() if n == sixth.name)
        with pytest.raises(StopIteration):  # its copy on the shared container is deleted
            chunk_file(fabric, shared[moved], key, moved)
        for name in [n for n in now.values() if n != sixth.name][:2]:  # two containers go: still readable
            next(c for c in fabric.containers if c.name == name).kill()
        assert client.get(key=key, token_user=token) == data


def test_the_sweep_spreads_an_object_again_when_its_container_returns(tmp_path: Path) -> None:
    with (
        LocalFabric(containers=5, root=tmp_path / "fabric", repair_interval=1, repair_grace=0) as fabric,
        fabric.client() as client,
    ):
        token = fabric.create_user("ines")
        data = os.urandom(4 * MiB)
        key = client.put(data=data, token_user=token, catalog="c")
        placed = holders(fabric, token, key)
        lost = next(c for c in fabric.containers if c.name == placed[2])
        lost.kill()
        wait_until_gone(fabric, lost.container_id)
        deadline = time.monotonic() + 60
        while len(now := holders(fabric, token, key)) < 5:  # rebuilt, on a container holding another chunk
            assert time.monotonic() < deadline, f"not repaired: {now}"
            time.sleep(0.5)
        assert len(set(now.values())) == 4
        log = fabric.root / "logs" / "gateway.log"
        assert f"Object {key} is under-spread" in log.read_text()
        lost.start()
        deadline = time.monotonic() + 60
        while len(spread(fabric, token, key)) < 5:
            assert time.monotonic() < deadline, f"not spread again: {holders(fabric, token, key)}"
            time.sleep(0.5)
        assert len(holders(fabric, token, key)) == 5
        for name in [n for n in placed.values() if n != lost.name][:2]:
            next(c for c in fabric.containers if c.name == name).kill()
        assert client.get(key=key, token_user=token) == data


def test_verify_commits_after_the_containers_report_what_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container reports damage that a read found while a verify repairs it; the repair still commits."""
    found = repair_module._damaged_chunks

    async def found_then_reported(pipeline: Pipeline, location: gateway_pb2.Location) -> dict[int, str]:
        damaged = await found(pipeline, location)
        deadline = time.monotonic() + 20
        while set(damaged) & set(await asyncio.to_thread(holders, fabric, token, key)):
            assert time.monotonic() < deadline, "the containers did not report the damage"
            await asyncio.sleep(0.2)
        return damaged

    monkeypatch.setattr(repair_module, "_damaged_chunks", found_then_reported)
    with LocalFabric(containers=6, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("gus")
        data = os.urandom(5 * MiB)
        key = client.put(data=data, token_user=token, catalog="c")
        placed = holders(fabric, token, key)
        chunk = chunk_file(fabric, placed[0], key, 0)
        chunk.unlink()
        assert client.get(key=key, token_user=token) == data  # the container takes note and reports soon
        assert client.repair(key, token_user=token, verify=True) == 1
        assert holders(fabric, token, key) == placed  # rewritten in place
        assert chunk.exists()
        assert client.get(key=key, token_user=token) == data


@pytest.mark.parametrize("damage", ["rotten", "vanished"])
def test_scrub_finds_a_damaged_chunk_and_the_sweep_rebuilds_it(tmp_path: Path, damage: str) -> None:
    specs = [ContainerSpec(settings={"scrub_interval": 1}) for _ in range(6)]
    with (
        LocalFabric(containers=specs, root=tmp_path / "fabric", repair_interval=1) as fabric,
        fabric.client() as client,
    ):
        token = fabric.create_user("hana")
        data = os.urandom(4 * MiB)
        key = client.put(data=data, token_user=token, catalog="c")
        placed = holders(fabric, token, key)
        by_name = {c.name: c for c in fabric.containers}
        chunk = chunk_file(fabric, placed[2], key, 2)
        if damage == "rotten":
            rot(chunk)
            damaged: bytes | None = chunk.read_bytes()
        else:
            chunk.unlink()  # and nobody reads it: only the scrub's look at the records finds it
            damaged = None
        deadline = time.monotonic() + 60
        while not rewritten(fabric, token, key, 2, placed[2], damaged):  # reported, deleted, rebuilt in place
            assert time.monotonic() < deadline, f"not rebuilt: {holders(fabric, token, key)}"
            time.sleep(0.5)
        assert holders(fabric, token, key) == placed
        assert not client.stat(key, token_user=token).degraded
        for index in (0, 1):
            by_name[placed[index]].kill()
        assert client.get(key=key, token_user=token) == data
        if damage == "vanished":
            assert "is gone from this container" in (fabric.root / "logs" / f"{placed[2]}.log").read_text()


def test_reads_report_vanished_and_rotten_chunks_and_the_sweep_rebuilds_them(tmp_path: Path) -> None:
    with (
        LocalFabric(containers=7, root=tmp_path / "fabric", repair_interval=1) as fabric,
        fabric.client() as client,
    ):
        token = fabric.create_user("iris")
        # One segment (its chunks read whole, in batches) and two (read by stream).
        for data in (os.urandom(100 * 1024), os.urandom(5 * MiB)):
            key = client.put(data=data, token_user=token, catalog="c")
            placed = holders(fabric, token, key)
            chunk_file(fabric, placed[0], key, 0).unlink()
            rotten = chunk_file(fabric, placed[1], key, 1)
            rot(rotten)
            damaged = rotten.read_bytes()
            assert client.get(key=key, token_user=token) == data  # from parity; both containers take note
            deadline = time.monotonic() + 60
            while not (
                rewritten(fabric, token, key, 0, placed[0], None)
                and rewritten(fabric, token, key, 1, placed[1], damaged)
            ):  # reported (the rotten copy deleted), then rebuilt where they were
                assert time.monotonic() < deadline, f"not rebuilt: {holders(fabric, token, key)}"
                time.sleep(0.5)
            assert holders(fabric, token, key) == placed
            assert not client.stat(key, token_user=token).degraded
            assert client.repair(key, token_user=token, verify=True) == 0  # every chunk reads back whole
            assert client.get(key=key, token_user=token) == data


def test_scrub_deletes_chunks_no_object_relies_on(tmp_path: Path) -> None:
    specs = [ContainerSpec(settings={"scrub_interval": 1, "gc_grace": 1}) for _ in range(5)]
    with LocalFabric(containers=specs, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("ivan")
        data = os.urandom(5000)
        kept = client.put(data=data, token_user=token, catalog="c")
        evicted = client.put(data=os.urandom(6000), token_user=token, catalog="c")
        down = fabric.containers[0]
        down.stop()  # it misses the evict: its chunk of that object becomes garbage
        client.evict(key=evicted, token_user=token)
        # Checked while it is down, before any scrub of it can run (gc_grace is 1 s here).
        assert list((down.root / "data" / "chunks").rglob(f"{evicted}.*"))
        down.start()
        orphan = "e" * 32  # a chunk written by a put that never committed
        fragment = container_pb2.Fragment(data=b"never committed", crc32=zlib.crc32(b"never committed"))
        header = container_pb2.ChunkHeader(key=orphan, index=0, ticket=fabric.mint_ticket(orphan, "write"))
        with grpc.insecure_channel(fabric.containers[1].address) as channel:
            reply = container_pb2_grpc.ContainerStub(channel).WriteChunks(
                container_pb2.WriteChunksRequest(chunks=[container_pb2.WholeChunk(header=header, fragments=[fragment])])
            )
        assert reply.results[0].code == 0  # stored (fsynced and renamed into place) when it answers

        def stored(key: str) -> list[Path]:
            return [p for c in fabric.containers for p in (c.root / "data" / "chunks").rglob(f"{key}.*")]

        deadline = time.monotonic() + 60
        while stored(orphan) or stored(evicted):
            assert time.monotonic() < deadline, f"garbage left: {stored(orphan) + stored(evicted)}"
            time.sleep(0.5)
        assert len(stored(kept)) == 5
        assert client.get(key=kept, token_user=token) == data


def test_container_calls_validate_their_input(shared: Session) -> None:
    metadata = auth_metadata(shared.fabric.container_token)
    bad = [
        gateway_pb2.ReportDamageRequest(container_id="../x"),
        gateway_pb2.ReportDamageRequest(container_id="a" * 32, chunks=[gateway_pb2.ChunkId(key="../../etc", index=0)]),
        gateway_pb2.ReportDamageRequest(container_id="a" * 32, chunks=[gateway_pb2.ChunkId(key="a" * 32, index=99)]),
    ]
    with shared.channel(shared.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for request in bad:
            for call, kind in ((stub.ReportDamage, None), (stub.CheckChunks, gateway_pb2.CheckChunksRequest)):
                message = kind(container_id=request.container_id, chunks=request.chunks) if kind else request
                with pytest.raises(grpc.RpcError) as info:
                    call(message, metadata=metadata, timeout=10)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        key = shared.client.put(data=os.urandom(5000), token_user=shared.token, catalog="checks")
        (location,) = stub.Locate(
            gateway_pb2.LocateRequest(keys=[key]), metadata=auth_metadata(shared.token), timeout=10
        ).locations
        holder = location.chunks[0].container_id
        ids = [gateway_pb2.ChunkId(key=key, index=0), gateway_pb2.ChunkId(key=key, index=1)]
        reply = stub.CheckChunks(gateway_pb2.CheckChunksRequest(container_id=holder, chunks=ids), metadata=metadata)
        assert list(reply.referenced) == [True, location.chunks[1].container_id == holder]
