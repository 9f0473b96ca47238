"""The words `dynostore status` and `dynostore repair` print for people."""

from __future__ import annotations

from dataclasses import replace

from dynostore.cli.commands import repair_progress
from dynostore.client.status import (
    ContainerStatus,
    EtcdMemberStatus,
    FabricStatus,
    GatewayStatus,
    MoveStatus,
    RepairStatus,
)
from dynostore.web.fabric import fabric_html

NOW = 1_000_000.0


def _container(cid: str, up: bool) -> ContainerStatus:
    return ContainerStatus(
        id=cid,
        address="10.0.0.1:9000",
        site="lab",
        backend="fs",
        up=up,
        capacity_bytes=4 << 30,
        free_bytes=1 << 30,
        chunk_count=7,
        registered=NOW - 7200,
        last_seen=NOW - 90,
        last_scrub=0.0,
    )


def _status(running: bool, degraded: int = 0, down: bool = False) -> FabricStatus:
    repair = RepairStatus(
        running=running,
        gateway="gw:8095",
        started=NOW - 100,
        finished=0.0 if running else NOW - 10,
        objects_checked=250,
        objects_total=1000,
        degraded_objects=degraded,
        chunks_rebuilt=3,
        unrepaired_objects=0,
        bytes_repaired=0,
    )
    return FabricStatus(
        gateways=[GatewayStatus("gw:8095", NOW - 60, "0.1.0")],
        etcd_members=[
            EtcdMemberStatus("e1:2379", True, True, 1 << 20),
            EtcdMemberStatus("e2:2379", False, False, 0, "refused"),
        ],
        containers=[_container("c-1", True), _container("c-2", not down)],
        objects=1000,
        bytes=5 << 20,
        repair=repair,
    )


def test_a_running_sweep_shows_its_progress_and_an_estimate() -> None:
    text = _status(running=True).describe(NOW)
    # 250 of 1000 objects in 100 s: 750 left at 2.5 objects/s
    assert "250/1000 objects checked, about 5 min left" in text
    assert "etcd members (1/2 healthy)" in text
    assert "DOWN: refused" in text
    assert "fabric: DEGRADED" in text


def test_a_container_down_says_when_it_was_last_seen() -> None:
    status = _status(running=False, down=True)
    text = status.describe(NOW)
    assert "containers (1/2 up)" in text
    assert "DOWN, last seen 2 min ago" in text
    assert "up 2 h" in text
    assert "last sweep 10 s ago by gw:8095: 250 objects checked, 0 degraded" in text
    assert status.capacity_bytes == 4 << 30  # only the container up counts
    assert status.to_json()["healthy"] is False


def testrepair_progress_line() -> None:
    line = repair_progress(5, 20, 50e6, 200e6, 10.0)
    assert line == "repair: 5/20 objects, 50.0/200.0 MB, 5.0 MB/s, about 30 s left"


def test_the_web_fabric_page_shows_drains_and_rebalancing() -> None:
    drain = MoveStatus("c-2", active=True, running=True, started=NOW - 10, updated=NOW, objects_moved=4,
                       chunks_moved=4, bytes_moved=40 << 20, chunks_left=6, bytes_left=60 << 20)  # fmt: skip
    status = _status(running=False)
    status = replace(
        status,
        containers=[status.containers[0], replace(status.containers[1], draining=True, drain=drain)],
        rebalance=MoveStatus(done=True, started=NOW - 50, finished=NOW - 5, chunks_moved=9),
    )
    page = fabric_html(status, NOW)
    assert page.count('class="drain"') == 1
    assert "DRAINING: running: 4 objects, 4 chunks, 40.0 MiB moved" in page
    assert '<p id="rebalance">Rebalance: done: 0 objects, 9 chunks' in page
    assert 'class="drain"' not in fabric_html(_status(running=False), NOW)  # no drain, no line
