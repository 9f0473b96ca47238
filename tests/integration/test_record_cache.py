"""The gateway's cache of object records follows every change made in etcd, by any gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.client import Client
from dynostore.errors import NotFound
from dynostore.local import LocalFabric
from dynostore.registry import ObjectRecord, Registry
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session, eventually


def gone(client: Client, key: str, token: str) -> bool:
    try:
        client.get(key=key, token_user=token)
    except NotFound:
        return not client.exists(key=key, token_user=token)
    return False


@pytest.mark.parametrize("size", [100, 5000])  # inline, erasure-coded
def test_an_evict_through_another_gateway_reaches_this_ones_cache(
    shared: Session, second_gateway: str, size: int
) -> None:
    c, token = shared.client, shared.token
    data = os.urandom(size)
    key = c.put(data=data, token_user=token, catalog="cached")
    assert c.get(key=key, token_user=token) == data  # served from the cache from now on
    assert c.exists(key=key, token_user=token)
    with Client(second_gateway, tls_ca=shared.fabric.tls_ca) as other:
        other.evict(key=key, token_user=token)
    assert eventually(lambda: gone(c, key, token))


def test_a_record_changed_in_etcd_is_read_again(shared: Session) -> None:
    c, token = shared.client, shared.token
    key = c.put(data=os.urandom(5000), token_user=token, catalog="cached")
    assert all(chunk.stored for chunk in c.stat(key=key, token_user=token).chunks)

    async def mark_chunk_missing() -> None:  # what another gateway's damage report does
        async with shared.fabric.etcd_client() as etcd:
            name = f"/dynostore/v1/objects/{key}".encode()
            record = json.loads((await etcd.get(name)).value)
            record["chunks"][0][1] = False
            await etcd.put(name, json.dumps(record).encode())

    asyncio.run(mark_chunk_missing())
    assert eventually(lambda: not c.stat(key=key, token_user=token).chunks[0].stored)
    assert c.stat(key=key, token_user=token).degraded


def test_the_evicting_gateway_forgets_at_once_the_other_soon(shared: Session, second_gateway: str) -> None:
    c, token = shared.client, shared.token
    key = c.put(data=b"cached or not", token_user=token, catalog="cached")
    with Client(second_gateway, tls_ca=shared.fabric.tls_ca) as other:
        assert other.get(key=key, token_user=token) == b"cached or not"
        other.evict(key=key, token_user=token)
        with pytest.raises(NotFound):  # the gateway that evicts forgets at once
            other.get(key=key, token_user=token)
    assert eventually(lambda: gone(c, key, token))


# No background reads of etcd (looks for drains to resume, catalog counts): the tests count the calls' own reads.
QUIET = ["--move-check-interval", "0", "--catalog-metrics-interval", "0"]


def etcd_ranges(fabric: LocalFabric) -> float:
    """How many reads (ranges) etcd has served, from its own metrics."""
    with urllib.request.urlopen(f"http://{fabric.etcd_address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    (count,) = [float(line.split()[1]) for line in text.splitlines() if line.startswith("etcd_mvcc_range_total ")]
    return count


@pytest.mark.parametrize("entries", [0, 100])
def test_a_cached_get_makes_no_etcd_read(tmp_path: Path, entries: int) -> None:
    """Counted by etcd itself, behind a real gateway: 20 gets of a small object read etcd each time, or never cached."""
    args = ["--object-cache-entries", str(entries), *QUIET]
    with LocalFabric(containers=0, root=tmp_path / "fabric", repair_interval=0, gateway_args=args) as fabric:
        token = fabric.create_user("counted")
        with fabric.client() as client:
            key = client.put(data=b"read me often", token_user=token, catalog="cached")
            assert client.get(key=key, token_user=token) == b"read me often"  # its token is cached from now on

            def reads_of_20_gets() -> float:
                before = etcd_ranges(fabric)
                for _ in range(20):
                    assert client.get(key=key, token_user=token) == b"read me often"
                return etcd_ranges(fabric) - before

            # Three windows: a watch that starts again meanwhile (one read per watch) falls in one of them.
            reads = [reads_of_20_gets() for _ in range(3)]
        log = (fabric.root / "logs" / "gateway.log").read_text()
        restarts = [line for line in log.splitlines() if "Watch of" in line]
    if entries:
        assert min(reads) == 0, f"etcd reads per window: {reads}; watch restarts: {restarts}"
    else:
        assert min(reads) >= 20  # at least the record, every time


def test_a_fresh_locate_reads_the_record_from_etcd(tmp_path: Path) -> None:
    """What a client asks after it found an object's chunks gone: not this gateway's cached record."""
    args = ["--object-cache-entries", "100", *QUIET]
    with LocalFabric(containers=5, root=tmp_path / "fabric", repair_interval=0, gateway_args=args) as fabric:
        token = fabric.create_user("located")
        with fabric.client() as client, grpc.insecure_channel(fabric.gateway) as channel:
            key = client.put(data=os.urandom(20_000), token_user=token, catalog="cached")
            stub = gateway_pb2_grpc.GatewayStub(channel)

            def locate(fresh: bool) -> float:
                before = etcd_ranges(fabric)
                request = gateway_pb2.LocateRequest(keys=[key], fresh=fresh)
                (location,) = stub.Locate(request, metadata=auth_metadata(token), timeout=10).locations
                assert location.object.key == key
                return etcd_ranges(fabric) - before

            locate(False)  # the record and the token cached from now on
            assert locate(False) == 0
            assert locate(True) >= 1  # the record read again (with its inline bytes, in one transaction)
            assert locate(False) == 0  # and cached again


def test_a_token_change_empties_the_token_cache(tmp_path: Path) -> None:
    """Revoking any token drops every cached token: the next call of another token reads etcd again."""
    with LocalFabric(containers=0, root=tmp_path / "fabric", repair_interval=0, gateway_args=QUIET) as fabric:
        token = fabric.create_user("cached")
        with fabric.client() as client:
            key = client.put(data=b"x", token_user=token, catalog="c")
            client.get(key=key, token_user=token)
            before = etcd_ranges(fabric)
            client.get(key=key, token_user=token)
            assert etcd_ranges(fabric) == before  # token and record cached
            _, spare = client.create_token(token_user=token)
            client.revoke_token(spare.id, token_user=token)
            before = etcd_ranges(fabric)
            client.get(key=key, token_user=token)
            assert etcd_ranges(fabric) - before == 2  # the token and its user read again; the record still cached


async def until(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not so after {seconds} s"
        await asyncio.sleep(0.05)


def test_a_frozen_etcd_ends_the_watch_and_empties_the_caches(tmp_path: Path) -> None:
    with LocalFabric(containers=0, root=tmp_path / "fabric") as fabric:
        etcd_pid = next(p.pid for p in fabric.processes if p.name == "etcd")
        assert etcd_pid is not None
        key = uuid.uuid4().hex
        record = ObjectRecord(
            key=key, owner="alice", catalog="c", name="", size=1, k=0, m=0, segment_size=0,
            inline=True, crc32=zlib.crc32(b"x"), data=b"x",
        )  # fmt: skip

        async def scenario() -> None:
            registry = Registry(fabric.etcd_address, object_cache_entries=10)
            watch = asyncio.create_task(registry.watch())
            try:
                await until(lambda: registry._objects.watching, 10)
                await registry.commit([record])
                assert len(registry._objects) == 1
                os.kill(etcd_pid, signal.SIGSTOP)  # the connection stays open but nothing answers
                try:
                    await until(lambda: not registry._objects.watching, 30)  # keepalive: ~15 s
                    assert len(registry._objects) == 0
                finally:
                    os.kill(etcd_pid, signal.SIGCONT)
                await until(lambda: registry._objects.watching, 30)
                assert (await registry.get_objects([key]))[0] == record
            finally:
                watch.cancel()
                await registry.close()

        asyncio.run(scenario())
