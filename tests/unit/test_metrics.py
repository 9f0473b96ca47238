"""The metrics' pieces: RPC interceptor, endpoint, settings, container counts, backend timing, caches, tickets.

Metrics are process-wide, so every test compares a value before and after what it does.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore import metrics
from dynostore._proto import container_pb2 as pb
from dynostore.client.chunks import ContainerStub
from dynostore.config import build
from dynostore.container import wire
from dynostore.container.backends import MemoryBackend
from dynostore.container.server import ContainerSettings
from dynostore.container.servicer import SERVICE, ContainerServicer, add_to_server
from dynostore.erasure.checksum import checksum
from dynostore.errors import InvalidArgument, NotFound, PermissionDenied
from dynostore.gateway.server import GatewaySettings
from dynostore.metrics.backend import MeasuredBackend
from dynostore.metrics.caches import CacheCollector
from dynostore.metrics.endpoint import MetricsEndpoint, parse_listen
from dynostore.registry.cache import WatchedCache
from dynostore.rpc import CHANNEL_OPTIONS, start_server
from dynostore.tickets import TicketVerifier, sign

KEY = "0123456789abcdef0123456789abcdef"


def value(metric: Any, suffix: str = "", **labels: str) -> float:
    """The value of one sample of ``metric`` (``suffix``: ``_total``, ``_count``...), 0 if it has none yet."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == family.name + suffix and sample.labels == labels:
                return float(sample.value)
    return 0.0


def rpcs(service: str, method: str, code: str) -> float:
    return value(metrics.RPC_REQUESTS, "_total", service=service, method=method, code=code)


# the RPC interceptor --------------------------------------------------------


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"missing":
        raise NotFound("There is no such thing.")
    return request


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    if request == b"missing":
        raise NotFound("There is no such thing.")
    yield b"second"


def _register(server: grpc.aio.Server) -> None:
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Metered", handlers),))


def test_the_interceptor_counts_each_call_once_with_its_final_code() -> None:
    calls = [("Echo", "OK"), ("Echo", "NOT_FOUND"), ("Stream", "OK"), ("Stream", "NOT_FOUND")]
    before = {call: rpcs("test.Metered", *call) for call in calls}
    timed_before = value(metrics.RPC_DURATION, "_count", service="test.Metered", method="Stream", code="NOT_FOUND")

    async def scenario() -> None:
        server, port = await start_server("127.0.0.1:0", _register, ["test.Metered"], metrics=True)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                echo = channel.unary_unary("/test.Metered/Echo")
                stream = channel.unary_stream("/test.Metered/Stream")
                unknown = channel.unary_unary("/test.Metered/Nothing")
                assert await echo(b"x") == b"x"
                assert [m async for m in stream(b"x")] == [b"first", b"second"]
                for call in (echo(b"missing"), unknown(b"x")):
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await call
                    assert caught.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    [m async for m in stream(b"missing")]
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await server.stop(None)

    asyncio.run(scenario())
    assert {call: rpcs("test.Metered", *call) - before[call] for call in calls} == dict.fromkeys(calls, 1)
    assert value(metrics.RPC_DURATION, "_count", service="test.Metered", method="Stream", code="NOT_FOUND") == (
        timed_before + 1
    )
    # A method no servicer defines is not counted: the labels take only the servers' own methods.
    assert rpcs("test.Metered", "Nothing", "UNIMPLEMENTED") == 0


def test_without_metrics_a_server_counts_nothing() -> None:
    before = rpcs("test.Metered", "Echo", "OK")

    async def scenario() -> None:
        server, port = await start_server("127.0.0.1:0", _register, ["test.Metered"])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert await channel.unary_unary("/test.Metered/Echo")(b"x") == b"x"
        finally:
            await server.stop(None)

    asyncio.run(scenario())
    assert rpcs("test.Metered", "Echo", "OK") == before


# the endpoint and its settings ------------------------------------------------


def test_the_endpoint_serves_its_roles_metrics_and_writes_its_address(tmp_path: Path) -> None:
    ready = tmp_path / "metrics.addr"
    endpoint = MetricsEndpoint.start("container", "127.0.0.1:0", ready)
    try:
        assert ready.read_text() == endpoint.address
        assert endpoint.address.startswith("127.0.0.1:")
        assert not endpoint.address.endswith(":0")
        with urllib.request.urlopen(f"http://{endpoint.address}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        endpoint.close()
    assert "# TYPE dynostore_chunk_writes_total counter" in text
    assert "# TYPE dynostore_rpc_duration_seconds histogram" in text
    assert "process_cpu_seconds_total" in text
    assert "dynostore_repair_sweeps" not in text  # a gateway's


@pytest.mark.parametrize("listen", ["9100", "localhost:", ":9100", "host:port", "127.0.0.1:70000"])
def test_a_metrics_address_must_be_host_and_port(listen: str) -> None:
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        parse_listen(listen)
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        build(ContainerSettings, {"gateway": "g:1", "metrics_listen": listen}, "test")
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        build(GatewaySettings, {"metrics_listen": listen}, "test")


def test_metrics_are_off_unless_an_address_is_set(tmp_path: Path) -> None:
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    assert ContainerSettings(gateway="g:1").metrics_listen is None
    assert GatewaySettings().metrics_listen is None
    assert MetricsEndpoint.maybe_start("gateway", None) is None
    settings = build(GatewaySettings, {"metrics_listen": "0.0.0.0:9100", "metrics_ready_file": "m.addr"}, "test")
    assert settings.metrics_listen == "0.0.0.0:9100"
    assert settings.metrics_ready_file == Path("m.addr")
    with pytest.raises(ValueError, match="Unknown role"):
        metrics.register_role("client")


def test_names_follow_the_conventions() -> None:
    names = metrics.exported_names()
    assert names == metrics.exported_names("gateway") | metrics.exported_names("container")
    assert "dynostore_rpc_requests_total" in metrics.exported_names("gateway") & metrics.exported_names("container")
    assert "dynostore_cache_entries" in metrics.exported_names("gateway") - metrics.exported_names("container")
    for name in names:
        assert name.startswith("dynostore_"), name
        assert not name.endswith("_total_total"), name
    counters = {f.name for m in metrics._METRICS.values() for c in m for f in c.describe() if f.type == "counter"}
    assert {f"{name}_total" for name in counters} <= names


# the container: chunk counts, checksum failures, tickets, backend timing -------


def _verifier_and_mint() -> tuple[TicketVerifier, Callable[[str, str], str]]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    verifier = TicketVerifier()
    verifier.set_keys({"k1": public})
    return verifier, lambda key, op: sign(private, "k1", key, op, 60)


def test_a_container_counts_chunks_bytes_checksum_failures_and_ticket_rejections() -> None:
    watched = {
        "written": (metrics.CHUNK_BYTES_WRITTEN, "_total", {}),
        "read": (metrics.CHUNK_BYTES_READ, "_total", {}),
        "writes ok": (metrics.CHUNK_WRITES, "_total", {"code": "OK"}),
        "writes corrupt": (metrics.CHUNK_WRITES, "_total", {"code": "DATA_LOSS"}),
        "writes denied": (metrics.CHUNK_WRITES, "_total", {"code": "PERMISSION_DENIED"}),
        "reads ok": (metrics.CHUNK_READS, "_total", {"code": "OK"}),
        "reads missing": (metrics.CHUNK_READS, "_total", {"code": "NOT_FOUND"}),
        "arrival": (metrics.CHECKSUM_FAILURES, "_total", {"source": "arrival"}),
        "wrong op": (metrics.TICKET_REJECTIONS, "_total", {"reason": "wrong_operation"}),
        "backend writes": (metrics.BACKEND_DURATION, "_count", {"operation": "write"}),
        "backend reads": (metrics.BACKEND_DURATION, "_count", {"operation": "read"}),
    }
    before = {name: value(metric, suffix, **labels) for name, (metric, suffix, labels) in watched.items()}

    async def scenario() -> None:
        verifier, mint = _verifier_and_mint()
        backend = MeasuredBackend(MemoryBackend())
        servicer = ContainerServicer(backend, "c-1", "site", verifier)
        server, port = await start_server("127.0.0.1:0", lambda s: add_to_server(servicer, s), [SERVICE], metrics=True)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                stub = ContainerStub(channel)

                def put(index: int, ticket: str, fragments: list[tuple[bytes, int]]) -> Any:
                    async def messages() -> AsyncIterator[pb.PutChunkRequest | bytes]:
                        yield pb.PutChunkRequest(header=pb.ChunkHeader(key=KEY, index=index, ticket=ticket))
                        for data, crc in fragments:
                            yield wire.encode_put_fragment(data, crc)

                    return stub.PutChunk(messages())

                await put(0, mint(KEY, "write"), [(b"good", checksum(b"good")), (b"data", checksum(b"data"))])
                for index, ticket, fragments in (
                    (1, mint(KEY, "write"), [(b"evil", checksum(b"good"))]),
                    (2, mint(KEY, "read"), []),
                ):
                    with pytest.raises(grpc.aio.AioRpcError):
                        await put(index, ticket, fragments)
                read = pb.ReadChunksRequest(
                    chunks=[pb.ChunkHeader(key=KEY, index=i, ticket=mint(KEY, "read"), quiet=True) for i in (0, 5)]
                )
                reply = await stub.ReadChunks(read)
                assert [bytes(f.data) for f in reply.results[0].fragments] == [b"good", b"data"]
                assert reply.results[1].status.code == grpc.StatusCode.NOT_FOUND.value[0]
        finally:
            await server.stop(None)

    asyncio.run(scenario())
    after = {name: value(metric, suffix, **labels) - before[name] for name, (metric, suffix, labels) in watched.items()}
    assert after == {
        "written": 8,
        "read": 8,
        "writes ok": 1,
        "writes corrupt": 1,
        "writes denied": 1,
        "reads ok": 1,
        "reads missing": 1,
        "arrival": 1,
        "wrong op": 1,
        "backend writes": 1,  # the committed one; aborted writes are not timed
        "backend reads": 1,  # the chunk that is not stored has no time in the backend to show
    }


def test_every_kind_of_refused_ticket_is_counted_under_its_reason() -> None:
    verifier, mint = _verifier_and_mint()
    good = mint(KEY, "read")
    cases = {
        "missing": "",
        "malformed": "not-a-ticket",
        "unknown_key": "k9" + good[2:],
        "wrong_operation": mint(KEY, "write"),
        "bad_signature": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
    }
    for reason, ticket in cases.items():
        before = value(metrics.TICKET_REJECTIONS, "_total", reason=reason)
        with pytest.raises(PermissionDenied):
            verifier.check(ticket, KEY, "read")
        assert value(metrics.TICKET_REJECTIONS, "_total", reason=reason) == before + 1, reason
    before = value(metrics.TICKET_REJECTIONS, "_total", reason="not_registered")
    with pytest.raises(Exception, match="not registered"):
        TicketVerifier().check(good, KEY, "read")
    assert value(metrics.TICKET_REJECTIONS, "_total", reason="not_registered") == before + 1


def test_the_measured_backend_times_deletes_and_reports_usage() -> None:
    backend = MeasuredBackend(MemoryBackend(capacity_bytes=1000))
    deletes = value(metrics.BACKEND_DURATION, "_count", operation="delete")
    errors = value(metrics.BACKEND_ERRORS, "_total", operation="read")

    async def scenario() -> None:
        writer = await backend.open_writer(KEY, 0)
        await writer.write(b"12345", checksum(b"12345"))
        await writer.commit()
        usage = await backend.usage()
        assert value(metrics.CAPACITY) == usage.capacity_bytes == 1000
        assert value(metrics.FREE) == usage.free_bytes
        assert value(metrics.CHUNKS_STORED) == usage.chunks == 1
        assert await backend.exists(KEY, 0)
        assert await backend.delete(KEY, 0)
        with pytest.raises(NotFound):
            [f async for f in backend.read(KEY, 0)]

    asyncio.run(scenario())
    assert value(metrics.BACKEND_DURATION, "_count", operation="delete") == deletes + 1
    assert value(metrics.BACKEND_ERRORS, "_total", operation="read") == errors  # a chunk not stored is no error
    assert backend.name == "memory"


# the gateway's caches ----------------------------------------------------------


def test_the_cache_collector_reads_the_caches_at_each_scrape() -> None:
    cache: WatchedCache[str] = WatchedCache(10, "objects")
    collector = CacheCollector([cache])

    def samples() -> dict[tuple[str, tuple[str, ...]], float]:
        return {(s.name, tuple(s.labels.values())): s.value for family in collector.collect() for s in family.samples}

    assert samples()[("dynostore_cache_watching", ("objects",))] == 0
    cache.start(5)
    cache.put("a", "record", 6)
    assert cache.get("a") == "record"
    assert cache.get("b") is None
    assert samples() == {
        ("dynostore_cache_watching", ("objects",)): 1,
        ("dynostore_cache_entries", ("objects",)): 1,
        ("dynostore_cache_lookups_total", ("objects", "hit")): 1,
        ("dynostore_cache_lookups_total", ("objects", "miss")): 1,
    }
    cache.stop()
    assert samples()[("dynostore_cache_entries", ("objects",))] == 0


# the docs and the dashboard stay true --------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
METRIC_NAME = re.compile(r"\bdynostore_[a-z0-9_]+")


def _documented() -> set[str]:
    """The metrics of the table in docs/operations.md#metrics."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\| `(dynostore_[a-z0-9_]+)` \|", section, re.M)}


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    assert _documented() == metrics.exported_names()


def test_the_grafana_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    histograms = {f.name for m in metrics._METRICS.values() for c in m for f in c.describe() if f.type == "histogram"}
    queried = set()
    for expr in exprs:
        for name in METRIC_NAME.findall(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            queried.add(base if base in histograms else name)
    assert queried - metrics.exported_names() == set()
    # The key panels are there: requests, errors, latency, bytes, capacity, repair and scrub progress.
    expected = {
        "dynostore_rpc_requests_total",
        "dynostore_rpc_duration_seconds",
        "dynostore_chunk_written_bytes_total",
        "dynostore_chunk_read_bytes_total",
        "dynostore_container_free_bytes",
        "dynostore_repair_checked_objects_total",
        "dynostore_scrub_checked_chunks_total",
    }
    assert expected <= queried
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
