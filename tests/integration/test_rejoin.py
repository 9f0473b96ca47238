"""A gateway that starts while the containers' leases are gone waits for them to register again.

That is the fabric after a gateway outage longer than the container lease:
etcd no longer lists any container until each one's next heartbeat finds its
lease gone and registers again. Puts must not fail (``ResourceExhausted``),
and gets of intact objects must not fail, in the meantime.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from dynostore.client import Client
from dynostore.local import LocalFabric, ManagedProcess


def forget_containers(fabric: LocalFabric) -> None:
    """Drop every membership record, as leases that ran out do."""

    async def drop() -> None:
        async with fabric.etcd_client() as etcd:
            await etcd.delete_prefix(b"/dynostore/v1/containers/")

    asyncio.run(drop())


def test_puts_and_gets_wait_for_containers_after_a_gateway_start(tmp_path: Path) -> None:
    with LocalFabric(containers=5, root=tmp_path / "fabric") as fabric:
        token = fabric.create_user("rejoin")
        with fabric.client() as client:
            objects = {}
            for size in (100_000, 3 * 1024 * 1024):
                data = os.urandom(size)
                objects[client.put(data=data, token_user=token, catalog="c")] = data
        ready = tmp_path / "gateway2.addr"
        gateway = ManagedProcess(
            "gateway2",
            [sys.executable, "-m", "dynostore", "gateway", *fabric.etcd_args,
             "--listen", "127.0.0.1:0", "--ready-file", str(ready)],
            tmp_path / "gateway2.log",
        )  # fmt: skip
        gateway.start()
        try:
            address = gateway.wait_for_file(ready)
            forget_containers(fabric)
            with Client(address) as fresh:
                for key, data in objects.items():
                    assert fresh.get(key=key, token_user=token) == data
                forget_containers(fabric)
                key = fresh.put(data=b"x" * 50_000, token_user=token, catalog="c")
                assert len({c.container_id for c in fresh.stat(key=key, token_user=token).chunks}) == 5
        finally:
            gateway.stop()
