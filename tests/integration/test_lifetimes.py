"""Object lifetimes: put(ttl=), a catalog's default TTL, DynoConnector(ttl=); expired objects read as absent
at once, and the repair sweep evicts them with an ``expire`` event.

The gateway of this fabric runs no sweeps of its own: the tests sweep with a
Repairer on its etcd whose clock runs ahead, so no test waits for a lifetime
to end except the one that checks that an object reads as absent as soon as
its own ends (a TTL of 1 s, polled with a bound).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from dynostore.client import UserUsage
from dynostore.errors import NotFound
from dynostore.gateway.repairer import Repairer
from dynostore.local import LocalFabric
from dynostore.proxystore import DynoConnector
from dynostore.registry import Registry
from tests.integration.conftest import Session, eventually
from tests.integration.test_catalogs import collect

HOUR = 3600.0


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    root = tmp_path_factory.mktemp("lifetimes")
    with LocalFabric(containers=5, root=root, repair_interval=0) as made, made.client() as client:
        yield Session(made, client, made.create_user("alice"))


def sweep(s: Session, ahead: float) -> None:
    """One repair sweep, as the gateway runs it, on a clock ``ahead`` seconds in the future."""

    async def run() -> None:
        registry = Registry(s.fabric.etcd_address)
        try:
            # No object here needs a rebuild: the sweep calls no pipeline.
            repairer = Repairer(
                registry,
                None,  # type: ignore[arg-type]
                "",
                interval=60,
                grace=600,
                clock=lambda: time.time() + ahead,
            )
            await repairer.sweep()
        finally:
            await registry.close()

    asyncio.run(run())


def test_an_expired_object_is_absent_at_once_even_before_a_sweep(fabric: Session) -> None:
    c, alice = fabric.client, fabric.token
    short, big, lasting = (
        c.put(data=b"short-lived", token_user=alice, catalog="ttl", ttl=1),
        c.put(data=os.urandom(50_000), token_user=alice, catalog="ttl", ttl=1),
        c.put(data=b"lasting", token_user=alice, catalog="ttl"),
    )
    assert c.stat(short, token_user=alice).info.expires > time.time()
    assert eventually(lambda: not c.exists(short, token_user=alice) and not c.exists(big, token_user=alice), 30)
    for key in (short, big):
        with pytest.raises(NotFound):
            c.get(key=key, token_user=alice)
        with pytest.raises(NotFound):
            c.stat(key, token_user=alice)
        assert not c.evict(key, token_user=alice)  # absent: the sweep evicts it
    assert c.get_batch([short, lasting], token_user=alice) == [None, b"lasting"]
    assert [o.key for o in c.list("ttl", token_user=alice)] == [lasting]
    assert c.describe_catalog("ttl", token_user=alice).objects == 1
    assert c.usage(token_user=alice).objects >= 3  # still counted until the sweep evicts them


def test_the_sweep_evicts_expired_objects_with_an_expire_event(fabric: Session) -> None:
    c, alice = fabric.client, fabric.token
    c.create_catalog("swept", token_user=alice)
    doomed = c.put(data=os.urandom(20_000), token_user=alice, catalog="swept", ttl=HOUR)
    kept = c.put(data=b"kept", token_user=alice, catalog="swept", ttl=3 * HOUR)
    before = c.usage(token_user=alice)
    sweep(fabric, ahead=2 * HOUR)
    # From revision 1: the catalog's whole history, the marking of the expired entry left out.
    events, reader = collect(c, "swept", alice, 3, start=1)
    reader.join(timeout=30)
    assert [(e.kind, e.key) for e in events] == [("put", doomed), ("put", kept), ("expire", doomed)]
    # Counted out of the usage: it is again what the user's catalogs hold (the earlier test's expired objects went too).
    left = [o for catalog in c.list_catalogs(token_user=alice) for o in c.list(catalog.name, token_user=alice)]
    assert c.usage(token_user=alice) == UserUsage(sum(o.size for o in left), len(left))
    assert before.bytes - 20_000 >= sum(o.size for o in left)
    assert [o.key for o in c.list("swept", token_user=alice)] == [kept]
    assert c.get(key=kept, token_user=alice) == b"kept"


def test_a_catalog_default_ttl_applies_to_puts_that_give_none(fabric: Session) -> None:
    c, alice = fabric.client, fabric.token
    made = subprocess.run(
        [sys.executable, "-m", "dynostore", "catalog", "create", "scratch", "--ttl", str(HOUR), "--token", alice],
        env=fabric.cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert c.describe_catalog("scratch", token_user=alice).ttl == HOUR
    now = time.time()
    default, own = (
        c.put(data=b"d", token_user=alice, catalog="scratch"),
        c.put(data=b"o", token_user=alice, catalog="scratch", ttl=10 * HOUR),
    )
    batch = c.put_batch([b"b1", b"b2"], token_user=alice, catalog="scratch")
    expiry = {o.key: o.expires for o in c.list("scratch", token_user=alice)}
    assert all(now + HOUR - 60 < expiry[k] < now + HOUR + 60 for k in [default, *batch])
    assert now + 10 * HOUR - 60 < expiry[own] < now + 10 * HOUR + 60
    sweep(fabric, ahead=2 * HOUR)
    assert [o.key for o in c.list("scratch", token_user=alice)] == [own]


def test_cli_put_ttl_and_the_proxystore_connector(fabric: Session, tmp_path: os.PathLike[str]) -> None:
    c, alice = fabric.client, fabric.token
    path = os.path.join(tmp_path, "f.bin")
    with open(path, "wb") as f:
        f.write(b"file bytes")
    put = subprocess.run(
        [sys.executable, "-m", "dynostore", "put", path, "--catalog", "cli", "--ttl", "7200", "--token", alice],
        env=fabric.cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert put.returncode == 0, put.stderr
    (listed,) = c.list("cli", token_user=alice)
    assert listed.key == put.stdout.strip()
    assert time.time() + 7000 < listed.expires < time.time() + 7400
    with DynoConnector(fabric.fabric.gateway, alice, "connector", ttl=HOUR) as connector:
        assert DynoConnector.from_config(connector.config()).ttl == HOUR
        key = connector.put(b"proxied")
        (deferred,) = [connector.new_key()]
        connector.set(deferred, b"set later")
        assert connector.get(key) == b"proxied"
        sweep(fabric, ahead=2 * HOUR)
        assert connector.get(key) is None
        assert not connector.exists(deferred)
