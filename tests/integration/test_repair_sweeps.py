"""The gateway's repair sweeps against a real etcd: the grace they give a restarting container, their lock,
and gateways without an admin token, which sweep nothing.

The sweeps' repairs go to a stand-in pipeline that records what it was asked
to repair: what is tested here is the choice of objects, not the rebuild
(tests/integration/test_repair.py rebuilds for real).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aetcd
import pytest

from dynostore.errors import Unavailable
from dynostore.gateway import repairer as repairer_module
from dynostore.gateway.repairer import Repairer
from dynostore.local import LocalFabric, ManagedProcess
from dynostore.registry import ObjectRecord, Registry, keys
from tests.integration.conftest import eventually

CONTAINERS = [f"c-{i}" for i in range(6)]
GRACE = 600.0


class Recording:
    """A pipeline whose repairs only record the key."""

    def __init__(self) -> None:
        self.repaired: list[str] = []

    async def repair(self, key: str, token: str, progress: Any = None, *, verify: bool = False) -> int:
        self.repaired.append(key)
        return 1


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFabric]:
    with LocalFabric(containers=0, root=tmp_path_factory.mktemp("sweeps")) as fabric:
        yield fabric


def record(chunks: list[tuple[str, bool]]) -> ObjectRecord:
    return ObjectRecord(
        key=uuid.uuid4().hex, owner="alice", catalog="c", name="", size=5000, k=3, m=2, segment_size=3 << 20,
        chunks=chunks,
    )  # fmt: skip


async def register(registry: Registry, container_id: str) -> None:
    await registry.register_container({"id": container_id, "address": "127.0.0.1:1", "site": "s"}, 60)


async def forget(registry: Registry, container_id: str) -> None:
    await registry.etcd.delete(keys.container(container_id))


def test_a_restarting_container_is_spared_for_repair_grace(etcd: LocalFabric, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(repairer_module.time, "monotonic", clock)

    async def scenario() -> None:
        registry = Registry(etcd.etcd_address)
        try:
            for cid in CONTAINERS[:5]:
                await register(registry, cid)
            healthy = record([(cid, True) for cid in CONTAINERS[:5]])
            missing = record([(cid, i != 3) for i, cid in enumerate(CONTAINERS[:5])])  # chunk 3 recorded missing
            await registry.commit([healthy, missing])
            pipeline = Recording()
            sweeps = Repairer(registry, pipeline, "admin", interval=60, grace=GRACE)  # type: ignore[arg-type]
            await sweeps.sweep()
            assert pipeline.repaired == [missing.key]  # recorded missing: repaired at once
            await forget(registry, CONTAINERS[0])  # its lease ran out: restarting, or gone for good?
            clock.now += GRACE - 1
            pipeline.repaired.clear()
            await sweeps.sweep()
            assert pipeline.repaired == [missing.key]  # the healthy object waits for its container
            clock.now += 2
            pipeline.repaired.clear()
            await sweeps.sweep()
            assert sorted(pipeline.repaired) == sorted([healthy.key, missing.key])  # gone past the grace
            await register(registry, CONTAINERS[0])  # back: nothing of it is due any more
            pipeline.repaired.clear()
            await sweeps.sweep()
            assert pipeline.repaired == [missing.key]
            await registry.etcd.delete_prefix(keys.objects_prefix())
        finally:
            await registry.close()

    asyncio.run(scenario())


def test_one_sweep_at_a_time_across_gateways(etcd: LocalFabric) -> None:
    async def scenario() -> None:
        registry = Registry(etcd.etcd_address)
        try:
            await register(registry, CONTAINERS[0])
            missing = record([(CONTAINERS[0], False)] + [(cid, True) for cid in CONTAINERS[1:5]])
            await registry.commit([missing])
            pipeline = Recording()
            sweeps = Repairer(registry, pipeline, "admin", interval=60, grace=GRACE)  # type: ignore[arg-type]
            other_gateway = registry.etcd.lock(keys.repair_lock(), ttl=60)
            assert await other_gateway.acquire(timeout=5)
            try:
                assert await sweeps.sweep() == (0, 0)  # another gateway is sweeping: this one skips
                assert pipeline.repaired == []
            finally:
                await other_gateway.release()
            checked, rebuilt = await sweeps.sweep()
            assert (checked, rebuilt) == (1, 1)
            assert pipeline.repaired == [missing.key]
            await registry.etcd.delete_prefix(keys.objects_prefix())
        finally:
            await registry.close()

    asyncio.run(scenario())


def test_a_gateway_without_an_admin_token_sweeps_nothing(etcd: LocalFabric, tmp_path: Path) -> None:
    """Beside it, a gateway with the admin token sweeps three times: the one without has swept none meanwhile."""

    def gateway(name: str, admin_token: str) -> ManagedProcess:
        return ManagedProcess(
            name,
            [sys.executable, "-m", "dynostore", "gateway", *etcd.etcd_args, "--listen", "127.0.0.1:0",
             "--repair-interval", "0.2", "--ready-file", str(tmp_path / f"{name}.addr")],
            tmp_path / f"{name}.log",
            env={"DYNOSTORE_ADMIN_TOKEN": admin_token},
        )  # fmt: skip

    tokenless, control = gateway("tokenless", ""), gateway("control", etcd.admin_token)
    try:
        for process in (tokenless, control):
            process.start()
            process.wait_for_file(tmp_path / f"{process.name}.addr")
        assert eventually(lambda: control.log_path.read_text().count("Repair sweep:") >= 3, within=60)
    finally:
        tokenless.stop()
        control.stop()
    text = tokenless.log_path.read_text()
    assert "No admin token was given: this gateway runs no repair sweeps." in text
    assert "Repair sweep" not in text


def test_a_sweep_that_finds_etcd_down_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """An expected failure (etcd restarting) is a one-line warning; anything else keeps its traceback."""
    failures: list[BaseException] = [aetcd.ConnectionFailedError(), Unavailable("etcd is down"), RuntimeError("bug")]

    class Failing(Repairer):
        async def sweep(self) -> tuple[int, int]:
            if not failures:
                raise asyncio.CancelledError
            raise failures.pop(0)

    sweeps = Failing(None, Recording(), "admin", interval=0.01, grace=GRACE)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(sweeps.run())
    logged = [r for r in caplog.records if "Repair sweep failed" in r.getMessage()]
    assert [(r.levelname, r.exc_info is not None) for r in logged] == [
        ("WARNING", False),
        ("WARNING", False),
        ("ERROR", True),
    ]
