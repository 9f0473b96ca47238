"""Put/get throughput of a LocalFabric beside a single-stream gRPC baseline.

Usage: python -m bench.bench_fabric [--sizes 1K,1M,64M,256M] [--repeat 3] [--small 1000] [--no-hedging]

The baseline streams the same bytes, as ~1 MiB fragments, over one plain gRPC
stream to one container process of the same fabric (PutChunk/GetChunk of a
single chunk: no erasure coding, no gateway). Each figure is the median of
``--repeat`` runs; ratios compare figures measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

from bench.common import ContainerStream, label, median_seconds, parse_size, rate
from dynostore.client import Client
from dynostore.local import LocalFabric
from dynostore.rpc.tuning import tune_malloc

FRAGMENT = 1 << 20


class Baseline:
    """One plain gRPC stream to one container: the reference for every ratio."""

    def __init__(self, fabric: LocalFabric) -> None:
        # Tickets are minted once per key up front, so signing costs the baseline nothing per call.
        self._tickets: dict[tuple[str, str], str] = {}
        self._fabric = fabric
        self.stream = ContainerStream(fabric.containers[0].address, self._ticket)

    def _ticket(self, key: str, op: str) -> str:
        if (key, op) not in self._tickets:
            self._tickets[key, op] = self._fabric.mint_ticket(key, op)
        return self._tickets[key, op]

    def prepare(self, count: int) -> list[str]:
        keys = [uuid.uuid4().hex for _ in range(count)]
        for key in keys:
            self._ticket(key, "write")
            self._ticket(key, "read")
        return keys

    def put(self, key: str, data: bytes) -> str:
        self.stream.put(key, data)
        return key

    def get(self, key: str) -> bytes:
        return self.stream.get(key)


def measure_size(
    client: Client, token: str, baseline: Baseline, size: int, repeat: int
) -> tuple[int, float, float, float, float]:
    """Median seconds of baseline put, put, baseline get, get for one object size."""
    data = os.urandom(size)
    keys: list[str] = []
    base_keys: list[str] = []
    fresh = iter(baseline.prepare(repeat))
    base_put = median_seconds(lambda: base_keys.append(baseline.put(next(fresh), data)), repeat)
    base_get = median_seconds(lambda: baseline.get(base_keys[-1]), repeat)
    put = median_seconds(lambda: keys.append(client.put(data=data, token_user=token, catalog="bench")), repeat)
    get = median_seconds(lambda: client.get(key=keys[-1], token_user=token), repeat)
    if client.get(key=keys[-1], token_user=token) != data or baseline.get(base_keys[-1]) != data:
        raise SystemExit(f"Read back different bytes for {label(size)}.")
    for key in keys:
        client.evict(key=key, token_user=token)
    return size, base_put, put, base_get, get


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1K,1M,64M,256M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small", type=int, default=1000, help="number of sequential 1 KiB puts")
    parser.add_argument("--no-hedging", dest="hedging", action="store_false", help="a client without hedging")
    args = parser.parse_args()
    tune_malloc()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    with (
        tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")) as root,
        LocalFabric(containers=5, root=root) as fabric,
        Client(fabric.gateway, hedging=args.hedging) as client,
    ):
        token = fabric.create_user("bench")
        baseline = Baseline(fabric)
        rows = [measure_size(client, token, baseline, size, args.repeat) for size in sizes]
        small = os.urandom(1024)
        small_keys_put: list[str] = []
        small_rate = rate(
            lambda: small_keys_put.append(client.put(data=small, token_user=token, catalog="small")), args.small
        )
        fetch = iter(small_keys_put)
        small_get_rate = rate(lambda: client.get(key=next(fetch), token_user=token), args.small)
        threaded_rate = rate(lambda: client.put(data=small, token_user=token, catalog="small"), args.small, threads=8)
        batch = [small] * 100
        batch_rate = 100 * rate(
            lambda: client.put_batch(batch, token_user=token, catalog="small"), max(1, args.small // 100)
        )
        small_keys = iter(baseline.prepare(args.small))
        base_small_rate = rate(lambda: baseline.put(next(small_keys), small), args.small)

    def mbps(size: int, seconds: float) -> str:
        return f"{size / seconds / 1e6:,.1f}"

    print(
        f"# DynoStore fabric benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {args.repeat}, "
        f"hedging {'on' if args.hedging else 'off'})"
    )
    print()
    print("| size | baseline put MB/s | put MB/s | put ratio | baseline get MB/s | get MB/s | get ratio |")
    print("|---|---|---|---|---|---|---|")
    for size, base_put, put, base_get, get in rows:
        print(
            f"| {label(size)} | {mbps(size, base_put)} | {mbps(size, put)} | {base_put / put:.2f}x "
            f"| {mbps(size, base_get)} | {mbps(size, get)} | {base_get / get:.2f}x |"
        )
    print()
    print(
        f"1 KiB puts from one client: {small_rate:,.0f}/s sequential, {threaded_rate:,.0f}/s from 8 threads, "
        f"{batch_rate:,.0f}/s with put_batch of 100;"
    )
    print(f"1 KiB gets from one client: {small_get_rate:,.0f}/s sequential")
    print(f"baseline, 1 KiB single chunks to one container: {base_small_rate:,.0f}/s sequential")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
