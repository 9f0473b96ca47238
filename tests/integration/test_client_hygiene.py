"""The client leaves nothing behind: no pending task, no unclosed generator, no closed-loop warning.

Reads that switch to parity (a corrupt chunk, a frozen container whose reads
time out), repairs and relayed reads run in a child interpreter in asyncio's
debug mode; its standard error must hold none of the warnings asyncio and
Python print for tasks and generators that were abandoned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from dynostore.local import LocalFabric

MiB = 1024 * 1024

SCENARIO = """
import os, signal, sys
from dynostore.client import Client

gateway, token, frozen, *keys = sys.argv[1:]
with Client(gateway, relay=True) as relayed:  # the gateway reads around the corrupt chunks
    for key in keys:
        relayed.get(key=key, token_user=token)
client = Client(gateway, fragment_timeout=1.0)
client.get_batch(keys, token_user=token)  # connected to every container: reads then time out mid-call
os.kill(int(frozen), signal.SIGSTOP)
try:
    for key in keys:
        client.get(key=key, token_user=token)
    client.get_batch(keys, token_user=token)
    for key in keys:
        client.repair(key, token_user=token, verify=True)
finally:
    os.kill(int(frozen), signal.SIGCONT)
client.close()
print("scenario done")
"""

ABANDONED = (
    "Task was destroyed but it is pending",
    "asynchronous generator is already running",
    "Event loop is closed",
    "was never awaited",
    "Task exception was never retrieved",
    "Unclosed",
)


def test_reads_and_repairs_around_damage_leave_nothing_pending(tmp_path: Path) -> None:
    with LocalFabric(containers=5, root=tmp_path / "fabric") as fabric:
        token = fabric.create_user("tidy")
        with fabric.client() as client:
            keys = [client.put(data=os.urandom(size), token_user=token, catalog="c") for size in (200_000, 5 * MiB)]
            by_id = {c.container_id: c for c in fabric.containers}
            frozen = by_id[client.stat(key=keys[-1], token_user=token).chunks[0].container_id]
        for key in keys:  # a data chunk that is not on the frozen container fails its checksum
            chunk = next(
                p
                for c in fabric.containers
                if c is not frozen
                for p in (c.root / "data" / "chunks").rglob(f"{key}.[12]")
            )
            raw = bytearray(chunk.read_bytes())
            raw[len(raw) // 2] ^= 0x55
            chunk.write_bytes(bytes(raw))
        assert frozen.pid is not None
        try:
            env = {**os.environ, "PYTHONASYNCIODEBUG": "1", "PYTHONWARNINGS": "default"}
            result = subprocess.run(
                [sys.executable, "-X", "dev", "-c", SCENARIO, fabric.gateway, token, str(frozen.pid), *keys],
                capture_output=True,
                text=True,
                timeout=180,
                env=env,
            )
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scenario done" in result.stdout
    found = [line for line in result.stderr.splitlines() if any(a in line for a in ABANDONED)]
    assert found == [], result.stderr[-3000:]
