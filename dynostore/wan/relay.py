"""The userspace delay relay of a simulated WAN site, where the kernel has no ``sch_netem``.

``python -m dynostore.wan relay LISTEN TARGET CONTROL [READY]`` runs one, in
front of a site's container: each direction of every TCP connection is
delayed by half the round trip (plus or minus half the jitter, order kept),
with TCP's steady rate under the site's loss (see :meth:`DelayLine.transmit`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path

log = logging.getLogger(__name__)

# TCP's payload per packet, for the relay's loss approximation.
PACKET_BYTES = 1448
# Linux's minimum retransmission timeout: what a lost packet costs at least.
MIN_RTO = 0.2
# Bytes the relay reads at once, and reads it holds per direction (its buffer, bounding its memory).
RELAY_READ = 256 * 1024
RELAY_QUEUE = 256


class DelayLine:
    """One direction's delay, jitter and loss, read again from the control file when it changes."""

    def __init__(self, control: Path) -> None:
        """Follow the settings in ``control`` (JSON: ``rtt`` and ``jitter`` in seconds, ``loss`` 0-1)."""
        self.control = control
        self.rtt = self.jitter = self.loss = 0.0
        self._mtime = 0.0
        self.reload()

    def reload(self) -> None:
        """Read the settings again if the file changed (a bad or missing file keeps the last ones)."""
        try:
            mtime = self.control.stat().st_mtime
            if mtime == self._mtime:
                return
            settings = json.loads(self.control.read_text())
            self.rtt, self.jitter, self.loss = (float(settings[k]) for k in ("rtt", "jitter", "loss"))
            self._mtime = mtime
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("Relay keeps its settings; %s is unreadable: %s", self.control, exc)

    def latency(self) -> float:
        """How long a read travels: half the round trip, plus or minus half the jitter."""
        return max(0.0, self.rtt / 2 + random.uniform(-self.jitter / 2, self.jitter / 2))

    def transmit(self, size: int) -> float:
        """How long a read of ``size`` bytes holds the line up (0 without loss), as TCP would feel the loss.

        With loss ``p``, the line carries at most TCP's steady rate under
        that loss (Mathis et al.: MSS / RTT x 1.22 / sqrt(p), the round trip
        taken as at least 1 ms); a read with a packet lost (probability
        1 - (1 - p) ^ packets) stalls the line by one round trip (fast
        retransmit), or by the retransmission timeout (at least 200 ms) when
        it is shorter than 4 packets (too few for duplicate acknowledgements).
        """
        if not self.loss:
            return 0.0
        packets = math.ceil(size / PACKET_BYTES)
        rtt = max(self.rtt, 0.001)
        seconds = size / (PACKET_BYTES / rtt * 1.22 / math.sqrt(self.loss))
        if random.random() < 1 - (1 - self.loss) ** packets:
            seconds += max(MIN_RTO, self.rtt) if packets < 4 else rtt
        return seconds


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: DelayLine) -> None:
    """Copy ``reader`` to ``writer``, each read held back by the line's delay, in order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(RELAY_QUEUE)

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        # When the line is free again (loss holds it up), and when the last read is due (order kept).
        free = last = 0.0
        while data := await reader.read(RELAY_READ):
            free = max(free, time.monotonic()) + line.transmit(len(data))
            last = max(last, free + line.latency())
            await queue.put((last, data))
            if sender.done():
                break
        await queue.put((0.0, b""))
        await sender
    finally:
        sender.cancel()


async def relay(listen: str, target: str, control: Path, ready: Path | None = None) -> None:
    """Serve ``listen``, forwarding each connection to ``target`` through delay lines that follow ``control``."""
    line = DelayLine(control)
    target_host, target_port = target.rsplit(":", 1)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, int(target_port))
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_forward(reader, up_writer, line), _forward(up_reader, writer, line))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(connection, host, int(port), reuse_address=True)
    if ready is not None:
        await asyncio.to_thread(ready.write_text, listen)
    async with server:
        while True:
            await asyncio.sleep(0.1)
            line.reload()


def main(argv: list[str] | None = None) -> None:
    """``python -m dynostore.wan relay LISTEN TARGET CONTROL [READY]``: the relay a :class:`Wan` runs per site."""
    parser = argparse.ArgumentParser(prog="python -m dynostore.wan")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("relay", help="a delay relay (what a Wan starts in each site's namespace)")
    run.add_argument("listen", help="HOST:PORT to serve on")
    run.add_argument("target", help="HOST:PORT to forward to")
    run.add_argument("control", type=Path, help="JSON settings file: rtt, jitter (seconds), loss (0-1)")
    run.add_argument("ready", type=Path, nargs="?", help="file to write once listening")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(relay(args.listen, args.target, args.control, args.ready))
