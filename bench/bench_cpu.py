"""Where a put or get goes: latency beside the CPU each process of the fabric spends per operation.

Usage: python -m bench.bench_cpu [--sizes 64K,1M] [--count 300]

One client, one thread, sequential operations against a LocalFabric of 5
file-system containers. For each size it prints the median latency and the
CPU time (user and kernel, from /proc/PID/stat) that the client, the gateway,
etcd and the containers spent per operation over the timed loop. On a machine with
few cores a put whose processes together spend more CPU than its latency
allows is bound by CPU, not by the disk or the network; py-spy (``py-spy
record --subprocesses``) then tells which code in each process spends it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.common import label, parse_size
from dynostore.client import Client
from dynostore.local import LocalFabric


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds process ``pid`` has spent so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def profile(
    operation: Callable[[int], object], count: int, pids: Sequence[int]
) -> tuple[float, list[tuple[float, float]]]:
    """Median seconds of ``operation(i)`` for i < count, and per pid the (user, kernel) CPU seconds per call."""
    before = [cpu_seconds(p) for p in pids]
    times = []
    for i in range(count):
        started = time.perf_counter()
        operation(i)
        times.append(time.perf_counter() - started)
    after = [cpu_seconds(p) for p in pids]
    spent = [((a[0] - b[0]) / count, (a[1] - b[1]) / count) for a, b in zip(after, before, strict=True)]
    return statistics.median(times), spent


def measure_size(client: Client, token: str, size: int, count: int, pids: Sequence[int]) -> list[str]:
    """Table rows for puts then gets of ``count`` objects of ``size`` bytes."""
    data = os.urandom(size)
    for _ in range(10):  # warm the channels and the pool of planned keys
        client.put(data=data, token_user=token, catalog="cpu")
    keys: list[str] = []
    put = profile(lambda _: keys.append(client.put(data=data, token_user=token, catalog="cpu")), count, pids)
    got = profile(lambda i: client.get(key=keys[i], token_user=token), count, pids)
    if client.get(key=keys[-1], token_user=token) != data:
        raise SystemExit("The fabric returned different bytes.")
    for key in keys:
        client.evict(key=key, token_user=token)
    rows = []
    for name, (median, spent) in (("put", put), ("get", got)):
        containers = spent[3:]
        rows.append(
            f"| {label(size)} | {name} | {median * 1e3:.1f} | {sum(spent[0]) * 1e3:.2f} "
            f"| {sum(spent[1]) * 1e3:.2f} | {sum(spent[2]) * 1e3:.2f} | {sum(sum(c) for c in containers) * 1e3:.2f} "
            f"({sum(c[1] for c in containers) * 1e3:.2f}) |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64K,1M")
    parser.add_argument("--count", type=int, default=300, help="operations per size and kind")
    args = parser.parse_args()
    print("| size | op | median ms | client CPU ms | gateway CPU ms | etcd CPU ms | containers CPU ms (kernel) |")
    print("|---|---|---|---|---|---|---|")
    with (
        tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")) as root,
        LocalFabric(containers=5, root=root) as fabric,
        Client(fabric.gateway) as client,
    ):
        token = fabric.create_user("bench")
        pids = [
            os.getpid(),
            *(g.pid or 0 for g in fabric.gateways),
            *(e.pid or 0 for e in fabric.etcd_members),
            *(c.pid or 0 for c in fabric.containers),
        ]
        for size in (parse_size(s) for s in args.sizes.split(",")):
            for row in measure_size(client, token, size, args.count, pids):
                print(row)


if __name__ == "__main__":
    main()
