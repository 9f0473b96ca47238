"""Get and put latency on a healthy LocalFabric with hedging on and off, interleaved.

Usage: python -m bench.bench_hedging [--sizes 64K,1M,16M,64M] [--repeat 21]

Two clients of one fabric, one with ``hedging=True`` and one with
``hedging=False``, take turns (on, off, on, off...) for every put and get, so
that load from elsewhere on the machine hits both alike. Prints the p50 and
p90 latencies per size and how many extra reads and given-up chunk writes
the hedging client made (on a healthy fabric: the cost of hedging for
nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from bench.common import label, parse_size
from dynostore.client import Client
from dynostore.local import LocalFabric
from dynostore.rpc.tuning import tune_malloc


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed_ms(call: Callable[[], object]) -> float:
    """Milliseconds one call of ``call`` took."""
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


Series = dict[str, list[float]]


def measure(clients: dict[str, Client], token: str, data: bytes, repeat: int) -> tuple[Series, Series]:
    """Milliseconds of each put and get per client, the clients taking turns."""
    puts: Series = {name: [] for name in clients}
    gets: Series = {name: [] for name in clients}
    keys: dict[str, list[str]] = {name: [] for name in clients}

    def put(name: str) -> None:
        keys[name].append(clients[name].put(data=data, token_user=token, catalog="b"))

    def get(name: str) -> None:
        clients[name].get(key=keys[name][-1], token_user=token)

    for _ in range(repeat):
        for name in clients:
            puts[name].append(timed_ms(lambda n=name: put(n)))  # type: ignore[misc]
    for _ in range(repeat):
        for name in clients:
            gets[name].append(timed_ms(lambda n=name: get(n)))  # type: ignore[misc]
    for name, client in clients.items():
        if client.get(key=keys[name][-1], token_user=token) != data:
            raise SystemExit(f"Read back different bytes for {label(len(data))}.")
        for key in keys[name]:
            client.evict(key=key, token_user=token)
    return puts, gets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64K,1M,16M,64M")
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    tune_malloc()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")) as root,
        LocalFabric(containers=5, root=root) as fabric,
        Client(fabric.gateway, hedging=True) as on,
        Client(fabric.gateway, hedging=False) as off,
    ):
        token = fabric.create_user("bench")
        clients = {"on": on, "off": off}
        for size in sizes:
            rows.append((size, *measure(clients, token, os.urandom(size), args.repeat)))
        counts = on.hedge_counts

    print(
        f"# Hedging on and off, interleaved ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.repeat} each)"
    )
    print()
    print("| size | put p50 on / off ms | put p90 on / off ms | get p50 on / off ms | get p90 on / off ms |")
    print("|---|---|---|---|---|")
    for size, puts, gets in rows:
        cells = [
            f"{percentile(series['on'], q):,.1f} / {percentile(series['off'], q):,.1f}"
            for series in (puts, gets)
            for q in (0.5, 0.9)
        ]
        print(f"| {label(size)} | " + " | ".join(cells) + " |")
    print()
    means = [statistics.fmean(g["on"]) / statistics.fmean(g["off"]) for _, _, g in rows]
    print(f"mean get time on/off per size: {', '.join(f'{m:.2f}' for m in means)}")
    print(f"hedging client: {counts.extra_reads} extra chunk reads, {counts.writes_given_up} chunk writes given up")


if __name__ == "__main__":
    main()
