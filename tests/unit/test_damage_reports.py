"""Damage that reads find reaches the gateway even when it is down for a while, and its absence logs one line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.container import scrubber as scrubber_module
from dynostore.container.backends import Backend
from dynostore.container.backends.fs import FileSystemBackend
from dynostore.container.backends.memory import MemoryBackend
from dynostore.container.scrubber import DamageReporter, Scrubber
from dynostore.erasure.checksum import checksum
from dynostore.local import free_port

KEY = "b" * 32


class Gateway(gateway_pb2_grpc.GatewayServicer):
    """The gateway's ReportDamage: records what it was told."""

    def __init__(self) -> None:
        self.reported: list[tuple[str, int]] = []

    async def ReportDamage(self, request: gateway_pb2.ReportDamageRequest, context: Any) -> Any:
        self.reported += [(c.key, c.index) for c in request.chunks]
        return gateway_pb2.ReportDamageResponse(marked=len(request.chunks))


async def store(backend: Backend, index: int, data: bytes, *, damaged: bool = False) -> None:
    """Store chunk ``index`` of ``KEY``: one fragment, whose checksum fails if ``damaged``."""
    writer = await backend.open_writer(KEY, index)
    await writer.write(data, checksum(data) ^ damaged)
    await writer.commit()


async def until(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def serve(port: int, gateway: Gateway, then: Callable[[], Awaitable[None]]) -> None:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(gateway, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        await then()
    finally:
        await server.stop(None)


def test_damage_noted_while_the_gateway_is_down_is_reported_once_it_is_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(scrubber_module, "REPORT_DELAY", 0.05)
    port = free_port()
    backend = MemoryBackend()
    reporter = DamageReporter(backend, "c-1", f"127.0.0.1:{port}", "token", None)
    gateway = Gateway()

    async def scenario() -> None:
        await store(backend, 3, b"rotten", damaged=True)
        reporter.note(KEY, 3)  # a read found it damaged
        running = asyncio.ensure_future(reporter.run())
        try:
            # Nothing listens at the gateway's address: the report fails, and the chunk waits for the next round.
            assert await until(lambda: "Reporting 1 damaged chunk(s)" in caplog.text)
            assert reporter._noted == {(KEY, 3)}
            assert await backend.exists(KEY, 3)  # not reported: not deleted either

            async def reported() -> None:
                assert await until(lambda: gateway.reported == [(KEY, 3)])
                assert await until(lambda: not reporter._noted)

            await serve(port, gateway, reported)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert not await backend.exists(KEY, 3)  # reported, then the worthless copy went

    with caplog.at_level(logging.WARNING, logger=scrubber_module.__name__):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if "Reporting" in r.getMessage()]
    assert failures
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in failures)
    assert "UNAVAILABLE" in failures[0].getMessage()
    assert "Traceback" not in caplog.text


def test_a_scrub_that_cannot_reach_the_gateway_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    backend = MemoryBackend()
    scrubber = Scrubber(
        DamageReporter(backend, "c-1", f"127.0.0.1:{free_port()}", "token", None), interval=0.05, gc_grace=600
    )

    async def scenario() -> None:
        writer = await backend.open_writer(KEY, 0)
        await writer.write(b"fine", checksum(b"fine"))
        await writer.commit()
        running = asyncio.ensure_future(scrubber.run())
        try:
            assert await until(lambda: caplog.text.count("Scrub stopped") >= 2)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger=scrubber_module.__name__):
        asyncio.run(scenario())
    stopped = [r for r in caplog.records if "Scrub stopped" in r.getMessage()]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in stopped)
    assert "UNAVAILABLE" in stopped[0].getMessage()
    assert "Traceback" not in caplog.text


class RepairingGateway(Gateway):
    """A gateway during whose ReportDamage a repair rewrites the reported chunks in place, whole."""

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend

    async def ReportDamage(self, request: gateway_pb2.ReportDamageRequest, context: Any) -> Any:
        reply = await super().ReportDamage(request, context)
        for chunk in request.chunks:
            await store(self.backend, chunk.index, b"rebuilt")
        return reply


@pytest.mark.parametrize("backend_kind", ["memory", "fs"])
def test_a_copy_that_a_repair_rewrote_since_its_damage_was_found_is_neither_reported_nor_deleted(
    backend_kind: str, tmp_path: Any
) -> None:
    """Before: a report deleted whatever the container held under the chunk's name, a rebuilt copy too."""
    backend: Backend = MemoryBackend() if backend_kind == "memory" else FileSystemBackend(tmp_path)
    reporter = DamageReporter(backend, "c-1", "127.0.0.1:1", "token", None)

    async def scenario() -> None:
        # Rewritten whole before the report: not reported (the record would call a good copy missing).
        await store(backend, 0, b"rotten", damaged=True)
        await store(backend, 0, b"rebuilt")
        # Damaged, and rewritten while the gateway records the report: reported, and the new copy kept.
        await store(backend, 1, b"rotten", damaged=True)
        # Damaged and gone: reported; the damaged copy deleted.
        await store(backend, 2, b"rotten", damaged=True)
        gateway = RepairingGateway(backend)
        port = free_port()

        async def report() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                await reporter.report(stub, [(KEY, 1)])
                gateway.backend = MemoryBackend()  # no repair from here on
                await reporter.report(stub, [(KEY, 0), (KEY, 2), (KEY, 3)])

        await serve(port, gateway, report)
        assert gateway.reported == [(KEY, 1), (KEY, 2), (KEY, 3)]
        for index in (0, 1):
            assert [bytes(d) async for _, d, _ in backend.read(KEY, index)] == [b"rebuilt"]
        assert not await backend.exists(KEY, 2)

    asyncio.run(scenario())
