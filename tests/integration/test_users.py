"""Users and tokens: management, and revocation that bites at once, and on every gateway within the watch's delay."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import grpc
import pytest

from dynostore._proto import common_pb2, gateway_pb2, gateway_pb2_grpc
from dynostore.client import Client, UserRemoval
from dynostore.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session, eventually


def test_admins_list_and_remove_users(shared: Session) -> None:
    admin, c = shared.fabric.admin_token, shared.client
    henry = shared.fabric.create_user("henry")
    names = {u.name: u.admin for u in c.list_users(token_user=admin)}
    assert names["admin"] is True
    assert names["henry"] is False
    with pytest.raises(PermissionDenied):
        c.list_users(token_user=henry)
    with pytest.raises(PermissionDenied):
        c.remove_user("alice", token_user=henry)
    key = c.put(data=b"h", token_user=henry, catalog="c")
    assert c.remove_user("henry", token_user=admin).tokens_revoked == 1
    with pytest.raises(Unauthenticated):
        c.get(key=key, token_user=henry)
    with pytest.raises(NotFound):
        c.remove_user("henry", token_user=admin)
    with pytest.raises(FailedPrecondition):
        c.remove_user("admin", token_user=admin)


def test_a_user_with_more_tokens_than_one_etcd_transaction_takes_is_removed(shared: Session) -> None:
    admin, c = shared.fabric.admin_token, shared.client
    rhea = shared.fabric.create_user("rhea")
    tokens = [c.create_token(token_user=rhea)[0] for _ in range(150)]  # etcd takes 128 operations at most
    assert c.remove_user("rhea", token_user=admin).tokens_revoked == 151
    for token in (rhea, tokens[0], tokens[-1]):
        with pytest.raises(Unauthenticated):
            c.whoami(token_user=token)


def test_removed_users_lose_their_grants_and_purged_users_their_objects(shared: Session) -> None:
    admin, c = shared.fabric.admin_token, shared.client
    pia, quinn = shared.fabric.create_user("pia"), shared.fabric.create_user("quinn")
    keys = [c.put(data=os.urandom(size), token_user=pia, catalog=name) for size, name in ((10, "p1"), (5000, "p2"))]
    shared_key = c.put(data=b"for pia", token_user=quinn, catalog="q")
    c.share("q", "pia", token_user=quinn)
    assert c.get(key=shared_key, token_user=pia) == b"for pia"

    assert c.remove_user("pia", token_user=admin) == UserRemoval(tokens_revoked=1, objects_evicted=0)
    pia = shared.fabric.create_user("pia")  # the same name again: its catalogs, not the grants
    assert {info.name for info in c.list_catalogs(token_user=pia)} == {"p1", "p2"}
    assert all(c.exists(key=key, token_user=pia) for key in keys)
    with pytest.raises(PermissionDenied):
        c.get(key=shared_key, token_user=pia)
    assert c.describe_catalog("q", token_user=quinn).shared_with == ()

    chunks = [p for container in shared.fabric.containers for p in container.root.rglob(f"{keys[1]}.*")]
    assert chunks  # the 5000-byte object is erasure-coded, not inline
    purge = subprocess.run(
        [sys.executable, "-m", "dynostore", "user", "rm", "pia", "--purge", "--token", admin],
        env=shared.cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "removed pia; 1 token(s) revoked; 2 object(s) evicted" in purge.stdout, purge.stderr
    pia = shared.fabric.create_user("pia")
    assert c.list_catalogs(token_user=pia) == []
    assert not any(c.exists(key=key, token_user=pia) for key in keys)
    deadline = time.monotonic() + 20
    while any(p.exists() for p in chunks):  # deleted by the gateway in the background
        assert time.monotonic() < deadline, "chunks of purged objects are still stored"
        time.sleep(0.2)
    assert c.remove_user("pia", token_user=admin, purge=True) == UserRemoval(1, 0)
    with pytest.raises(NotFound):  # nothing left to purge
        c.remove_user("pia", token_user=admin, purge=True)
    assert c.get(key=shared_key, token_user=quinn) == b"for pia"


def test_tokens_are_shown_once_and_revoked_everywhere_at_once(shared: Session, second_gateway: str) -> None:
    c = shared.client
    ivy = shared.fabric.create_user("ivy")
    extra, info = c.create_token(token_user=ivy)
    assert info.user == "ivy"
    assert len(info.id) == 16
    assert extra not in info.id
    assert {t.id for t in c.list_tokens(token_user=ivy)} >= {info.id}
    with shared.channel(shared.fabric.gateway) as channel:  # what the wire carries, not just what the SDK keeps
        listed = gateway_pb2_grpc.GatewayStub(channel).ListTokens(
            gateway_pb2.ListTokensRequest(), metadata=auth_metadata(ivy), timeout=10
        )
    raw = listed.SerializeToString()
    assert info.id.encode() in raw
    for secret in (extra, ivy, hashlib.sha256(extra.encode()).hexdigest(), hashlib.sha256(ivy.encode()).hexdigest()):
        assert secret.encode() not in raw
    with Client(second_gateway, tls_ca=shared.fabric.tls_ca) as other:
        key = other.put(data=b"via gateway 2", token_user=extra, catalog="c")  # warms gateway 2's cache
        assert other.get(key=key, token_user=extra) == b"via gateway 2"
        c.put(data=b"warm gateway 1 too", token_user=extra, catalog="c")
        c.revoke_token(info.id, token_user=ivy)  # through gateway 1: refused there at once
        with pytest.raises(Unauthenticated):
            c.get(key=key, token_user=extra)

        def refused_by_gateway_2() -> bool:  # it hears of the revocation through its etcd watch (ms)
            try:
                other.get(key=key, token_user=extra)
            except Unauthenticated:
                return True
            return False

        assert eventually(refused_by_gateway_2)
        assert other.get(key=key, token_user=ivy) == b"via gateway 2"
    assert info.id not in {t.id for t in c.list_tokens(token_user=ivy)}


def test_token_rules(shared: Session) -> None:
    c, admin = shared.client, shared.fabric.admin_token
    jack = shared.fabric.create_user("jack")
    kim = shared.fabric.create_user("kim")
    with pytest.raises(PermissionDenied):
        c.create_token(token_user=jack, user="kim")
    kims_token, kims_info = c.create_token(token_user=admin, user="kim")
    assert c.exists(key="0" * 32, token_user=kims_token) is False
    with pytest.raises(NotFound):  # not jack's token
        c.revoke_token(kims_info.id, token_user=jack)
    with pytest.raises(InvalidArgument):
        c.revoke_token("../../x", token_user=jack)
    with pytest.raises(NotFound):
        c.create_token(token_user=admin, user="nobody")
    c.revoke_token(kims_info.id, token_user=admin)
    with pytest.raises(Unauthenticated):
        c.exists(key="0" * 32, token_user=kims_token)
    assert c.exists(key="0" * 32, token_user=kim) is False


def test_cli_users_and_tokens(shared: Session) -> None:
    def run(*args: str, token: str) -> subprocess.CompletedProcess[str]:
        env = {**shared.cli_env, "DYNOSTORE_TOKEN": token}
        return subprocess.run(
            [sys.executable, "-m", "dynostore", *args], env=env, capture_output=True, text=True, timeout=60
        )

    admin = shared.fabric.admin_token
    leo = run("user", "add", "leo", token=admin).stdout.strip()
    assert "leo" in run("user", "ls", token=admin).stdout
    made = run("token", "new", token=leo)
    assert made.returncode == 0, made.stderr
    token_id = made.stderr.split("token id ")[1].split()[0]
    assert token_id in run("token", "ls", token=leo).stdout
    assert run("token", "revoke", token_id, token=leo).returncode == 0
    assert run("token", "ls", token=made.stdout.strip()).returncode == 1
    removed = run("user", "rm", "leo", token=admin)
    assert "removed leo" in removed.stdout


def test_container_credentials_register_containers_and_nothing_else(shared: Session) -> None:
    c, token = shared.client, shared.fabric.container_token
    assert token  # the fabric's containers registered with it
    users = {u.name: u for u in c.list_users(token_user=shared.fabric.admin_token)}
    assert users["containers"].container
    assert not users["containers"].admin
    assert c.whoami(token_user=token) == "containers"
    for forbidden in (
        lambda: c.put(data=b"x", token_user=token, catalog="c"),
        lambda: list(c.list("c", token_user=token)),
        lambda: c.create_user("eve", token_user=token),
        lambda: c.create_token(token),
        lambda: c.list_users(token_user=token),
        lambda: c.rotate_ticket_key(token_user=token),
    ):
        with pytest.raises(PermissionDenied):
            forbidden()
    site = c.create_user("site-x", token_user=shared.fabric.admin_token, container=True)
    with pytest.raises(PermissionDenied):
        c.put(data=b"x", token_user=site, catalog="c")
    listed = subprocess.run(
        [sys.executable, "-m", "dynostore", "user", "ls", "--token", shared.fabric.admin_token],
        env=shared.cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "site-x  (container)" in listed.stdout


def test_a_container_id_belongs_to_the_credential_that_registered_it_first(shared: Session) -> None:
    c, admin = shared.client, shared.fabric.admin_token
    owned = shared.fabric.containers[0].container_id  # registered with the fabric's container credential
    impostor = c.create_user("site-impostor", token_user=admin, container=True)
    with shared.channel(shared.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        def check(token: str, container_id: str) -> None:
            stub.CheckChunks(
                gateway_pb2.CheckChunksRequest(container_id=container_id), metadata=auth_metadata(token), timeout=10
            )

        as_impostor = auth_metadata(impostor)
        for call in (
            lambda: stub.RegisterContainer(
                gateway_pb2.RegisterContainerRequest(
                    container=common_pb2.ContainerInfo(id=owned, address="127.0.0.1:9")
                ),
                metadata=as_impostor,
                timeout=10,
            ),
            lambda: stub.Heartbeat(gateway_pb2.HeartbeatRequest(container_id=owned), metadata=as_impostor, timeout=10),
            lambda: stub.ReportDamage(
                gateway_pb2.ReportDamageRequest(container_id=owned, chunks=[gateway_pb2.ChunkId(key="0" * 32)]),
                metadata=as_impostor,
                timeout=10,
            ),
            lambda: check(impostor, owned),
            lambda: stub.ListRecordedChunks(
                gateway_pb2.ListRecordedChunksRequest(container_id=owned), metadata=as_impostor, timeout=10
            ),
        ):
            with pytest.raises(grpc.RpcError) as denied:
                call()
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "site-impostor" not in (denied.value.details() or "")
        listed = stub.ListContainers(gateway_pb2.ListContainersRequest(), metadata=auth_metadata(admin), timeout=10)
        assert {info.id: info.address for info in listed.containers}[owned] == shared.fabric.containers[0].address
        check(admin, owned)  # an admin may act for any container
        with pytest.raises(grpc.RpcError) as invalid:
            stub.ListRecordedChunks(
                gateway_pb2.ListRecordedChunksRequest(container_id=owned, shard=256),
                metadata=auth_metadata(shared.fabric.container_token),
                timeout=10,
            )
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fresh = "c-" + "ab" * 6
        check(impostor, fresh)  # the first to act for a new id owns it
        other = c.create_user("site-other", token_user=admin, container=True)
        with pytest.raises(grpc.RpcError) as denied:
            check(other, fresh)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        c.remove_user("site-impostor", token_user=admin)  # frees its ids
        check(other, fresh)
