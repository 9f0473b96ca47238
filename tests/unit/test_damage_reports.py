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
        writer = await backend.open_writer(KEY, 3)
        await writer.write(b"rotten", checksum(b"rotten"))
        await writer.commit()
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
