"""Server workers: the same load against gateways (or containers) of 1 and of 2 worker processes, one run.

Usage: python -m bench.bench_workers [--server gateway|container] [--processes 2] [--clients 4]
       [--threads 4] [--count 400] [--sizes 1K,64K] [--rounds 3]

Two LocalFabrics (5 containers each) differ only in ``--workers`` of their
gateway (``--server gateway``) or of each of their five containers
(``--server container``). Each round loads one, then the other (interleaved, so machine
noise hits both): ``processes`` client processes, each with ``clients``
Clients (one connection each, so the kernel spreads them over the workers)
shared by ``threads`` threads apiece, do ``count`` puts, then as many gets,
per process. Objects of 1 KiB are kept inline in etcd (control path only);
64 KiB ones are erasure-coded. Prints ops/s per round and the 2/1 ratio.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import tempfile
import time
from contextlib import ExitStack
from typing import Any

from bench.common import parse_size, rate, ratio_row
from dynostore.client import Client
from dynostore.local import ContainerSpec, LocalFabric


def _load(gateway: str, token: str, size: int, count: int, clients: int, threads: int) -> tuple[float, float]:
    """In a client process: put then get ``count`` objects of ``size`` bytes; return (puts/s, gets/s)."""
    data = os.urandom(size)
    pool = [Client(gateway) for _ in range(clients)]
    try:
        picks = itertools.cycle(pool)
        keys: list[str] = []
        put = rate(
            lambda: keys.append(next(picks).put(data, token_user=token, catalog="bench")), count, clients * threads
        )
        cycle = itertools.cycle(list(keys))
        get = rate(lambda: next(picks).get(next(cycle), token_user=token), count, clients * threads)
        return put, get
    finally:
        for client in pool:
            client.close()


def one_round(pool: Any, gateway: str, token: str, size: int, args: argparse.Namespace) -> tuple[float, float]:
    """Total puts/s and gets/s of ``args.processes`` client processes loading ``gateway`` at once."""
    work = (gateway, token, size, args.count, args.clients, args.threads)
    results = pool.starmap(_load, [work] * args.processes)
    return sum(r[0] for r in results), sum(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["gateway", "container"], default="gateway")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--sizes", default="1K,64K")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    results: dict[tuple[str, int, int], list[float]] = {}
    with ExitStack() as stack:
        gateways, tokens = {}, {}
        for workers in (1, 2):
            root = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR"))
            )
            if args.server == "gateway":
                fabric = LocalFabric(containers=5, root=root, gateway_args=["--workers", str(workers)])
            else:
                fabric = LocalFabric(
                    containers=[ContainerSpec(settings={"workers": workers}) for _ in range(5)], root=root
                )
            stack.enter_context(fabric)
            gateways[workers], tokens[workers] = fabric.gateway, fabric.create_user("bench")
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(args.processes))
        for _, size, workers in itertools.product(range(args.rounds), sizes, (1, 2)):
            puts, gets = one_round(pool, gateways[workers], tokens[workers], size, args)
            results.setdefault(("put", size, workers), []).append(puts)
            results.setdefault(("get", size, workers), []).append(gets)
    print(
        f"# {args.server.capitalize()} workers 2 vs 1 ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, "
        f"{args.processes} client processes x {args.clients} clients x {args.threads} threads, "
        f"{args.count} calls per process per row, {args.rounds} interleaved rounds)"
    )
    print()
    print("| op | size | 1 worker, ops/s (per round) | 2 workers, ops/s (per round) | 2/1 (median of rounds) |")
    print("|---|---|---|---|---|")
    for op in ("put", "get"):
        for size in sizes:
            print(ratio_row(op, size, results[(op, size, 1)], results[(op, size, 2)], right_over_left=True))


if __name__ == "__main__":
    main()
