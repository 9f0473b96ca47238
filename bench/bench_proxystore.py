"""ProxyStore Store put/get through DynoConnector beside RedisConnector and FileConnector.

Usage: python -m bench.bench_proxystore [--sizes 1K,64K,1M,64M] [--threads 1,16] [--count 300]

Every connector runs each size from each number of threads (sizes up to
1 MiB; larger ones from one thread only), each thread with a ``Store`` of
its own over the one connector (a ``Store`` makes one connector call at a
time): puts/s, gets/s and the mean time of one call. For the large objects the same run also measures a raw gRPC
stream of the same bytes to one container of the fabric (PutChunk/GetChunk
of one chunk, fsynced like every chunk write: no gateway, no coding) and the
raw disk (write, fsync, rename of files of the same size), and prints the
issue's aims against them (a durable put with k=3, m=2 writes 5/3 of the
bytes, so the disk's bound on it is the disk's rate x 3/5).

Needs Debian's redis-server on PATH (apt-get install redis-server); it is
started here on a free loopback port without persistence and stopped at the
end. Also measures raw durable etcd puts (aetcd, sequential, 1 KiB values) to
the fabric's own etcd in the same run, the reference for small durable puts,
the rate of the cheapest gateway call (``whoami``: one gRPC round trip, no
etcd), and the rate of calls to a Python gRPC server that does no work at all
(``bench.idle_server``, from a synchronous stub). From these it prints the
ceilings: a get needs at least one call to a Python gRPC server, and a small
put is a gateway call followed by an etcd commit.

Two fabrics are measured: the usual one (5 file-system containers: chunks
fsynced to disk) and one of 5 memory containers, which keeps chunks in RAM
like Redis without persistence and so separates the cost of the disk from
the cost of the data path.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from proxystore.connectors.file import FileConnector
from proxystore.connectors.redis import RedisConnector
from proxystore.store import Store

from bench.bench_fabric import Baseline
from bench.bench_moves import raw_rate
from bench.common import grpc_floor_rate, idle_grpc_server, label, median_seconds, parse_size, rate
from dynostore.local import ContainerSpec, LocalFabric, free_port
from dynostore.proxystore import DynoConnector


@contextmanager
def redis_server() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


# Objects up to this size are also measured from several threads.
THREADED_MAX = 1 << 20


def measure(stores: list[Store[Any]], data: bytes, count: int, threads: int) -> tuple[float, float]:
    """(puts/s, gets/s) of ``count`` objects from ``threads`` threads; every get really fetches (no cache).

    Each thread has a ``Store`` of its own (``stores``, over one connector): a
    ``Store`` makes its connector calls one at a time, under a lock of its own.
    """
    keys: list[Any] = []
    mine = threading.local()
    handed = itertools.count()
    lock = threading.Lock()

    def store() -> Store[Any]:
        if not hasattr(mine, "store"):
            with lock:
                mine.store = stores[next(handed) % len(stores)]
        return cast("Store[Any]", mine.store)

    put_rate = rate(lambda: keys.append(store().put(data)), count, threads)
    it = iter(keys)

    def get_next() -> None:
        with lock:
            key = next(it)
        store().get(key)

    get_rate = rate(get_next, count, threads)
    if stores[0].get(keys[-1]) != data:
        raise SystemExit(f"{stores[0].name} returned different bytes.")
    for key in keys:
        stores[0].evict(key)
    return put_rate, get_rate


def stream_rates(fabric: LocalFabric, size: int, count: int) -> tuple[float, float]:
    """(put MB/s, get MB/s) of ``size`` bytes over one raw gRPC stream to one container (median of ``count``)."""
    baseline = Baseline(fabric)
    data = os.urandom(size)
    keys = iter(baseline.prepare(count))
    stored: list[str] = []
    put = median_seconds(lambda: stored.append(baseline.put(next(keys), data)), count)
    get = median_seconds(lambda: baseline.get(stored[-1]), count)
    if baseline.get(stored[-1]) != data:
        raise SystemExit("The raw stream returned different bytes.")
    for key in stored:
        baseline.stream.delete(key)
    return size / put / 1e6, size / get / 1e6


def etcd_put_rate(fabric: LocalFabric, count: int) -> float:
    async def run() -> float:
        async with fabric.etcd_client() as client:
            value = os.urandom(1024)
            started = time.perf_counter()
            for i in range(count):
                await client.put(f"/bench/raw/{i}".encode(), value)
            elapsed = time.perf_counter() - started
            await client.delete_prefix(b"/bench/raw/")
            return count / elapsed

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1K,64K,1M,64M")
    parser.add_argument("--threads", default="1,16", help="thread counts for sizes up to 1 MiB")
    parser.add_argument("--count", type=int, default=300, help="objects per size (fewer for big ones)")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    results: dict[str, dict[tuple[int, int], tuple[float, float]]] = {}
    large = [size for size in sizes if size > THREADED_MAX]
    streams: dict[int, tuple[float, float]] = {}
    disk: dict[int, float] = {}
    with (
        tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")) as root,
        LocalFabric(containers=5, root=f"{root}/fabric") as fabric,
        LocalFabric(containers=[ContainerSpec("memory")] * 5, root=f"{root}/memory-fabric") as memory_fabric,
        redis_server() as redis_port,
        idle_grpc_server(Path(root)) as idle_address,
    ):
        token = fabric.create_user("bench")
        memory_token = memory_fabric.create_user("bench")
        connectors: dict[str, Any] = {
            "DynoConnector": DynoConnector(apigateway=fabric.gateway, token_user=token, catalog="bench"),
            "DynoConnector, memory containers": DynoConnector(
                apigateway=memory_fabric.gateway, token_user=memory_token, catalog="bench"
            ),
            "RedisConnector": RedisConnector("127.0.0.1", redis_port),
            "FileConnector": FileConnector(f"{root}/files"),
        }
        for number, (name, connector) in enumerate(connectors.items()):
            stores = [Store(f"bench-{number}-{i}", connector, cache_size=0) for i in range(max(thread_counts))]
            results[name] = {}
            for size in sizes:
                count = max(3, min(args.count, (256 << 20) // size))
                for threads in thread_counts if size <= THREADED_MAX else [1]:
                    results[name][size, threads] = measure(stores[:threads], os.urandom(size), count, threads)
            stores[0].close()  # closes the connector they share
        for size in large:
            count = max(3, min(args.count, (256 << 20) // size))
            streams[size] = stream_rates(fabric, size, count)
            disk[size] = raw_rate(Path(root) / "raw", size, count) / 1e6
        etcd_rate = etcd_put_rate(fabric, args.count)
        with fabric.client() as client:
            client.whoami(token_user=token)
            call_rate = rate(lambda: client.whoami(token_user=token), args.count * 3)
        floor_rate = grpc_floor_rate(idle_address, args.count * 3)

    print(f"# ProxyStore Store put/get ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, no Store cache)")
    print()
    print(
        "| connector | size | threads | puts/s | gets/s | put ms | get ms | put MB/s | get MB/s "
        "| put vs Redis | get vs Redis |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, by_case in results.items():
        for (size, threads), (put, get) in by_case.items():
            redis_put, redis_get = results["RedisConnector"][size, threads]
            print(
                f"| {name} | {label(size)} | {threads} | {put:,.1f} | {get:,.1f} "
                f"| {threads / put * 1e3:,.2f} | {threads / get * 1e3:,.2f} "
                f"| {put * size / 1e6:,.1f} | {get * size / 1e6:,.1f} "
                f"| {put / redis_put:.2f}x | {get / redis_get:.2f}x |"
            )
    print()
    for size in large:
        up, down = streams[size]
        bound = min(up, disk[size] * fabric.k / (fabric.k + fabric.m))
        dyno_put, dyno_get = results["DynoConnector"][size, 1]
        redis_get = results["RedisConnector"][size, 1][1]
        print(
            f"{label(size)}: raw gRPC stream to one container {up:,.0f} MB/s up (fsynced), {down:,.0f} MB/s down; "
            f"raw disk (write+fsync) {disk[size]:,.0f} MB/s, so a durable k={fabric.k}, m={fabric.m} put is bound "
            f"near {disk[size] * fabric.k / (fabric.k + fabric.m):,.0f} MB/s; DynoConnector put "
            f"{dyno_put * size / 1e6:,.0f} MB/s = {dyno_put * size / 1e6 / bound:.2f}x of the lower bound "
            f"(aim 0.8x), get {dyno_get / redis_get:.2f}x of Redis (aim 1.0x);"
        )
    for size, threads, aim_put, aim_get in [(1 << 20, 1, 0.25, 0.5), (1 << 10, max(thread_counts), 0.5, 0.5)]:
        if (size, threads) in results["DynoConnector"]:
            dyno_put, dyno_get = results["DynoConnector"][size, threads]
            redis_put, redis_get = results["RedisConnector"][size, threads]
            print(
                f"{label(size)} from {threads} thread(s): puts {dyno_put / redis_put:.2f}x of Redis (aim {aim_put}x), "
                f"gets {dyno_get / redis_get:.2f}x (aim {aim_get}x);"
            )
    small = min(sizes)
    if (small, 1) not in results["DynoConnector"]:  # the ceilings below are for sequential calls
        return
    dyno_put, dyno_get = results["DynoConnector"][small, 1]
    redis_get = results["RedisConnector"][small, 1][1]
    # A put is a gateway call followed by an etcd commit: their times add up.
    put_ceiling = 1 / (1 / call_rate + 1 / etcd_rate)
    print()
    print(f"raw durable etcd puts (1 KiB, sequential): {etcd_rate:,.0f}/s;")
    print(f"one gateway round trip without etcd (Client.whoami, sequential): {call_rate:,.0f}/s;")
    print(
        f"one call to a Python gRPC server that does nothing (bench.idle_server, sync stub, sequential): "
        f"{floor_rate:,.0f}/s;"
    )
    print(
        f"DynoConnector {small >> 10} KiB puts: {dyno_put:,.0f}/s = {dyno_put / etcd_rate:.2f}x of raw etcd "
        f"(ceiling, a gateway call then an etcd commit: {put_ceiling:,.0f}/s = {put_ceiling / etcd_rate:.2f}x);"
    )
    print(
        f"DynoConnector {small >> 10} KiB gets: {dyno_get:,.0f}/s = {dyno_get / redis_get:.2f}x of Redis "
        f"(ceiling, one call to an idle gRPC server: {floor_rate / redis_get:.2f}x)"
    )


if __name__ == "__main__":
    main()
