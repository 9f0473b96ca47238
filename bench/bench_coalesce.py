"""Coalescing of concurrent single calls: the same calls from many threads, coalescing on and off, one fabric.

Usage: python -m bench.bench_coalesce [--threads 16] [--count 800] [--sizes 1K,64K,1M] [--rounds 3]

Two Clients of one LocalFabric, one with ``coalesce=True`` (the default) and
one without, take turns (interleaved rounds, so machine noise hits both) at
``count`` puts, gets, exists calls and evicts of each size from ``threads`` threads.
Prints ops/s per round and the on/off ratio; the median ratio is the figure.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

from bench.common import parse_size, rate, ratio_row
from dynostore.client import Client
from dynostore.local import LocalFabric
from dynostore.rpc.tuning import tune_malloc


def one_round(client: Client, token: str, size: int, count: int, threads: int) -> dict[str, float]:
    """Ops/s of ``count`` puts, then gets and exists calls of what they stored, from ``threads`` threads."""
    data = os.urandom(size)
    keys: list[str] = []
    put = rate(lambda: keys.append(client.put(data, token_user=token, catalog="bench")), count, threads)
    cycle = itertools.cycle(list(keys))
    get = rate(lambda: client.get(next(cycle), token_user=token), count, threads)
    exists = rate(lambda: client.exists(next(cycle), token_user=token), count, threads)
    each = iter(list(keys))
    evict = rate(lambda: client.evict(next(each), token_user=token), count, threads)
    return {"put": put, "get": get, "exists": exists, "evict": evict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--count", type=int, default=800)
    parser.add_argument("--sizes", default="1K,64K,1M")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tune_malloc()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    results: dict[tuple[str, int, bool], list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")) as root,
        LocalFabric(containers=5, root=root) as fabric,
        Client(fabric.gateway, coalesce=True) as on,
        Client(fabric.gateway, coalesce=False) as off,
    ):
        token = fabric.create_user("bench")
        for _, size, coalesce in itertools.product(range(args.rounds), sizes, (True, False)):
            rates = one_round(on if coalesce else off, token, size, args.count, args.threads)
            for op, value in rates.items():
                results.setdefault((op, size, coalesce), []).append(value)
    print(
        f"# Coalescing on vs off ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"{args.threads} threads, {args.count} calls per row, {args.rounds} interleaved rounds)"
    )
    print()
    print("| op | size | on, ops/s (per round) | off, ops/s (per round) | on/off (median of rounds) |")
    print("|---|---|---|---|---|")
    for op in ("put", "get", "exists", "evict"):
        for size in sizes:
            print(ratio_row(op, size, results[(op, size, True)], results[(op, size, False)]))


if __name__ == "__main__":
    main()
