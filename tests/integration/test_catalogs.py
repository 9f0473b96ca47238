"""Catalogs, sharing and events against a real fabric."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.client import Client, Event
from dynostore.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from dynostore.local import ManagedProcess, free_port
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session


def test_catalog_life_cycle(shared: Session) -> None:
    c, t = shared.client, shared.token
    c.create_catalog("empty-one", token_user=t)
    key = c.put(data=b"12345", token_user=t, catalog="full-one")
    names = {i.name for i in c.list_catalogs(token_user=t)}
    assert {"empty-one", "full-one"} <= names
    info = c.describe_catalog("full-one", token_user=t)
    assert (info.owner, info.objects, info.bytes) == ("alice", 1, 5)
    with pytest.raises(FailedPrecondition, match="force"):
        c.delete_catalog("full-one", token_user=t)
    assert c.get(key=key, token_user=t) == b"12345"
    assert c.delete_catalog("full-one", token_user=t, force=True) == 1
    assert not c.exists(key=key, token_user=t)
    assert c.delete_catalog("empty-one", token_user=t) == 0
    with pytest.raises(NotFound):
        c.describe_catalog("empty-one", token_user=t)


def test_a_catalog_policy_applies_to_puts_that_ask_for_none(shared: Session) -> None:
    c, t = shared.client, shared.token
    assert c.create_catalog("narrow", token_user=t, k=2, m=1).k == 2
    assert c.describe_catalog("narrow", token_user=t).m == 1
    data = os.urandom(100_000)  # not inline
    one = c.put(data=data, token_user=t, catalog="narrow")
    batch = c.put_batch([data, data[:50_000]], token_user=t, catalog="narrow")
    elsewhere = c.put(data=data, token_user=t, catalog="wide")
    with shared.fabric.client(k=4, m=1) as explicit:
        own_policy = explicit.put(data=data, token_user=t, catalog="narrow")
    stats = {key: c.stat(key=key, token_user=t) for key in (one, *batch, elsewhere, own_policy)}
    policies = {key: (s.k, s.m, len(s.chunks)) for key, s in stats.items()}
    assert [policies[k] for k in (one, *batch)] == [(2, 1, 3)] * 3
    assert policies[elsewhere] == (3, 2, 5)  # the gateway default
    assert policies[own_policy] == (4, 1, 5)  # a client's own policy wins
    assert c.get(key=one, token_user=t) == data
    assert c.describe_catalog("wide", token_user=t).k == 0
    with pytest.raises(InvalidArgument):
        c.create_catalog("odd", token_user=t, k=0, m=2)
    with shared.channel(shared.fabric.gateway) as channel, pytest.raises(grpc.RpcError) as refused:
        gateway_pb2_grpc.GatewayStub(channel).CreateCatalog(  # the gateway checks too
            gateway_pb2.CatalogRequest(catalog="odd", k=99, m=1), metadata=auth_metadata(t), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sharing_gives_read_only_access(shared: Session) -> None:
    c, alice = shared.client, shared.token
    mona = shared.fabric.create_user("mona")
    key = c.put(data=b"results", token_user=alice, catalog="published", name="r.bin")
    with pytest.raises(PermissionDenied):
        c.get(key=key, token_user=mona)
    with pytest.raises(PermissionDenied):
        list(c.list(catalog="alice/published", token_user=mona))
    c.share("published", "mona", token_user=alice)
    assert c.get(key=key, token_user=mona) == b"results"
    assert c.get_batch([key], token_user=mona) == [b"results"]
    assert c.exists(key=key, token_user=mona)
    assert [i.name for i in c.list(catalog="alice/published", token_user=mona)] == ["r.bin"]
    assert "alice/published" in {f"{i.owner}/{i.name}" for i in c.list_catalogs(token_user=mona)}
    assert c.describe_catalog("published", token_user=alice).shared_with == ("mona",)
    with pytest.raises(PermissionDenied, match="read-only"):
        c.evict(key=key, token_user=mona)
    with pytest.raises(PermissionDenied):
        c.put(data=b"x", token_user=mona, catalog="alice/published")
    with pytest.raises(PermissionDenied):
        c.share("alice/published", "mona", token_user=mona)
    assert c.unshare("published", "mona", token_user=alice) is True
    with pytest.raises(PermissionDenied):
        c.get(key=key, token_user=mona)
    assert c.get(key=key, token_user=alice) == b"results"
    with pytest.raises(NotFound):
        c.share("published", "nobody", token_user=alice)


def collect(
    client: Client, catalog: str, token: str, count: int, start: int = 0
) -> tuple[list[Event], threading.Thread]:
    events: list[Event] = []

    def run() -> None:
        for event in client.subscribe(catalog, token_user=token, start_revision=start):
            events.append(event)
            if len(events) == count:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return events, thread


def test_events_reach_owner_and_readers(shared: Session) -> None:
    c, alice = shared.client, shared.token
    nina = shared.fabric.create_user("nina")
    c.create_catalog("feed", token_user=alice)
    with pytest.raises(PermissionDenied):
        next(iter(c.subscribe("alice/feed", token_user=nina)))
    # From revision 1: the whole history of this new catalog, so no event can slip past a late start.
    mine, mine_thread = collect(c, "feed", alice, 4, start=1)
    c.share("feed", "nina", token_user=alice)
    theirs, theirs_thread = collect(c, "alice/feed", nina, 3, start=1)
    key = c.put(data=b"abc", token_user=alice, catalog="feed", name="first")
    c.evict(key=key, token_user=alice)
    c.put(data=b"defg", token_user=alice, catalog="feed", name="second")
    mine_thread.join(30)
    theirs_thread.join(30)
    assert [e.kind for e in mine] == ["share", "put", "evict", "put"]
    assert mine[0].user == "nina"
    assert (mine[1].key, mine[1].name, mine[1].size) == (key, "first", 3)
    assert (mine[2].key, mine[2].name, mine[2].size) == (key, "first", 3)
    assert [e.kind for e in theirs] == ["share", "put", "evict"]
    # Replaying from a revision gives the same events again.
    replay, replay_thread = collect(c, "feed", alice, 4, start=mine[0].revision)
    replay_thread.join(30)
    same = [(e.kind, e.key, e.name, e.size, e.revision, e.user) for e in replay]
    assert same == [(e.kind, e.key, e.name, e.size, e.revision, e.user) for e in mine]
    assert [e.time for e in replay if e.kind in ("put", "share")] == [
        e.time for e in mine if e.kind in ("put", "share")
    ]


def test_subscription_survives_a_gateway_restart(shared: Session, tmp_path: Path) -> None:
    port = free_port()
    ready = tmp_path / "gw.addr"

    def gateway() -> ManagedProcess:
        ready.unlink(missing_ok=True)
        process = ManagedProcess(
            "gateway-r",
            [sys.executable, "-m", "dynostore", "gateway", *shared.fabric.etcd_args,
             "--listen", f"127.0.0.1:{port}", "--ready-file", str(ready)],
            tmp_path / "gw.log",
        )  # fmt: skip
        process.start()
        process.wait_for_file(ready)
        return process

    shared.client.create_catalog("restarts", token_user=shared.token)  # one subscribes to catalogs that exist
    first = gateway()
    try:
        with Client(f"127.0.0.1:{port}", retries=8) as watcher:
            events, thread = collect(watcher, "restarts", shared.token, 3, start=1)
            shared.client.put(data=b"1", token_user=shared.token, catalog="restarts")
            first.stop()
            # Written while no gateway serves the subscription: must not be lost.
            shared.client.put(data=b"22", token_user=shared.token, catalog="restarts")
            first = gateway()
            shared.client.put(data=b"333", token_user=shared.token, catalog="restarts")
            thread.join(60)
            assert [e.size for e in events] == [1, 2, 3]
    finally:
        first.stop()


def test_cli_catalogs_shares_and_watch(shared: Session) -> None:
    env = {**shared.cli_env, "DYNOSTORE_TOKEN": shared.token}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dynostore", *args], env=env, capture_output=True, text=True, timeout=60
        )

    shared.fabric.create_user("olga")
    assert run("catalog", "create", "cli-cat").returncode == 0
    assert "cli-cat" in run("catalog", "ls").stdout.split()
    assert run("share", "add", "cli-cat", "olga").returncode == 0
    assert run("share", "ls", "cli-cat").stdout.split() == ["olga"]
    assert "shared with: olga" in run("catalog", "info", "cli-cat").stdout
    assert "policy: the gateway default" in run("catalog", "info", "cli-cat").stdout
    assert run("catalog", "create", "cli-narrow", "--k", "2", "--m", "1").returncode == 0
    assert "policy: k=2 m=1" in run("catalog", "info", "cli-narrow").stdout
    watch = subprocess.Popen(
        [sys.executable, "-m", "dynostore", "watch", "cli-cat", "--from-revision", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watch.stdout is not None
        line = watch.stdout.readline()
        assert " share " in line
        assert "olga" in line
    finally:
        watch.terminate()
        watch.wait(10)
    assert run("share", "rm", "cli-cat", "olga").returncode == 0
    assert "deleted cli-cat" in run("catalog", "rm", "cli-cat").stdout


def test_a_catalog_that_does_not_exist_is_not_found_never_empty(shared: Session) -> None:
    """ls, list and subscribe of a missing catalog say so; naming a shared one without its owner gets a hint."""
    c, alice = shared.client, shared.token
    owner = c.whoami(token_user=alice)
    with pytest.raises(NotFound, match="no catalog 'no-such-catalog'"):
        list(c.list(catalog="no-such-catalog", token_user=alice))
    with pytest.raises(NotFound):
        next(iter(c.subscribe("no-such-catalog", token_user=alice)))
    c.put(data=b"for pat", token_user=alice, catalog="runs-shared")
    pat = shared.fabric.create_user("pat")
    c.share("runs-shared", "pat", token_user=alice)
    with pytest.raises(NotFound, match=f"Did you mean {owner}/runs-shared"):
        list(c.list(catalog="runs-shared", token_user=pat))
    assert len(list(c.list(catalog=f"{owner}/runs-shared", token_user=pat))) == 1
    c.create_catalog("empty-one", token_user=alice)
    assert list(c.list(catalog="empty-one", token_user=alice)) == []  # exists, and is empty
    env = {**shared.cli_env, "DYNOSTORE_TOKEN": pat}
    result = subprocess.run(
        [sys.executable, "-m", "dynostore", "ls", "runs-shared"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"Did you mean {owner}/runs-shared" in result.stderr
    assert "Traceback" not in result.stderr
