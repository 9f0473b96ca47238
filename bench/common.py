"""Pieces shared by the benchmarks: timing, one chunk over one plain gRPC stream, the gRPC floor."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dynostore._proto import container_pb2
from dynostore.client.chunks import ContainerStub, verified_data
from dynostore.container import wire
from dynostore.erasure.checksum import checksum
from dynostore.local import ManagedProcess
from dynostore.rpc import CHANNEL_OPTIONS

FRAGMENT = 1 << 20
# (key, operation) -> chunk ticket; LocalFabric.mint_ticket is one.
Mint = Callable[[str, str], str]


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes of ``text`` such as ``1K``, ``64M``, ``2G`` or ``1000``."""
    return int(text[:-1]) * UNITS[text[-1].upper()] if text[-1].upper() in UNITS else int(text)


def label(size: int) -> str:
    """``size`` in the largest binary unit it is a whole multiple of: ``64 MiB``, ``1 KiB``, ``1000 B``."""
    for unit in ("G", "M", "K"):
        if size >= UNITS[unit] and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]} {unit}iB"
    return f"{size} B"


def rate(fn: Callable[[], object], count: int, threads: int = 1) -> float:
    """Calls per second of ``fn`` over ``count`` calls: one after the other, or from ``threads`` threads."""
    started = time.perf_counter()
    if threads == 1:
        for _ in range(count):
            fn()
    else:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(fn) for _ in range(count)]:
                future.result()
    return count / (time.perf_counter() - started)


@contextmanager
def idle_grpc_server(root: Path) -> Iterator[str]:
    """Run ``bench.idle_server`` (a gRPC server with no work to do) and yield its address."""
    ready = root / "idle-server.addr"
    argv = [sys.executable, "-m", "bench.idle_server", str(ready)]
    process = ManagedProcess("idle gRPC server", argv, root / "idle-server.log")
    process.start()
    try:
        yield process.wait_for_file(ready)
    finally:
        process.stop()


def grpc_floor_rate(address: str, count: int) -> float:
    """Sequential ``Health/Check`` calls per second to ``address`` from a synchronous stub.

    Against :func:`idle_grpc_server` this is the most any operation that
    needs one call to a Python gRPC server can reach on this machine.
    """
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        rate(lambda: stub.Check(request, timeout=5), max(count // 10, 10))  # warm up
        return rate(lambda: stub.Check(request, timeout=5), count)


class ContainerStream:
    """PutChunk/GetChunk/DeleteChunk of chunk 0 of a key over one gRPC stream: the baseline.

    It uses the SDK's stub and wire format (``dynostore.client.chunks``) and,
    like the SDK, computes every fragment's CRC on writes and verifies it on reads.
    """

    def __init__(self, address: str, mint: Mint) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = ContainerStub(self.channel)
        self.mint = mint

    def put(self, key: str, data: bytes) -> None:
        view = memoryview(data)
        header = container_pb2.ChunkHeader(key=key, index=0, ticket=self.mint(key, "write"))

        def messages() -> Iterator[container_pb2.PutChunkRequest | bytes]:
            yield container_pb2.PutChunkRequest(header=header)
            for start in range(0, max(len(data), 1), FRAGMENT):
                piece = view[start : start + FRAGMENT]
                yield wire.encode_put_fragment(piece, checksum(piece))

        self.stub.PutChunk(messages())

    def get(self, key: str) -> bytes:
        request = container_pb2.GetChunkRequest(key=key, index=0, ticket=self.mint(key, "read"))
        return b"".join([verified_data(r) for r in self.stub.GetChunk(request)])

    def delete(self, key: str) -> None:
        self.stub.DeleteChunk(container_pb2.DeleteChunkRequest(key=key, index=0, ticket=self.mint(key, "write")))


def ratio_row(
    op: str, size: int, left: Sequence[float], right: Sequence[float], *, right_over_left: bool = False
) -> str:
    """A markdown row: ``op``, ``size``, two sides' ops/s per round, and the median of the per-round ratios.

    The ratio is left/right, or right/left with ``right_over_left``.
    """
    ratios = [(b / a if right_over_left else a / b) for a, b in zip(left, right, strict=True)]
    return (
        f"| {op} | {label(size)} | {', '.join(f'{v:,.0f}' for v in left)} "
        f"| {', '.join(f'{v:,.0f}' for v in right)} | {statistics.median(ratios):.2f}x |"
    )
