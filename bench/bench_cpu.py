"""Where a put or get goes: latency beside the CPU each process of the fabric spends per operation.

Usage: python -m bench.bench_cpu [--sizes 64K,1M] [--count 300] [--threads 1] [--door]

One client against a LocalFabric of 5 file-system containers, its
operations one after the other, or from ``--threads`` threads at once (which
the client coalesces into batch calls). For each size it prints the median
latency, the operations per second, and the CPU time (user and kernel, from
/proc/PID/stat) that the client, the gateway, etcd and the containers spent
per operation over the timed loop, and their total. With ``--door`` the
operations are boto3's PutObject and GetObject through the S3 front door
(``dynostore s3``), whose CPU is shown apart. On a
machine with few cores an operation whose processes together spend more CPU
than its latency allows is bound by CPU, not by the disk or the network (on
N cores it cannot take less than total CPU / N); py-spy (``py-spy record
--subprocesses``) then tells which code in each process spends it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.common import label, parse_size
from dynostore.client import Client
from dynostore.local import LocalFabric


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds process ``pid`` has spent so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@dataclass
class Profile:
    """What the timed loop of one operation measured."""

    median: float  # seconds of one call
    rate: float  # calls per second
    spent: list[tuple[float, float]]  # per pid, (user, kernel) CPU seconds per call


def profile(operation: Callable[[int], object], count: int, pids: Sequence[int], threads: int = 1) -> Profile:
    """Call ``operation(i)`` for i < count, one after the other or from ``threads`` threads; time it and its CPU."""
    times: list[float] = []

    def timed(i: int) -> None:
        started = time.perf_counter()
        operation(i)
        times.append(time.perf_counter() - started)

    before = [cpu_seconds(p) for p in pids]
    started = time.perf_counter()
    if threads == 1:
        for i in range(count):
            timed(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(timed, range(count)))
    elapsed = time.perf_counter() - started
    after = [cpu_seconds(p) for p in pids]
    spent = [((a[0] - b[0]) / count, (a[1] - b[1]) / count) for a, b in zip(after, before, strict=True)]
    return Profile(statistics.median(times), count / elapsed, spent)


class Operations:
    """Put, get and evict of whole objects: through the SDK, or through the S3 door with boto3."""

    def __init__(self, fabric: LocalFabric, client: Client, token: str, door: bool) -> None:
        """Use ``client`` with ``token``, or (``door``) boto3 with an S3 key of the token's user."""
        self._client, self._token, self._s3, self._count = client, token, None, 0
        if door:
            from tests.servers import s3_client

            self._s3 = s3_client(fabric.s3_endpoint, *client.create_s3_key(token_user=token))
            self._s3.create_bucket(Bucket="cpu")

    def put(self, data: bytes) -> str:
        if self._s3 is None:
            return self._client.put(data=data, token_user=self._token, catalog="cpu")
        self._count += 1
        self._s3.put_object(Bucket="cpu", Key=f"object-{self._count}", Body=data)
        return f"object-{self._count}"

    def get(self, key: str) -> bytes:
        if self._s3 is None:
            return self._client.get(key=key, token_user=self._token)
        return bytes(self._s3.get_object(Bucket="cpu", Key=key)["Body"].read())

    def evict(self, key: str) -> None:
        if self._s3 is None:
            self._client.evict(key=key, token_user=self._token)
        else:
            self._s3.delete_object(Bucket="cpu", Key=key)


def measure_size(
    ops: Operations, size: int, count: int, pids: Sequence[int], door: bool, threads: int = 1
) -> list[str]:
    """Table rows for puts then gets of ``count`` objects of ``size`` bytes (pids: client, [door,] the fabric)."""
    data = os.urandom(size)
    for _ in range(10):  # warm the channels and the pool of planned keys
        ops.evict(ops.put(data))
    keys: dict[int, str] = {}

    def put(i: int) -> None:
        keys[i] = ops.put(data)

    put_profile = profile(put, count, pids, threads)
    get_profile = profile(lambda i: ops.get(keys[i]), count, pids, threads)
    if ops.get(keys[count - 1]) != data:
        raise SystemExit("The fabric returned different bytes.")
    for key in keys.values():
        ops.evict(key)
    rows = []
    for name, measured in (("put", put_profile), ("get", get_profile)):
        ms = [sum(s) * 1e3 for s in measured.spent]
        fixed = 4 if door else 3  # client, [door,] gateway, etcd: then the containers
        containers = measured.spent[fixed:]
        cells = " | ".join(f"{c:.2f}" for c in ms[:fixed])
        rows.append(
            f"| {label(size)} | {name} | {measured.median * 1e3:.1f} | {measured.rate:,.0f} | {cells} "
            f"| {sum(ms[fixed:]):.2f} ({sum(c[1] for c in containers) * 1e3:.2f}) | {sum(ms):.2f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64K,1M")
    parser.add_argument("--count", type=int, default=300, help="operations per size and kind")
    parser.add_argument("--threads", type=int, default=1, help="threads making the operations at once")
    parser.add_argument("--door", action="store_true", help="boto3 through the S3 front door instead of the SDK")
    args = parser.parse_args()
    if args.door and args.threads != 1:
        parser.error("--door measures one thread (a boto3 client is not shared between threads)")
    door = " door CPU ms |" if args.door else ""
    print(f"{args.threads} thread(s), {args.count} operations per row")
    print(
        f"| size | op | median ms | ops/s | client CPU ms |{door} gateway CPU ms | etcd CPU ms "
        "| containers CPU ms (kernel) | total CPU ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.door else ""))
    with (
        tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")) as root,
        LocalFabric(containers=5, root=root, s3=args.door) as fabric,
        Client(fabric.gateway) as client,
    ):
        ops = Operations(fabric, client, fabric.create_user("bench"), args.door)
        pids = [
            os.getpid(),
            *([fabric.s3.pid or 0] if fabric.s3 else []),
            *(g.pid or 0 for g in fabric.gateways),
            *(e.pid or 0 for e in fabric.etcd_members),
            *(c.pid or 0 for c in fabric.containers),
        ]
        for size in (parse_size(s) for s in args.sizes.split(",")):
            for row in measure_size(ops, size, args.count, pids, args.door, args.threads):
                print(row)


if __name__ == "__main__":
    main()
