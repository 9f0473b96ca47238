"""The benchmarks' own tools work: the idle gRPC server that measures the floor of a call."""

from __future__ import annotations

from pathlib import Path

from bench.common import grpc_floor_rate, idle_grpc_server, rate


def test_the_idle_server_answers_and_stops(tmp_path: Path) -> None:
    with idle_grpc_server(tmp_path) as address:
        assert address.startswith("127.0.0.1:")
        assert grpc_floor_rate(address, 20) > 0
    assert "Traceback" not in (tmp_path / "idle-server.log").read_text()


def test_rate_counts_calls_in_sequence_and_from_threads() -> None:
    calls: list[int] = []
    assert rate(lambda: calls.append(1), 50) > 0
    assert rate(lambda: calls.append(1), 50, threads=4) > 0
    assert len(calls) == 100
