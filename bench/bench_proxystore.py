"""ProxyStore Store put/get through DynoConnector beside RedisConnector and FileConnector.

Usage: python -m bench.bench_proxystore [--sizes 1K,1M,64M] [--count 300]

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
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from proxystore.connectors.file import FileConnector
from proxystore.connectors.redis import RedisConnector
from proxystore.store import Store

from bench.common import grpc_floor_rate, idle_grpc_server, parse_size, rate
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


def measure(store: Store[Any], data: bytes, count: int) -> tuple[float, float]:
    """(puts/s, gets/s) of ``count`` objects; every get really fetches (no cache)."""
    keys: list[Any] = []
    put_rate = rate(lambda: keys.append(store.put(data)), count)
    it = iter(keys)
    get_rate = rate(lambda: store.get(next(it)), count)
    if store.get(keys[-1]) != data:
        raise SystemExit(f"{store.name} returned different bytes.")
    for key in keys:
        store.evict(key)
    return put_rate, get_rate


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
    parser.add_argument("--sizes", default="1K,1M,64M")
    parser.add_argument("--count", type=int, default=300, help="objects per size (fewer for big ones)")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    results: dict[str, dict[int, tuple[float, float]]] = {}
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
            with Store(f"bench-{number}", connector, cache_size=0) as store:
                results[name] = {}
                for size in sizes:
                    count = max(3, min(args.count, (256 << 20) // size))
                    results[name][size] = measure(store, os.urandom(size), count)
        etcd_rate = etcd_put_rate(fabric, args.count)
        with fabric.client() as client:
            client.whoami(token_user=token)
            call_rate = rate(lambda: client.whoami(token_user=token), args.count * 3)
        floor_rate = grpc_floor_rate(idle_address, args.count * 3)

    print(f"# ProxyStore Store put/get ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, no Store cache)")
    print()
    print("| connector | size | puts/s | gets/s | put MB/s | get MB/s | put vs Redis | get vs Redis |")
    print("|---|---|---|---|---|---|---|---|")
    for name, by_size in results.items():
        for size, (put, get) in by_size.items():
            redis_put, redis_get = results["RedisConnector"][size]
            label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
            print(
                f"| {name} | {label} | {put:,.1f} | {get:,.1f} | {put * size / 1e6:,.1f} | {get * size / 1e6:,.1f} "
                f"| {put / redis_put:.2f}x | {get / redis_get:.2f}x |"
            )
    small = min(sizes)
    dyno_put, dyno_get = results["DynoConnector"][small]
    redis_get = results["RedisConnector"][small][1]
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
