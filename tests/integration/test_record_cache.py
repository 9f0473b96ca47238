"""The gateway's cache of object records follows every change made in etcd, by any gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dynostore.client import Client
from dynostore.errors import NotFound
from dynostore.local import LocalFabric
from dynostore.registry import ObjectRecord, Registry
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


@pytest.mark.parametrize(("entries", "etcd_reads"), [(0, 3), (100, 1)])
def test_reads_go_to_etcd_only_when_not_cached(
    shared: Session, monkeypatch: pytest.MonkeyPatch, entries: int, etcd_reads: int
) -> None:
    key = shared.client.put(data=b"read me thrice", token_user=shared.token, catalog="cached")

    async def read_three_times() -> list[Any]:
        registry = Registry(shared.fabric.etcd_address, object_cache_entries=entries, tls=shared.fabric.etcd_tls)
        reads = []
        read_objects = registry._read_objects

        async def counted(*args: Any, **kwargs: Any) -> list[ObjectRecord | None]:
            reads.append(args)
            return await read_objects(*args, **kwargs)

        monkeypatch.setattr(registry, "_read_objects", counted)
        watch = asyncio.create_task(registry.watch())
        try:
            for _ in range(500):  # the watch starts within 5 s
                if not entries or registry._objects.watching:
                    break
                await asyncio.sleep(0.01)
            for _ in range(3):
                (record,) = await registry.get_objects([key])
                assert record is not None
                assert record.data == b"read me thrice"
        finally:
            watch.cancel()
            await registry.close()
        return reads

    assert len(asyncio.run(read_three_times())) == etcd_reads


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
