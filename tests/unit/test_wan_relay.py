"""The WAN simulation's delay relay: its delay line's arithmetic, and bytes forwarded whole and in order."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import pytest

from dynostore import wan
from dynostore.local import free_port
from dynostore.wan import MIN_RTO, PACKET_BYTES, DelayLine, Site, Wan


def control(path: Path, rtt: float, jitter: float = 0.0, loss: float = 0.0) -> Path:
    path.write_text(json.dumps({"rtt": rtt, "jitter": jitter, "loss": loss}))
    return path


def test_a_read_travels_half_the_round_trip(tmp_path: Path) -> None:
    line = DelayLine(control(tmp_path / "c.json", rtt=0.1))
    assert line.latency() == pytest.approx(0.05)
    assert line.transmit(10 << 20) == 0  # no loss: the line never holds up


def test_jitter_stays_within_half_either_way(tmp_path: Path) -> None:
    random.seed(3)
    line = DelayLine(control(tmp_path / "c.json", rtt=0.1, jitter=0.04))
    delays = [line.latency() for _ in range(500)]
    assert min(delays) >= 0.03 - 1e-9
    assert max(delays) <= 0.07 + 1e-9
    assert max(delays) - min(delays) > 0.02


def test_a_lost_packet_costs_a_timeout_in_short_messages_and_a_round_trip_in_long_ones(tmp_path: Path) -> None:
    line = DelayLine(control(tmp_path / "c.json", rtt=0.1, loss=1.0))
    steady = PACKET_BYTES / 0.1 * 1.22  # bytes per second TCP keeps up at this loss and round trip
    assert line.transmit(1000) == pytest.approx(1000 / steady + MIN_RTO)
    assert line.transmit(100 * PACKET_BYTES) == pytest.approx(100 * PACKET_BYTES / steady + 0.1)
    slow = DelayLine(control(tmp_path / "slow.json", rtt=0.5, loss=1.0))
    assert slow.transmit(1) == pytest.approx(1 / (PACKET_BYTES / 0.5 * 1.22) + 0.5)  # a timeout is at least an RTT


def test_loss_caps_throughput_and_hits_large_reads_more_often(tmp_path: Path) -> None:
    random.seed(4)
    line = DelayLine(control(tmp_path / "c.json", rtt=0.02, loss=0.05))
    one = PACKET_BYTES / (PACKET_BYTES / 0.02 * 1.22 / 0.05**0.5)  # a packet's share of the capped rate
    small = sum(line.transmit(PACKET_BYTES) > one + 1e-9 for _ in range(2000))
    large = sum(line.transmit(64 * PACKET_BYTES) > 64 * one + 1e-9 for _ in range(2000))
    assert 40 < small < 200  # about 5% of one-packet reads
    assert large > 1900  # nearly every read of 64 packets
    rate = 2000 * 64 * PACKET_BYTES / sum(line.transmit(64 * PACKET_BYTES) for _ in range(2000))
    assert rate < PACKET_BYTES / 0.02 * 1.22 / 0.05**0.5  # below the steady rate: the stalls cost more


def test_settings_follow_the_file_and_a_bad_file_keeps_the_last(tmp_path: Path) -> None:
    path = control(tmp_path / "c.json", rtt=0.1)
    line = DelayLine(path)
    control(path, rtt=0.3)
    os.utime(path, (1, 1))  # a new modification time, however coarse the clock
    line.reload()
    assert line.rtt == pytest.approx(0.3)
    path.write_text("not json")
    os.utime(path, (2, 2))
    line.reload()
    assert line.rtt == pytest.approx(0.3)


def test_the_relay_forwards_every_byte_in_order_despite_jitter(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        target = await asyncio.start_server(echo, "127.0.0.1", 0)
        target_port = target.sockets[0].getsockname()[1]
        listen = f"127.0.0.1:{free_port()}"
        ready = tmp_path / "ready"
        settings = control(tmp_path / "c.json", rtt=0.02, jitter=0.02)
        relay = asyncio.create_task(wan.relay(listen, f"127.0.0.1:{target_port}", settings, ready))
        try:
            for _ in range(1000):  # up to 10 s for the relay to listen
                if ready.exists():
                    break
                await asyncio.sleep(0.01)
            host, port = listen.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            for number in range(200):
                writer.write(number.to_bytes(2, "big") * 50)
                await writer.drain()
                await asyncio.sleep(0)
            writer.write_eof()
            received = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            return received
        finally:
            relay.cancel()
            target.close()

    received = asyncio.run(scenario())
    assert received == b"".join(number.to_bytes(2, "big") * 50 for number in range(200))


def test_a_topology_refuses_nameless_or_repeated_sites() -> None:
    with pytest.raises(ValueError, match="name of its own"):
        Wan([Site("a"), Site("a")])
    with pytest.raises(ValueError, match="impairment"):
        Wan([Site("a")], impairment="tc")


def test_a_fabric_needs_a_started_topology_and_no_tls_or_metrics() -> None:
    topology = Wan([Site("a")])
    with pytest.raises(RuntimeError, match="Start the WAN first"):
        topology.fabric()
    topology.mode = "relay"  # as if started (nothing is started by these calls)
    with pytest.raises(ValueError, match="not available across the simulated WAN"):
        topology.fabric(tls=True)
    with pytest.raises(ValueError, match="not available across the simulated WAN"):
        topology.fabric(metrics=True)
