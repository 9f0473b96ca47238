"""PutObject/GetObject through the S3 front door beside the moto server (and Ceph RGW), and the SDK itself.

Usage: python -m bench.bench_s3 [--sizes 1K,1M,64M] [--count 200] [--multipart 1G] [--repeat 3]
[--targets door,moto,rgw,sdk]

``door`` is ``dynostore s3`` in front of a ``LocalFabric(s3=True)`` (etcd, a
gateway, 5 fs containers, 3+2 coding); ``door2`` a second door on the same
fabric with two worker processes (``--workers 2``); ``moto`` a moto S3 server process;
``rgw`` a micro Ceph cluster's RGW (memstore OSD, ``scripts/micro_ceph.py``;
skipped with the reason when Ceph is missing); ``sdk`` the same fabric's
``Client.put``/``get`` without the door. The S3 targets are driven by boto3
with the same client settings. For each size, ``--count`` objects of 1 KiB
(fewer of larger sizes: 1 MiB gets count/10, 64 MiB and up 3) are put one
after the other and read back; then one object of ``--multipart`` bytes is
uploaded from a file with boto3's managed transfer (8 MiB parts, 4 at once;
the SDK: ``put_file``) and downloaded the same way. Each of ``--repeat``
rounds visits the targets in turn (the first target rotates), and figures
are medians over the rounds; "x SDK" divides by the SDK's figure of the same
row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from boto3.s3.transfer import TransferConfig

from bench.common import label, parse_size
from dynostore.client import Client
from dynostore.local import LocalFabric
from dynostore.rpc.tuning import tune_malloc
from tests.servers import ceph_cluster, ceph_missing, moto_server, s3_client, s3_door

MiB = 1 << 20
TRANSFER = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)


@dataclass
class Target:
    """One place to put objects: an S3 endpoint (boto3) or the SDK."""

    name: str
    put: Callable[[str, bytes], object]
    get: Callable[[str], bytes]
    upload: Callable[[str, Path], object]
    download: Callable[[str, Path], object]
    results: dict[str, list[float]] = field(default_factory=dict)


def s3_target(name: str, endpoint: str, access_key: str, secret: str) -> Target:
    """A target of an S3 endpoint, with a fresh bucket."""
    s3 = s3_client(endpoint, access_key, secret, max_pool_connections=16)
    bucket = f"bench-{int(time.time())}"
    s3.create_bucket(Bucket=bucket)
    return Target(
        name,
        lambda key, data: s3.put_object(Bucket=bucket, Key=key, Body=data),
        lambda key: s3.get_object(Bucket=bucket, Key=key)["Body"].read(),
        lambda key, path: s3.upload_file(str(path), bucket, key, Config=TRANSFER),
        lambda key, path: s3.download_file(bucket, key, str(path), Config=TRANSFER),
    )


def sdk_target(client: Client, token: str) -> Target:
    """The fabric's own SDK, with object names as keys."""
    keys: dict[str, str] = {}

    def put(name: str, data: bytes) -> None:
        keys[name] = client.put(data=data, token_user=token, catalog="bench")

    def upload(name: str, path: Path) -> None:
        keys[name] = client.put_file(path, token_user=token, catalog="bench")

    return Target(
        "sdk",
        put,
        lambda name: client.get(keys[name], token_user=token),
        upload,
        lambda name, path: client.get_file(keys[name], path, token_user=token),
    )


def measure(target: Target, sizes: list[int], count: int, big: Path | None, round_no: int, scratch: Path) -> None:
    """One round on one target: puts and gets of each size, then the multipart file up and down."""
    for size in sizes:
        n = count if size <= 64 * 1024 else max(1, count // 10) if size <= 8 * MiB else 3
        data = os.urandom(size)
        names = [f"r{round_no}/{size}/{i}" for i in range(n)]
        started = time.perf_counter()
        for name in names:
            target.put(name, data)
        put_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for name in names:
            if target.get(name) != data:
                raise SystemExit(f"{target.name} returned other bytes for {name}.")
        get_seconds = time.perf_counter() - started
        target.results.setdefault(f"put {label(size)}", []).append(n / put_seconds)
        target.results.setdefault(f"get {label(size)}", []).append(n / get_seconds)
    if big is not None:
        name = f"r{round_no}/big"
        started = time.perf_counter()
        target.upload(name, big)
        target.results.setdefault(f"multipart put {label(big.stat().st_size)}", []).append(
            1 / (time.perf_counter() - started)
        )
        copy = scratch / f"{target.name}-copy"
        started = time.perf_counter()
        target.download(name, copy)
        target.results.setdefault(f"multipart get {label(big.stat().st_size)}", []).append(
            1 / (time.perf_counter() - started)
        )
        if copy.stat().st_size != big.stat().st_size:
            raise SystemExit(f"{target.name} downloaded {copy.stat().st_size} bytes, not {big.stat().st_size}.")
        copy.unlink()


def table(targets: list[Target], sizes: dict[str, int]) -> str:
    """The results as a markdown table: ops/s, MB/s and the ratio to the SDK."""
    sdk = next((t for t in targets if t.name == "sdk"), None)
    lines = ["| operation | target | ops/s | MB/s | x SDK |", "|---|---|---:|---:|---:|"]
    for row, size in sizes.items():
        for target in targets:
            if row not in target.results:
                continue
            ops = statistics.median(target.results[row])
            base = statistics.median(sdk.results[row]) if sdk and row in sdk.results else 0.0
            ratio = f"{ops / base:.2f}" if base and target is not sdk else ""
            lines.append(f"| {row} | {target.name} | {ops:,.1f} | {ops * size / 1e6:,.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1K,1M,64M")
    parser.add_argument("--count", type=int, default=200, help="objects of 1 KiB per round (fewer of larger sizes)")
    parser.add_argument("--multipart", default="1G", help="size of the multipart upload (0: none)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="door,moto,rgw,sdk")
    args = parser.parse_args()
    tune_malloc()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    wanted = args.targets.split(",")
    big_size = parse_size(args.multipart)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR"))))
        targets: list[Target] = []
        if {"door", "door2", "sdk"} & set(wanted):
            fabric = stack.enter_context(LocalFabric(containers=5, root=scratch / "fabric", s3=True))
            client = stack.enter_context(fabric.client())
            token = fabric.create_user("bench")
            keys = client.create_s3_key(token_user=token)
            if "door" in wanted:
                targets.append(s3_target("door", fabric.s3_endpoint, *keys))
            if "door2" in wanted:
                targets.append(s3_target("door2", stack.enter_context(s3_door(fabric, "--workers", "2")), *keys))
        if "moto" in wanted:
            moto = stack.enter_context(moto_server(scratch))
            targets.append(s3_target("moto", moto.endpoint, moto.access_key, moto.secret_key))
        if "rgw" in wanted:
            reason = ceph_missing()
            if reason:
                print(f"rgw skipped: {reason}")
            else:
                ceph = stack.enter_context(ceph_cluster(scratch / "ceph"))
                assert ceph.rgw is not None
                targets.append(s3_target("rgw", ceph.rgw.endpoint, ceph.rgw.access_key, ceph.rgw.secret_key))
        if "sdk" in wanted:
            targets.append(sdk_target(client, token))
        big = None
        if big_size:
            big = scratch / "big.bin"
            with open(big, "wb") as f:
                for _ in range(0, big_size, 64 * MiB):
                    f.write(os.urandom(min(64 * MiB, big_size - f.tell())))
        for round_no in range(args.repeat):
            for target in targets[round_no % len(targets) :] + targets[: round_no % len(targets)]:
                measure(target, sizes, args.count, big, round_no, scratch)
        rows = {f"{op} {label(s)}": s for s in sizes for op in ("put", "get")}
        if big is not None:
            rows |= {f"multipart {op} {label(big_size)}": big_size for op in ("put", "get")}
        print(table(targets, rows))


if __name__ == "__main__":
    main()
