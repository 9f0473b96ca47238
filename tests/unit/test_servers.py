"""Servers refuse a port that is in use, instead of sharing it (gRPC's default SO_REUSEPORT would)."""

from __future__ import annotations

import asyncio

import pytest

from dynostore.rpc.servers import start_server


def test_a_second_server_on_a_port_in_use_fails() -> None:
    async def scenario() -> None:
        first, port = await start_server("127.0.0.1:0", lambda server: None, [])
        try:
            with pytest.raises((OSError, RuntimeError)):  # gRPC raises RuntimeError("Failed to bind ...")
                await start_server(f"127.0.0.1:{port}", lambda server: None, [])
        finally:
            await first.stop(None)
        again, same = await start_server(f"127.0.0.1:{port}", lambda server: None, [])  # free again: taken
        assert same == port
        await again.stop(None)

    asyncio.run(scenario())
