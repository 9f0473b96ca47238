"""Replaceable objects: by key and by name, whole for readers, events, quota, old chunks and garbage collection."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dynostore.client import UserUsage
from dynostore.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from dynostore.local import ContainerSpec, LocalFabric
from dynostore.registry import Registry, keys
from tests.integration.conftest import Session, chunk_paths, eventually
from tests.integration.test_catalogs import collect

CHUNKED = 10_000  # above the inline limit (4096): stored as chunks


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with LocalFabric(containers=5, root=tmp_path_factory.mktemp("replace")) as made, made.client() as client:
        yield Session(made, client, made.create_user("rita"))


def test_replace_by_key_keeps_the_key_and_drops_the_old_chunks(fabric: Session) -> None:
    c, token = fabric.client, fabric.fabric.create_user("kim")
    key = c.put(data=b"a" * CHUNKED, token_user=token, catalog="bykey", name="doc")
    assert len(chunk_paths(fabric.fabric, key)) == 5
    versions = []
    for data in (b"b" * 2 * CHUNKED, b"inline now", os.urandom(CHUNKED + 1)):  # chunked, inline, chunked again
        assert c.put(data=data, token_user=token, catalog="bykey", name="doc", key=key, replace=True) == key
        assert c.get(key=key, token_user=token) == data
        assert c.get_batch([key], token_user=token) == [data]
        versions.append(c.stat(key=key, token_user=token).info.version)
    assert len(set(versions)) == 3
    assert key not in versions
    assert [(i.key, i.name, i.size) for i in c.list("bykey", token_user=token)] == [(key, "doc", CHUNKED + 1)]
    assert c.usage(token_user=token) == UserUsage(CHUNKED + 1, 1)
    # The chunks of every older version go after each commit; the newest version's stay.
    assert eventually(lambda: not chunk_paths(fabric.fabric, key) and not chunk_paths(fabric.fabric, versions[0]))
    assert len(chunk_paths(fabric.fabric, versions[-1])) == 5


def test_a_reserved_key_is_given_an_object_then_replaced(fabric: Session) -> None:
    c, token = fabric.client, fabric.token
    (reserved,) = c.plan_keys(1, token_user=token)
    assert c.put(data=b"first", token_user=token, catalog="planned", planned=reserved, replace=True) == reserved.key
    assert c.stat(key=reserved.key, token_user=token).info.version == ""  # the first put is the reserved key's own
    second = os.urandom(CHUNKED)
    assert c.put(data=second, token_user=token, catalog="planned", planned=reserved, replace=True) == reserved.key
    assert c.get(key=reserved.key, token_user=token) == second


def test_replace_refuses_missing_and_foreign_keys_and_needs_a_target(fabric: Session) -> None:
    c, token = fabric.client, fabric.token
    other = fabric.fabric.create_user("olaf")
    key = c.put(data=b"mine" * 3000, token_user=token, catalog="guarded")
    with pytest.raises(PermissionDenied):
        c.put(data=b"theirs" * 3000, token_user=other, catalog="guarded", key=key, replace=True)
    assert c.get(key=key, token_user=token) == b"mine" * 3000
    c.evict(key=key, token_user=token)
    with pytest.raises(NotFound):
        c.put(data=b"late", token_user=token, catalog="guarded", key=key, replace=True)
    with pytest.raises(InvalidArgument, match="name"):
        c.put(data=b"x", token_user=token, catalog="guarded", replace=True)  # neither a key nor a name
    with pytest.raises(InvalidArgument, match="replace=True"):
        c.put(data=b"x", token_user=token, catalog="guarded", key=key)
    kept = c.put(data=b"kept", token_user=token, catalog="guarded", name="stays")
    with pytest.raises(InvalidArgument, match="catalog"):
        c.put(data=b"moved", token_user=token, catalog="elsewhere", key=kept, replace=True)
    c.put(data=b"renewed", token_user=token, catalog="guarded", key=kept, replace=True)  # no name: keeps its own
    assert [(i.key, i.name) for i in c.list("guarded", token_user=token)] == [(kept, "stays")]
    with pytest.raises(InvalidArgument, match="one object"):
        asyncio.run(replacing_batch(fabric))


async def replacing_batch(fabric: Session) -> None:
    """A put of two objects of which one replaces (refused: a replacing put is put alone)."""
    from dynostore.client.aio import bytes_segments
    from dynostore.client.pipeline import Pipeline, PutItem

    pipeline = Pipeline(fabric.fabric.gateway)
    try:
        (first, size), (second, _) = bytes_segments(b"a"), bytes_segments(b"b")
        items = [PutItem(first, size, "n", replace_name=True), PutItem(second, size)]
        await pipeline.put(items, token=fabric.token, catalog="guarded")
    finally:
        await pipeline.close()


def test_replace_by_name_leaves_one_object_of_that_name(fabric: Session) -> None:
    c, token = fabric.client, fabric.fabric.create_user("nora")
    first = c.put(data=b"1" * CHUNKED, token_user=token, catalog="names", name="report")
    twin = c.put(data=b"2" * CHUNKED, token_user=token, catalog="names", name="report")  # plain puts share names
    other = c.put(data=b"3", token_user=token, catalog="names", name="other")
    newest = c.put(data=b"4" * 7000, token_user=token, catalog="names", name="report", replace=True)
    assert newest not in (first, twin, other)
    listed = sorted((i.name, i.key) for i in c.list("names", token_user=token))
    assert listed == [("other", other), ("report", newest)]
    assert c.get_batch([first, twin, newest], token_user=token) == [None, None, b"4" * 7000]
    assert c.usage(token_user=token) == UserUsage(7001, 2)
    assert eventually(lambda: not chunk_paths(fabric.fabric, first) and not chunk_paths(fabric.fabric, twin))
    inline = c.put(data=b"5", token_user=token, catalog="names", name="report", replace=True)
    assert sorted(i.key for i in c.list("names", token_user=token)) == sorted([other, inline])
    assert c.usage(token_user=token) == UserUsage(2, 2)
    # Another catalog's object of the same name is not touched.
    elsewhere = c.put(data=b"6", token_user=token, catalog="names2", name="report", replace=True)
    assert c.get_batch([inline, elsewhere], token_user=token) == [b"5", b"6"]


def test_replace_by_name_finds_objects_of_catalogs_from_before_name_entries(fabric: Session) -> None:
    """A catalog made before objects had name entries is searched through its index."""
    c, token = fabric.client, fabric.fabric.create_user("vera")
    old = [c.put(data=bytes([i]) * 100, token_user=token, catalog="legacy", name="same") for i in range(2)]

    async def as_before() -> None:  # what such a catalog looks like: no "names" flag, no name entries
        registry = Registry(fabric.fabric.etcd_address)
        try:
            catalog = await registry.etcd.get(keys.catalog("vera", "legacy"))
            assert catalog is not None
            record = json.loads(catalog.value)
            del record["names"]
            await registry.etcd.put(keys.catalog("vera", "legacy"), json.dumps(record).encode())
            await registry.etcd.delete_prefix(keys.name_prefix("vera", "legacy", "same"))
        finally:
            await registry.close()

    asyncio.run(as_before())
    new = c.put(data=b"new", token_user=token, catalog="legacy", name="same", replace=True)
    assert [i.key for i in c.list("legacy", token_user=token)] == [new]
    assert c.get_batch([*old, new], token_user=token) == [None, None, b"new"]


def test_events_say_replace(fabric: Session) -> None:
    c, token = fabric.client, fabric.fabric.create_user("eve")
    c.create_catalog("watched", token_user=token)
    events, thread = collect(c, "watched", token, 4, start=1)
    key = c.put(data=b"a", token_user=token, catalog="watched", name="n")
    c.put(data=b"bb" * CHUNKED, token_user=token, catalog="watched", name="n", key=key, replace=True)
    named = c.put(data=b"ccc", token_user=token, catalog="watched", name="n", replace=True)
    c.evict(key=named, token_user=token)
    thread.join(30)
    assert [(e.kind, e.key, e.size, e.replaced) for e in events] == [
        ("put", key, 1, ()),
        ("replace", key, 2 * CHUNKED, (key,)),
        ("replace", named, 3, (key,)),  # the deletion of `key` is part of this event
        ("evict", named, 3, ()),
    ]


def test_quota_counts_the_new_version_minus_the_old(fabric: Session) -> None:
    c, admin = fabric.client, fabric.fabric.admin_token
    token = fabric.fabric.create_user("quinn")
    key = c.put(data=os.urandom(6000), token_user=token, catalog="q", name="only")
    c.set_quota("quinn", token_user=admin, bytes=10_000, objects=1)
    with pytest.raises(ResourceExhausted):
        c.put(data=b"x", token_user=token, catalog="q")  # a second object
    grown = os.urandom(9000)
    c.put(data=grown, token_user=token, catalog="q", name="only", key=key, replace=True)  # 3000 more: fits
    assert c.usage(token_user=token) == UserUsage(9000, 1, 10_000, 1)
    with pytest.raises(ResourceExhausted):
        c.put(data=os.urandom(10_001), token_user=token, catalog="q", name="only", key=key, replace=True)
    assert c.get(key=key, token_user=token) == grown  # refused: the old version stays
    c.put(data=os.urandom(4000), token_user=token, catalog="q", name="only", replace=True)  # by name
    assert c.usage(token_user=token) == UserUsage(4000, 1, 10_000, 1)
    c.set_quota("quinn", token_user=admin, bytes=1000)  # now over it: a replacement that shrinks still goes
    c.put(data=os.urandom(3000), token_user=token, catalog="q", name="only", replace=True)
    assert c.usage(token_user=token) == UserUsage(3000, 1, 1000, 0)


def test_a_user_at_quota_replaces_through_a_fresh_pool_and_is_refused_a_new_object(fabric: Session) -> None:
    """A replacement renews the key pool without the quota check; a new object from that pool is refused at commit."""
    admin = fabric.fabric.admin_token
    token = fabric.fabric.create_user("fran")
    key = fabric.client.put(data=os.urandom(CHUNKED), token_user=token, catalog="full", name="only")
    fabric.client.set_quota("fran", token_user=admin, bytes=100_000, objects=1)
    with fabric.fabric.client() as fresh:  # no key pool yet
        newer = os.urandom(CHUNKED)
        fresh.put(data=newer, token_user=token, catalog="full", name="only", replace=True)
        with pytest.raises(ResourceExhausted):
            fresh.put(data=os.urandom(CHUNKED), token_user=token, catalog="full")
    listed = list(fabric.client.list("full", token_user=token))
    assert [(i.name, i.size) for i in listed] == [("only", CHUNKED)]
    assert fabric.client.get(key=listed[0].key, token_user=token) == newer
    assert listed[0].key != key
    assert fabric.client.usage(token_user=token) == UserUsage(CHUNKED, 1, 100_000, 1)


def test_cli_put_replace(fabric: Session, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"

    def put(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "dynostore", "put", str(source), "--catalog", "cli", *args, "--token", fabric.token],
            env=fabric.cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    source.write_bytes(b"one")
    first = put()
    source.write_bytes(b"two" * 5000)
    assert put("--replace", "--key", first) == first
    assert fabric.client.get(key=first, token_user=fabric.token) == b"two" * 5000
    source.write_bytes(b"three")
    by_name = put("--replace")  # every object called notes.txt in the catalog
    assert [i.key for i in fabric.client.list("cli", token_user=fabric.token)] == [by_name]


def test_readers_during_replacements_see_one_version_whole(tmp_path: Path) -> None:
    """Readers of a three-segment and a one-segment object never fail and never get a mix of versions."""
    size = 5 * 1024 * 1024 + 123  # segments of 2 MiB (k=2)
    big = [bytes([i]) * size for i in range(1, 6)]
    small = [bytes([i]) * 20_000 for i in range(1, 6)]
    with LocalFabric(containers=4, k=2, m=1, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        token = fabric.create_user("rob")
        key = client.put(data=big[0], token_user=token, catalog="r")
        small_key = client.put(data=small[0], token_user=token, catalog="r")
        stop = threading.Event()
        reads: list[tuple[int, int]] = []
        failures: list[BaseException] = []

        def read() -> None:
            with fabric.client() as reader:
                while not stop.is_set():
                    try:
                        data = reader.get(key=key, token_user=token)
                        (data_small,) = reader.get_batch([small_key], token_user=token)
                    except BaseException as exc:
                        failures.append(exc)
                        return
                    assert data_small is not None
                    whole = data == big[data[0] - 1] and data_small == small[data_small[0] - 1]
                    reads.append((data[0], data_small[0]) if whole else (0, 0))

        def more_reads_than(count: int) -> Callable[[], bool]:
            return lambda: len(reads) > count or bool(failures)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for thread in readers:
            thread.start()
        try:
            for version in range(1, 5):
                reads_before = len(reads)
                client.put(data=big[version], token_user=token, catalog="r", key=key, replace=True)
                client.put(data=small[version], token_user=token, catalog="r", key=small_key, replace=True)
                assert eventually(more_reads_than(reads_before + 3), within=60)
        finally:
            stop.set()
            for thread in readers:
                thread.join(60)
        assert failures == []
        assert (0, 0) not in reads  # every read was one version, whole
        assert client.get(key=key, token_user=token) == big[-1]
        assert eventually(lambda: not chunk_paths(fabric, key))


def test_old_chunks_a_replacement_left_behind_are_collected(tmp_path: Path) -> None:
    """Old chunks the gateway could not delete (as after a crash past the commit) go with garbage collection."""
    # gc_grace outlasts the put's chunk writes (one of which meets the stopped container) before its commit.
    specs = [ContainerSpec(settings={"scrub_interval": 1, "gc_grace": 8}) for _ in range(6)]
    fabric = LocalFabric(containers=specs, root=tmp_path / "fabric", repair_interval=0)  # no sweep rebuilds meanwhile
    with fabric, fabric.client() as client:
        token = fabric.create_user("gus")
        key = client.put(data=os.urandom(50_000), token_user=token, catalog="g")
        holder = next(c for c in fabric.containers if list((c.root / "data" / "chunks").rglob(f"{key}.*")))
        holder.stop()  # it misses the deletion of the old version's chunks
        new = os.urandom(60_000)
        client.put(data=new, token_user=token, catalog="g", key=key, replace=True)
        version = client.stat(key=key, token_user=token).info.version
        assert list((holder.root / "data" / "chunks").rglob(f"{key}.*"))  # checked before any scrub can run
        holder.start()
        assert eventually(lambda: not chunk_paths(fabric, key), within=60)
        # The new version's chunks are referenced: kept (one may have met the stopped container: not stored).
        stored = sum(chunk.stored for chunk in client.stat(key=key, token_user=token).chunks)
        assert stored >= 4
        assert len(chunk_paths(fabric, version)) == stored
        assert client.get(key=key, token_user=token) == new
