"""Chunk write/read throughput of a container per backend, beside the raw backend in the same run.

Usage: python -m bench.bench_backends [--size 64M] [--repeat 3] [--backends fs,s3-moto,rados,s3-rgw]

For each backend one container process (of a ``LocalFabric``) receives a chunk
of ``--size`` bytes over one gRPC stream as 1 MiB fragments (PutChunk) and
streams it back (GetChunk). The **raw** figure moves the same bytes straight to
the same storage from this process: one file written, fsynced and renamed
(fs); one boto3 ``put_object``/``get_object`` (S3); objects of the container's
RADOS object size written and read by 4 threads (RADOS, the container's
parallelism). Ratio = container MB/s / raw MB/s. The S3 servers are a moto
server and a micro Ceph cluster's RGW (``scripts/micro_ceph.py``); RADOS uses
its memstore pool.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from bench.common import ContainerStream, median_seconds, parse_size
from dynostore.local import ContainerSpec, LocalFabric
from dynostore.rpc.tuning import tune_malloc
from tests.servers import REGION, CephCluster, S3Server, ceph_cluster, ceph_missing, moto_server

MiB = 1 << 20
RADOS_OBJECT = 4 * MiB


class Tickets:
    """Chunk tickets minted once per key and operation, so signing is not measured."""

    def __init__(self, fabric: LocalFabric) -> None:
        self._fabric = fabric
        self._tickets: dict[tuple[str, str], str] = {}

    def __call__(self, key: str, op: str) -> str:
        if (key, op) not in self._tickets:
            self._tickets[key, op] = self._fabric.mint_ticket(key, op)
        return self._tickets[key, op]


class Raw(Protocol):
    """Straight to the storage, without a container."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def delete(self, name: str) -> None: ...


class RawFs:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, data: bytes) -> None:
        temp = self.root / f"{name}.tmp"
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        temp.replace(self.root / name)

    def get(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def delete(self, name: str) -> None:
        (self.root / name).unlink()


class RawS3:
    def __init__(self, server: S3Server) -> None:
        self.client = server.client()

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket="dynostore", Key=f"raw/{name}", Body=data)

    def get(self, name: str) -> bytes:
        return bytes(self.client.get_object(Bucket="dynostore", Key=f"raw/{name}")["Body"].read())

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket="dynostore", Key=f"raw/{name}")


class RawRados:
    def __init__(self, cluster: CephCluster) -> None:
        from dynostore.container.backends.rados import load_rados

        rados = load_rados()
        self.cluster: Any = rados.Rados(conffile=str(cluster.conf))
        self.cluster.connect()
        self.ioctx: Any = self.cluster.open_ioctx(cluster.pool)
        self.pool = ThreadPoolExecutor(4)

    def _pieces(self, size: int) -> list[tuple[int, int]]:
        return [(n, min(RADOS_OBJECT, size - n * RADOS_OBJECT)) for n in range(-(-size // RADOS_OBJECT))]

    def put(self, name: str, data: bytes) -> None:
        self.size = len(data)
        view = memoryview(data)
        jobs = [
            self.pool.submit(self.ioctx.write_full, f"raw-{name}.{n}", bytes(view[n * RADOS_OBJECT :][:s]))
            for n, s in self._pieces(len(data))
        ]
        for job in jobs:
            job.result()

    def get(self, name: str) -> bytes:
        jobs = [self.pool.submit(self.ioctx.read, f"raw-{name}.{n}", s, 0) for n, s in self._pieces(self.size)]
        return b"".join(job.result() for job in jobs)

    def delete(self, name: str) -> None:
        for n, _ in self._pieces(self.size):
            self.ioctx.remove_object(f"raw-{name}.{n}")


def measure(raw: Raw, container: ContainerStream, data: bytes, repeat: int) -> tuple[float, float, float, float]:
    """Median seconds of raw put, container put, raw get, container get."""
    raw_name = uuid.uuid4().hex
    # Chunks are written once: each container write gets a key of its own.
    keys = [uuid.uuid4().hex for _ in range(repeat)]
    for key in keys:
        for op in ("write", "read"):
            container.mint(key, op)
    unwritten = iter(keys)
    raw_put = median_seconds(lambda: raw.put(raw_name, data), repeat)
    raw_get = median_seconds(lambda: raw.get(raw_name), repeat)
    put = median_seconds(lambda: container.put(next(unwritten), data), repeat)
    get = median_seconds(lambda: container.get(keys[0]), repeat)
    if raw.get(raw_name) != data or any(container.get(key) != data for key in keys):
        raise SystemExit("Read back different bytes.")
    raw.delete(raw_name)
    for key in keys:
        container.delete(key)
    return raw_put, put, raw_get, get


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64M", help="chunk size, e.g. 64M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="fs,s3-moto,rados,s3-rgw")
    args = parser.parse_args()
    tune_malloc()
    size = parse_size(args.size)
    wanted = args.backends.split(",")
    data = os.urandom(size)
    rows = []
    with contextlib.ExitStack() as stack:
        temp = tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR"))
        root = Path(stack.enter_context(temp))
        moto = stack.enter_context(moto_server(root / "moto")) if "s3-moto" in wanted else None
        ceph = None
        if {"rados", "s3-rgw"} & set(wanted):
            reason = ceph_missing()
            if reason:
                raise SystemExit(reason)
            ceph = stack.enter_context(ceph_cluster(root / "ceph"))
        for name in wanted:
            spec: ContainerSpec
            raw: Raw
            settings: dict[str, str | int | bool | Path]
            if name == "fs":
                spec, raw = ContainerSpec("fs", site="fs"), RawFs(root / "raw-fs")
            elif name in ("s3-moto", "s3-rgw"):
                server = moto if name == "s3-moto" else (ceph.rgw if ceph else None)
                assert server is not None
                server.create_bucket("dynostore")
                keys = server.write_credentials(root / f"keys-{name}")
                settings = {"s3_bucket": "dynostore", "s3_endpoint": server.endpoint, "s3_region": REGION, **keys}
                spec, raw = ContainerSpec("s3", site=name, settings={**settings, "s3_prefix": "c/"}), RawS3(server)
            elif name == "rados":
                assert ceph is not None
                settings = {"rados_pool": ceph.pool, "ceph_conf": ceph.conf, "capacity_bytes": 1 << 34}
                spec, raw = ContainerSpec("rados", site=name, settings=settings), RawRados(ceph)
            else:
                raise SystemExit(f"Unknown backend {name!r}.")
            with LocalFabric(containers=[spec], root=root / f"fabric-{name}") as fabric:
                stream = ContainerStream(fabric.containers[0].address, Tickets(fabric))
                rows.append((name, *measure(raw, stream, data, args.repeat)))

    def mbps(seconds: float) -> str:
        return f"{size / seconds / 1e6:,.1f}"

    print(f"# Backend chunk throughput ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.size} chunks)")
    print()
    print(
        "| backend | raw write MB/s | container write MB/s | write ratio "
        "| raw read MB/s | container read MB/s | read ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, raw_put, put, raw_get, get in rows:
        print(
            f"| {name} | {mbps(raw_put)} | {mbps(put)} | {raw_put / put:.2f}x "
            f"| {mbps(raw_get)} | {mbps(get)} | {raw_get / get:.2f}x |"
        )


if __name__ == "__main__":
    main()
