"""Pieces shared by the benchmarks: timing, and one chunk over one plain gRPC stream."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import grpc

from dynostore._proto import container_pb2
from dynostore.client.chunks import ContainerStub, verified_data
from dynostore.container import wire
from dynostore.erasure.checksum import checksum
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
