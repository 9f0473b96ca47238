"""`dynostore status` and Client.status(): the fabric at a glance, against a real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dynostore.local import ContainerSpec, LocalFabric
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration


def comes_true(check: Callable[[], None], within: float) -> None:
    """Wait until ``check`` passes its asserts (within ``within`` s); else fail with its last assertion."""

    def passes() -> bool:
        try:
            check()
        except AssertionError:
            return False
        return True

    if not eventually(passes, within=within):
        check()


def test_status_reports_gateways_members_containers_totals_and_repair(tmp_path: Path) -> None:
    specs = [ContainerSpec(settings={"scrub_interval": 1}) for _ in range(5)]
    with (
        LocalFabric(
            specs,
            root=tmp_path / "fabric",
            etcd_members=3,
            gateways=2,
            repair_interval=1,
            gateway_args=["--container-ttl", "3"],
        ) as fabric,
        fabric.client() as client,
    ):
        token = fabric.admin_token
        sizes = [10_000, 250_000, 1_000_000]
        for size in sizes:
            client.put(data=os.urandom(size), token_user=token, catalog="status")

        def settled() -> None:
            status = client.status(token_user=token)
            assert sorted(g.address for g in status.gateways) == sorted(fabric.gateway_addresses)
            assert all(m.healthy for m in status.etcd_members), status.etcd_members
            assert sum(m.leader for m in status.etcd_members) == 1
            assert [c.up for c in status.containers] == [True] * 5
            # each object is 5 chunks (k=3, m=2), one per container
            assert sum(c.chunk_count for c in status.containers) == 5 * len(sizes)
            assert all(c.last_scrub > 0 and c.capacity_bytes > 0 for c in status.containers)
            assert status.repair.finished >= status.repair.started > 0
            assert status.repair.objects_checked == len(sizes)
            assert (status.objects, status.bytes) == (len(sizes), sum(sizes))
            assert status.healthy

        comes_true(settled, within=30)
        repair = subprocess.run(
            [sys.executable, "-m", "dynostore", "repair", "--catalog", "status", "--gateway", fabric.gateway],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DYNOSTORE_TOKEN": token},
        )
        assert repair.returncode == 0, repair.stderr
        assert "3 object(s) checked, 0 chunk(s) rebuilt, 0 object(s) not repaired" in repair.stdout

        down = fabric.containers[1]
        down.stop()
        fabric.etcd_members[2].stop()

        def noticed() -> None:
            status = client.status(token_user=token)
            gone = [c for c in status.containers if not c.up]
            assert [c.id for c in gone] == [down.container_id]
            assert gone[0].last_seen > 0
            assert gone[0].chunk_count == len(sizes)
            members = {m.endpoint: m for m in status.etcd_members}
            assert not members[fabric.etcd_members[2].address].healthy
            assert members[fabric.etcd_members[2].address].error
            assert not status.healthy

        comes_true(noticed, within=30)

        cli = subprocess.run(
            [sys.executable, "-m", "dynostore", "status", "--gateway", fabric.gateway, "--token", token],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert "fabric: DEGRADED" in cli.stdout
        assert "you (admin):" in cli.stdout
        assert "3 of unlimited objects" in cli.stdout  # what its objects take of its quota
        assert "containers (4/5 up)" in cli.stdout
        assert "etcd members (2/3 healthy)" in cli.stdout
        assert f"{down.container_id}" in cli.stdout
        assert "DOWN, last seen" in cli.stdout
        as_json = subprocess.run(
            [sys.executable, "-m", "dynostore", "status", "--json", "--gateway", fabric.gateway, "--token", token],
            capture_output=True,
            text=True,
            timeout=60,
        )
        report = json.loads(as_json.stdout)
        assert report["healthy"] is False
        assert report["you"]["name"] == "admin"
        assert report["objects"] == len(sizes)
        assert len(report["containers"]) == 5
        assert len(report["gateways"]) == 2
