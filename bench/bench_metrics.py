"""Cost of Prometheus metrics on sequential 1 KiB puts and gets: a fabric with metrics off beside one with them on.

Usage: python -m bench.bench_metrics [--count 500] [--repeat 5] [--containers 5]

Both ``LocalFabric``s (etcd, a gateway, ``--containers`` file-system
containers) run side by side for the whole run and differ only in
``metrics=``. Each of ``--repeat`` rounds makes ``--count`` sequential 1 KiB
puts through ``dynostore.client.Client`` on one fabric, then gets them back,
then does the same on the other; the fabric that goes first alternates from
round to round, so drift in the machine's load falls on both alike. A
warm-up round of ``--count // 10`` operations on each is not counted.

Figures are medians over the rounds; "on/off" is the ratio of the medians,
and "paired" the median of each round's own on/off ratio (below 1: slower
with metrics), with its range over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import rate
from dynostore.client import Client
from dynostore.local import LocalFabric
from dynostore.rpc.tuning import tune_malloc

SIZE = 1024


@dataclass
class Side:
    """One fabric, its client and the rates measured on it."""

    name: str
    fabric: LocalFabric
    client: Client
    token: str
    puts: list[float] = field(default_factory=list)
    gets: list[float] = field(default_factory=list)

    def round(self, data: bytes, count: int) -> tuple[float, float]:
        """Sequential puts/s and gets/s of ``count`` objects of ``data``."""
        keys: list[str] = []
        put_rate = rate(lambda: keys.append(self.client.put(data=data, token_user=self.token, catalog="m")), count)
        fetch = iter(keys)
        got: list[bytes] = []
        get_rate = rate(lambda: got.append(self.client.get(key=next(fetch), token_user=self.token)), count)
        if any(g != data for g in got):
            raise SystemExit(f"Read back different bytes with metrics {self.name}.")
        return put_rate, get_rate


def rpc_count(address: str) -> float:
    """Sum of ``dynostore_rpc_requests_total`` on the metrics endpoint at ``address``."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("dynostore_rpc_requests_total{")
    )


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="sequential 1 KiB puts (then gets) per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds on each fabric")
    parser.add_argument("--containers", type=int, default=5, help="file-system containers per fabric")
    args = parser.parse_args()
    tune_malloc()
    data = os.urandom(SIZE)
    with ExitStack() as stack:
        root = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")))
        )
        sides = []
        for name, metrics in (("off", False), ("on", True)):
            fabric = stack.enter_context(LocalFabric(containers=args.containers, root=root / name, metrics=metrics))
            client = stack.enter_context(Client(fabric.gateway))
            sides.append(Side(name, fabric, client, fabric.create_user("bench")))
        off, on = sides
        for side in sides:
            side.round(data, max(args.count // 10, 1))  # warm up
        for number in range(args.repeat):
            for side in sides if number % 2 == 0 else sides[::-1]:
                put_rate, get_rate = side.round(data, args.count)
                side.puts.append(put_rate)
                side.gets.append(get_rate)
        # The "on" gateway really counted the calls; the "off" one serves no metrics at all.
        counted = rpc_count(on.fabric.gateways[0].metrics)
        if counted < 2 * args.count * args.repeat or off.fabric.gateways[0].metrics:
            raise SystemExit(f"Metrics not as expected: the 'on' gateway counted {counted:.0f} RPCs.")

    put_pairs = [b / a for a, b in zip(off.puts, on.puts, strict=True)]
    get_pairs = [b / a for a, b in zip(off.gets, on.gets, strict=True)]
    med = statistics.median
    print(
        f"# DynoStore metrics cost ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} cores, "
        f"median of {args.repeat} rounds of {args.count} x 1 KiB, {args.containers} fs containers)"
    )
    print()
    extra = f" --containers {args.containers}" if args.containers != 5 else ""
    print(f"Command: `python -m bench.bench_metrics --count {args.count} --repeat {args.repeat}{extra}`")
    print()
    print("| operation | metrics off /s | metrics on /s | on/off | paired on/off | paired range |")
    print("|---|---|---|---|---|---|")
    for label, off_rates, on_rates, pairs in (
        ("1 KiB put", off.puts, on.puts, put_pairs),
        ("1 KiB get", off.gets, on.gets, get_pairs),
    ):
        print(
            f"| {label} | {med(off_rates):,.0f} | {med(on_rates):,.0f} | {med(on_rates) / med(off_rates):.3f} "
            f"| {med(pairs):.3f} | {spread(pairs)} |"
        )
    print()
    print(
        f"rounds, puts/s off: {', '.join(f'{r:,.0f}' for r in off.puts)}; on: {', '.join(f'{r:,.0f}' for r in on.puts)}"
    )
    print(
        f"rounds, gets/s off: {', '.join(f'{r:,.0f}' for r in off.gets)}; on: {', '.join(f'{r:,.0f}' for r in on.gets)}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
