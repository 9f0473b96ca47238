"""Quotas: set by an admin, refused at plan time and again at commit, usage counters exact through evicts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.client import AsyncClient, UserUsage
from dynostore.erasure.checksum import checksum
from dynostore.errors import PermissionDenied, ResourceExhausted
from dynostore.local import LocalFabric
from dynostore.registry import Registry, keys
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session

KIB = 1024


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with LocalFabric(containers=5, root=tmp_path_factory.mktemp("quotas")) as made, made.client() as client:
        yield Session(made, client, made.create_user("alice"))


def cli(s: Session, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynostore", *args, "--token", s.fabric.admin_token],
        env=s.cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_only_admins_set_quotas_and_user_ls_shows_them(fabric: Session) -> None:
    c, admin = fabric.client, fabric.fabric.admin_token
    olga = fabric.fabric.create_user("olga")
    with pytest.raises(PermissionDenied):
        c.set_quota("olga", token_user=olga, bytes=1)
    c.put(data=os.urandom(6000), token_user=olga, catalog="o")
    set_quota = cli(fabric, "user", "quota", "olga", "--bytes", "10G", "--objects", "1e6")
    assert set_quota.returncode == 0, set_quota.stderr
    assert c.usage(token_user=olga) == UserUsage(6000, 1, 10 * 1024**3, 1_000_000)
    listed = cli(fabric, "user", "ls")
    assert "olga  5.9 KiB of 10 GiB, 1 of 1000000 objects" in listed.stdout, listed.stderr
    assert "admin  (admin)  0 B of unlimited, 0 of unlimited objects" in listed.stdout
    c.set_quota("olga", token_user=admin)  # None: unlimited again
    assert c.usage(token_user=olga) == UserUsage(6000, 1)


def test_a_put_beyond_the_quota_is_refused_at_plan_time(fabric: Session) -> None:
    c, admin = fabric.client, fabric.fabric.admin_token
    pia = fabric.fabric.create_user("pia")
    c.set_quota("pia", token_user=admin, bytes=10 * KIB)
    c.put(data=os.urandom(6 * KIB), token_user=pia, catalog="p")
    with fabric.channel(fabric.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.PlanPut(gateway_pb2.PlanPutRequest(count=2, size=6 * KIB), metadata=auth_metadata(pia), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == ("pia's quota of 10 KiB would be exceeded: 6 KiB used, this put needs 6 KiB.")
    with pytest.raises(ResourceExhausted, match="pia's quota of 10 KiB would be exceeded"):
        # A batch this small takes keys planned ahead: CommitPut is where it is refused.
        c.put_batch([os.urandom(3 * KIB), os.urandom(3 * KIB)], token_user=pia, catalog="p")
    assert c.usage(token_user=pia).bytes == 6 * KIB
    c.put(data=os.urandom(4 * KIB), token_user=pia, catalog="p")  # exactly up to the quota
    assert c.usage(token_user=pia).bytes == 10 * KIB


def test_commit_refuses_what_a_racing_put_took_first(fabric: Session) -> None:
    """Two puts plan while there is room for one; the second commit is refused."""
    c, admin = fabric.client, fabric.fabric.admin_token
    quinn = fabric.fabric.create_user("quinn")
    c.set_quota("quinn", token_user=admin, objects=1)
    with fabric.channel(fabric.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        metadata = auth_metadata(quinn)
        first, second = stub.PlanPut(gateway_pb2.PlanPutRequest(count=2), metadata=metadata, timeout=10).plans

        def commit(plan: gateway_pb2.PlannedKey) -> None:
            data = b"tiny"
            one = gateway_pb2.ObjectCommit(
                key=plan.key, plan_ticket=plan.plan_ticket, catalog="q", size=len(data),
                inline=True, data=data, crc32=checksum(data),
            )  # fmt: skip
            stub.CommitPut(gateway_pb2.CommitPutRequest(objects=[one]), metadata=metadata, timeout=10)

        commit(first)
        with pytest.raises(grpc.RpcError) as refused:
            commit(second)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == "quinn's quota of 1 objects would be exceeded: 1 stored, this put adds 1."
    assert c.usage(token_user=quinn).objects == 1


def test_concurrent_puts_never_exceed_the_quota(fabric: Session) -> None:
    c, admin = fabric.client, fabric.fabric.admin_token
    rhea = fabric.fabric.create_user("rhea")
    c.set_quota("rhea", token_user=admin, objects=5)

    async def race() -> list[BaseException | str]:
        async with AsyncClient(fabric.fabric.gateway, tls_ca=fabric.fabric.tls_ca) as client:
            puts = [client.put(data=os.urandom(100), token_user=rhea, catalog="r") for _ in range(20)]
            return await asyncio.gather(*puts, return_exceptions=True)

    results = asyncio.run(race())
    assert sum(isinstance(r, str) for r in results) == 5
    assert all(isinstance(r, ResourceExhausted) for r in results if not isinstance(r, str))
    assert c.usage(token_user=rhea) == UserUsage(500, 5, 0, 5)
    assert len(list(c.list("r", token_user=rhea))) == 5


def test_usage_goes_down_with_evicts_and_catalog_deletes(fabric: Session) -> None:
    c = fabric.client
    sam = fabric.fabric.create_user("sam")
    small, large = (
        c.put(data=b"x" * 100, token_user=sam, catalog="s"),
        c.put(data=os.urandom(9000), token_user=sam, catalog="s"),
    )
    c.put(data=b"y" * 50, token_user=sam, catalog="t")
    assert c.usage(token_user=sam) == UserUsage(9150, 3)
    assert c.evict(small, token_user=sam)
    assert not c.evict(small, token_user=sam)  # counted out once
    assert c.usage(token_user=sam) == UserUsage(9050, 2)
    c.delete_catalog("s", token_user=sam, force=True)
    assert c.usage(token_user=sam) == UserUsage(50, 1)
    assert not c.exists(large, token_user=sam)


def test_users_from_before_counters_are_counted_once(fabric: Session) -> None:
    c, admin = fabric.client, fabric.fabric.admin_token
    tess = fabric.fabric.create_user("tess")
    for size in (10, 20, 5000):
        c.put(data=os.urandom(size), token_user=tess, catalog="old")

    async def forget_counter() -> None:
        registry = Registry(fabric.fabric.etcd_address)
        try:
            await registry.etcd.delete(keys.usage("tess"))
        finally:
            await registry.close()

    asyncio.run(forget_counter())  # as a user made before usage counters existed
    assert c.usage(token_user=tess) == UserUsage(5030, 3)
    c.set_quota("tess", token_user=admin, objects=4)
    c.put(data=b"one more", token_user=tess, catalog="old")
    with pytest.raises(ResourceExhausted):
        c.put(data=b"too many", token_user=tess, catalog="old")
    assert c.usage(token_user=tess) == UserUsage(5038, 4, 0, 4)
