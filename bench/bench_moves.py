"""Drain and rebalance throughput (MB/s of chunks moved) beside the raw disk write rate of the same run.

Usage: python -m bench.bench_moves [--objects 40] [--size 8M] [--bandwidth 0]

A ``LocalFabric`` of 6 file-system containers on 3 sites (etcd, a gateway)
takes ``--objects`` objects of ``--size`` bytes (k=3, m=2: each chunk is a
third of the object). One container is drained, then 2 empty containers
join and the fabric is rebalanced; each figure is the bytes of chunks moved
over the job's own time as its gateway published it (``finished - started``:
the scan of the records included). The raw rate writes the same number of
files of one chunk's size to the same disk, each fsynced and renamed as a
container writes a chunk, from one thread.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from bench.bench_backends import RawFs
from bench.common import parse_size
from dynostore.client import MoveStatus
from dynostore.local import ContainerHandle, LocalFabric
from dynostore.rpc.tuning import tune_malloc

SITES = ["north", "north", "south", "south", "east", "east"]


def raw_rate(root: Path, size: int, count: int) -> float:
    """Bytes per second of ``count`` files of ``size`` bytes written, fsynced and renamed one after another."""
    raw = RawFs(root)
    data = random.randbytes(size)
    started = time.perf_counter()
    for i in range(count):
        raw.put(f"chunk{i}", data)
    elapsed = time.perf_counter() - started
    for i in range(count):
        raw.delete(f"chunk{i}")
    return size * count / elapsed


def job_rate(status: MoveStatus) -> float:
    """Bytes moved per second of the job's own time."""
    return status.bytes_moved / max(status.finished - status.started, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=40, help="objects put before the drain (40)")
    parser.add_argument("--size", type=parse_size, default=8 << 20, help="bytes per object, e.g. 8M (8M)")
    parser.add_argument("--bandwidth", type=parse_size, default=0, help="limit of both jobs in B/s (0: none)")
    args = parser.parse_args()
    tune_malloc()
    with tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        with LocalFabric(6, root=root / "fabric", sites=SITES) as fabric, fabric.client() as client:
            admin, token = fabric.admin_token, fabric.create_user("bench")
            for _ in range(args.objects):
                client.put(data=random.randbytes(args.size), token_user=token, catalog="bench")
            drained = client.drain_container(
                fabric.containers[0].container_id, token_user=admin, bandwidth=args.bandwidth, poll=0.2
            )
            for index, site in ((6, "north"), (7, "south")):
                handle = ContainerHandle(index, fabric, site)
                fabric.containers.append(handle)
                handle.start()
            balanced = client.rebalance(token_user=admin, bandwidth=args.bandwidth, poll=0.2)
        chunk = max(drained.bytes_moved // max(drained.chunks_moved, 1), 1)
        disk = raw_rate(root / "raw", chunk, max(drained.chunks_moved, 1))
    print(f"Command: `python -m bench.bench_moves --objects {args.objects} --size {args.size}`", end="")
    print(f" (bandwidth {args.bandwidth or 'unlimited'})")
    print()
    print("| job | chunks | MB moved | seconds | MB/s | raw disk write MB/s | job/raw |")
    print("|---|---|---|---|---|---|---|")
    for name, status in (("drain", drained), ("rebalance", balanced)):
        seconds = status.finished - status.started
        print(
            f"| {name} | {status.chunks_moved} | {status.bytes_moved / 1e6:.1f} | {seconds:.2f} | "
            f"{job_rate(status) / 1e6:.1f} | {disk / 1e6:.1f} | {job_rate(status) / disk:.2f} |"
        )


if __name__ == "__main__":
    main()
