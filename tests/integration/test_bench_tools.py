"""The benchmarks' own tools work: the idle gRPC server, rate(), size parsing, and each script's main()."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench import common
from bench.common import grpc_floor_rate, idle_grpc_server, label, parse_size, rate


def test_the_idle_server_answers_and_stops(tmp_path: Path) -> None:
    with idle_grpc_server(tmp_path) as address:
        assert address.startswith("127.0.0.1:")
        assert grpc_floor_rate(address, 20) > 0
    assert "Traceback" not in (tmp_path / "idle-server.log").read_text()


class FakeClock:
    """perf_counter that moves only when a call under test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_calls_over_elapsed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(common.time, "perf_counter", clock)

    lock = threading.Lock()

    def call() -> None:  # each call takes 20 ms of the fake clock
        with lock:
            clock.now += 0.02

    assert rate(call, 50) == pytest.approx(50.0)
    assert rate(call, 50, threads=4) == pytest.approx(50.0)  # the clock adds up every thread's time


def test_sizes_parse_and_label_both_ways() -> None:
    assert [parse_size(s) for s in ("1K", "64M", "2g", "1000")] == [1024, 64 << 20, 2 << 30, 1000]
    assert [label(n) for n in (1024, 64 << 20, 1000, 1536)] == ["1 KiB", "64 MiB", "1000 B", "1536 B"]


@pytest.mark.parametrize(
    ("script", "args", "row"),
    [
        ("bench.bench_fabric", ["--sizes", "1K,2M", "--repeat", "1", "--small", "10"], "| 2 MiB |"),
        ("bench.bench_backends", ["--backends", "fs", "--size", "256K", "--repeat", "1"], "| fs |"),
        ("bench.bench_metrics", ["--count", "10", "--repeat", "2", "--containers", "1"], "| 1 KiB put |"),
        ("bench.bench_hedging", ["--sizes", "64K,4M", "--repeat", "2"], "| 4 MiB |"),
        ("bench.bench_page_cache", ["--size", "99K", "--files", "2", "--rounds", "1"], "| 1 | buffered | 2 |"),
        ("bench.bench_moves", ["--objects", "4", "--size", "64K"], "| rebalance |"),
        ("bench.bench_cpu", ["--sizes", "1K,64K", "--count", "5"], "| 64 KiB | get |"),
        ("bench.bench_cpu", ["--sizes", "1K", "--count", "20", "--threads", "4"], "| 1 KiB | put |"),
        ("bench.bench_cpu", ["--sizes", "64K", "--count", "3", "--door"], "| 64 KiB | put |"),
        (
            "bench.bench_coalesce",
            ["--count", "20", "--rounds", "1", "--sizes", "1K", "--threads", "4"],
            "| put | 1 KiB |",
        ),
        (
            "bench.bench_workers",
            ["--count", "8", "--rounds", "1", "--sizes", "1K", "--processes", "1", "--clients", "2", "--threads", "2"],
            "| get | 1 KiB |",
        ),
        (
            "bench.bench_workers",
            ["--server", "container", "--count", "4", "--rounds", "1", "--sizes", "64K", "--processes", "1"],
            "| put | 64 KiB |",
        ),
        (
            "bench.bench_s3",
            ["--sizes", "1K", "--count", "5", "--multipart", "9M", "--repeat", "1", "--targets", "door,door2,moto,sdk"],
            "| multipart put 9 MiB | door2 |",
        ),
    ],
)
def test_benchmark_scripts_run_on_tiny_sizes(script: str, args: list[str], row: str, tmp_path: Path) -> None:
    """Each script's main() runs end to end and prints its table (figures are not checked: no timing)."""
    result = subprocess.run(
        [sys.executable, "-m", script, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "BENCH_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert row in result.stdout, result.stdout
    assert "Traceback" not in result.stderr
