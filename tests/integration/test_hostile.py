"""Hostile requests to every RPC: a clear error each time, servers still serving, chunk files untouched.

Malformed bytes (requests that do not parse) are tests/integration/test_bad_requests.py's part.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dynostore._proto import container_pb2 as c
from dynostore._proto import container_pb2_grpc, gateway_pb2_grpc
from dynostore._proto import gateway_pb2 as g
from dynostore.rpc import auth_metadata
from tests.integration.conftest import Session

BAD = grpc.StatusCode
TRAVERSAL = "../../etc/passwd"
HUGE_NAME = "n" * 5000
UNICODE = "données-☃-\u202e-𝔘"
Call = Callable[[Any, str], Any]  # (stub, token) -> reply


def gateway_cases() -> list[tuple[str, Call, set[grpc.StatusCode]]]:
    invalid = {BAD.INVALID_ARGUMENT}
    denied = {BAD.PERMISSION_DENIED, BAD.UNAUTHENTICATED}
    return [
        ("PlanPut k too big", lambda s, t: s.PlanPut(g.PlanPutRequest(k=999), metadata=auth_metadata(t)), invalid),
        ("PlanPut count flood", lambda s, t: s.PlanPut(g.PlanPutRequest(count=10**6), metadata=auth_metadata(t)), invalid),
        ("CommitPut empty", lambda s, t: s.CommitPut(g.CommitPutRequest(), metadata=auth_metadata(t)), invalid),
        (
            "CommitPut traversal key",
            lambda s, t: s.CommitPut(
                g.CommitPutRequest(objects=[g.ObjectCommit(key=TRAVERSAL, catalog="c")]), metadata=auth_metadata(t)
            ),
            invalid,
        ),
        (
            "CommitPut forged plan ticket",
            lambda s, t: s.CommitPut(
                g.CommitPutRequest(objects=[g.ObjectCommit(key="d" * 32, catalog="c", plan_ticket="9999999999.00")]),
                metadata=auth_metadata(t),
            ),
            denied,
        ),
        (
            "CommitPut huge name",
            lambda s, t: s.CommitPut(
                g.CommitPutRequest(objects=[g.ObjectCommit(key="d" * 32, catalog="c", name=HUGE_NAME)]),
                metadata=auth_metadata(t),
            ),
            invalid,
        ),
        ("Locate traversal", lambda s, t: s.Locate(g.LocateRequest(keys=[TRAVERSAL]), metadata=auth_metadata(t)), invalid),
        ("Locate none", lambda s, t: s.Locate(g.LocateRequest(), metadata=auth_metadata(t)), invalid),
        ("Locate fresh none", lambda s, t: s.Locate(g.LocateRequest(fresh=True), metadata=auth_metadata(t)), invalid),
        ("Locate flood", lambda s, t: s.Locate(g.LocateRequest(keys=["0" * 32] * 5000), metadata=auth_metadata(t)), invalid),
        ("Exists unicode", lambda s, t: s.Exists(g.ExistsRequest(key=UNICODE), metadata=auth_metadata(t)), invalid),
        ("PlanRepair traversal", lambda s, t: s.PlanRepair(g.PlanRepairRequest(key=TRAVERSAL), metadata=auth_metadata(t)), invalid),
        ("CommitRepair traversal", lambda s, t: s.CommitRepair(g.CommitRepairRequest(key=TRAVERSAL), metadata=auth_metadata(t)), invalid),
        ("CommitRepair no token", lambda s, t: s.CommitRepair(g.CommitRepairRequest(key="d" * 32)), {BAD.UNAUTHENTICATED}),
        ("Evict traversal", lambda s, t: s.Evict(g.EvictRequest(key=TRAVERSAL), metadata=auth_metadata(t)), invalid),
        ("Evict batch traversal", lambda s, t: s.Evict(g.EvictRequest(keys=["0" * 32, TRAVERSAL]), metadata=auth_metadata(t)), invalid),
        ("Evict key and keys", lambda s, t: s.Evict(g.EvictRequest(key="0" * 32, keys=["1" * 32]), metadata=auth_metadata(t)), invalid),
        ("Evict flood", lambda s, t: s.Evict(g.EvictRequest(keys=["0" * 32] * 5000), metadata=auth_metadata(t)), invalid),
        ("List traversal", lambda s, t: list(s.List(g.ListRequest(catalog="../x"), metadata=auth_metadata(t))), invalid),
        ("List unicode", lambda s, t: list(s.List(g.ListRequest(catalog=UNICODE), metadata=auth_metadata(t))), invalid),
        (
            "List huge name",
            lambda s, t: list(s.List(g.ListRequest(catalog="c", name=HUGE_NAME), metadata=auth_metadata(t))),
            invalid,
        ),
        ("CreateUser non-admin", lambda s, t: s.CreateUser(g.CreateUserRequest(name="x"), metadata=auth_metadata(t)), denied),
        ("ListUsers non-admin", lambda s, t: s.ListUsers(g.ListUsersRequest(), metadata=auth_metadata(t)), denied),
        ("RemoveUser non-admin", lambda s, t: s.RemoveUser(g.RemoveUserRequest(name="alice"), metadata=auth_metadata(t)), denied),
        ("RevokeToken garbage", lambda s, t: s.RevokeToken(g.RevokeTokenRequest(id=HUGE_NAME), metadata=auth_metadata(t)), invalid),
        ("CreateToken for another", lambda s, t: s.CreateToken(g.CreateTokenRequest(user="admin"), metadata=auth_metadata(t)), denied),
        ("CreateS3Key for another", lambda s, t: s.CreateS3Key(g.CreateS3KeyRequest(user="admin"), metadata=auth_metadata(t)), denied),
        ("CreateS3Key bad user", lambda s, t: s.CreateS3Key(g.CreateS3KeyRequest(user=UNICODE), metadata=auth_metadata(t)), invalid | denied),
        ("RevokeS3Key garbage", lambda s, t: s.RevokeS3Key(g.RevokeS3KeyRequest(access_key_id=HUGE_NAME), metadata=auth_metadata(t)), invalid),
        ("RevokeS3Key no token", lambda s, t: s.RevokeS3Key(g.RevokeS3KeyRequest(access_key_id="DS" + "A" * 18)), {BAD.UNAUTHENTICATED}),
        (
            "GetS3SigningKey non-admin",
            lambda s, t: s.GetS3SigningKey(
                g.GetS3SigningKeyRequest(access_key_id="DS" + "A" * 18, date="20260101", region="us-east-1", service="s3"),
                metadata=auth_metadata(t),
            ),
            denied,
        ),
        ("CreateCatalog huge", lambda s, t: s.CreateCatalog(g.CatalogRequest(catalog=HUGE_NAME), metadata=auth_metadata(t)), invalid),
        ("DescribeCatalog someone else's", lambda s, t: s.DescribeCatalog(g.CatalogRequest(catalog="admin/x"), metadata=auth_metadata(t)), denied),
        ("DeleteCatalog someone else's", lambda s, t: s.DeleteCatalog(g.DeleteCatalogRequest(catalog="admin/x", force=True), metadata=auth_metadata(t)), denied),
        ("Share bad user", lambda s, t: s.Share(g.ShareRequest(catalog="c", with_user="../root"), metadata=auth_metadata(t)), invalid),
        ("Subscribe negative revision", lambda s, t: list(s.Subscribe(g.SubscribeRequest(catalog="c", start_revision=-5), metadata=auth_metadata(t))), invalid),
        ("RegisterContainer non-admin", lambda s, t: s.RegisterContainer(g.RegisterContainerRequest(), metadata=auth_metadata(t)), denied),
        ("Heartbeat non-admin", lambda s, t: s.Heartbeat(g.HeartbeatRequest(container_id="x"), metadata=auth_metadata(t)), denied),
        ("ReportDamage non-admin", lambda s, t: s.ReportDamage(g.ReportDamageRequest(container_id="x"), metadata=auth_metadata(t)), denied),
        ("CheckChunks non-admin", lambda s, t: s.CheckChunks(g.CheckChunksRequest(container_id="x"), metadata=auth_metadata(t)), denied),
        ("ListRecordedChunks non-admin", lambda s, t: s.ListRecordedChunks(g.ListRecordedChunksRequest(container_id="x"), metadata=auth_metadata(t)), denied),
        ("RotateTicketKey non-admin", lambda s, t: s.RotateTicketKey(g.RotateTicketKeyRequest(), metadata=auth_metadata(t)), denied),
        ("WhoAmI no token", lambda s, t: s.WhoAmI(g.WhoAmIRequest()), {BAD.UNAUTHENTICATED}),
        ("WhoAmI oversized token", lambda s, t: s.WhoAmI(g.WhoAmIRequest(), metadata=(("authorization", "Bearer " + "x" * 600),)), {BAD.UNAUTHENTICATED}),
        ("ListContainers bad scheme", lambda s, t: s.ListContainers(g.ListContainersRequest(), metadata=(("authorization", f"Basic {t}"),)), {BAD.UNAUTHENTICATED}),
        ("RelayPut data before header", lambda s, t: s.RelayPut(iter([g.RelayPutRequest(data=b"x")]), metadata=auth_metadata(t)), invalid),
        ("RelayPut traversal catalog", lambda s, t: s.RelayPut(iter([g.RelayPutRequest(header=g.RelayPutHeader(catalog="../x", size=1)), g.RelayPutRequest(data=b"x")]), metadata=auth_metadata(t)), invalid),
        ("RelayGet traversal", lambda s, t: list(s.RelayGet(g.RelayGetRequest(key=TRAVERSAL), metadata=auth_metadata(t))), invalid),
        ("ListCatalogs no token", lambda s, t: s.ListCatalogs(g.ListCatalogsRequest()), {BAD.UNAUTHENTICATED}),
        ("Unshare bad user", lambda s, t: s.Unshare(g.ShareRequest(catalog="c", with_user="../root"), metadata=auth_metadata(t)), invalid),
        ("ListTokens of another user", lambda s, t: s.ListTokens(g.ListTokensRequest(user="admin"), metadata=auth_metadata(t)), denied),
        ("SetQuota non-admin", lambda s, t: s.SetQuota(g.SetQuotaRequest(name="alice", bytes=1), metadata=auth_metadata(t)), denied),
        ("GetStatus no token", lambda s, t: s.GetStatus(g.GetStatusRequest()), {BAD.UNAUTHENTICATED}),
        ("DrainContainer non-admin", lambda s, t: s.DrainContainer(g.DrainContainerRequest(container_id="x"), metadata=auth_metadata(t)), denied),
        ("DrainContainer traversal no token", lambda s, t: s.DrainContainer(g.DrainContainerRequest(container_id=TRAVERSAL)), {BAD.UNAUTHENTICATED}),
        ("RemoveContainer non-admin", lambda s, t: s.RemoveContainer(g.RemoveContainerRequest(container_id="x", force=True), metadata=auth_metadata(t)), denied),
        ("RemoveContainer forged token", lambda s, t: s.RemoveContainer(g.RemoveContainerRequest(container_id="x"), metadata=auth_metadata("f" * 43)), {BAD.UNAUTHENTICATED}),
        ("Rebalance non-admin", lambda s, t: s.Rebalance(g.RebalanceRequest(bandwidth=1), metadata=auth_metadata(t)), denied),
        ("GetStatus forged token", lambda s, t: s.GetStatus(g.GetStatusRequest(), metadata=auth_metadata("f" * 43)), {BAD.UNAUTHENTICATED}),
        ("CommitPut traversal replace_key", lambda s, t: s.CommitPut(g.CommitPutRequest(objects=[g.ObjectCommit(key="d" * 32, catalog="c", replace_key=TRAVERSAL)]), metadata=auth_metadata(t)), invalid),
        ("CommitPut unicode replace_key", lambda s, t: s.CommitPut(g.CommitPutRequest(objects=[g.ObjectCommit(key="d" * 32, catalog="c", replace_key=UNICODE)]), metadata=auth_metadata(t)), invalid),
        ("CommitPut replace_name without a name", lambda s, t: s.CommitPut(g.CommitPutRequest(objects=[g.ObjectCommit(key="d" * 32, catalog="c", replace_name=True)]), metadata=auth_metadata(t)), invalid),
        ("CommitPut replacing in a batch", lambda s, t: s.CommitPut(g.CommitPutRequest(objects=[g.ObjectCommit(key="d" * 32, catalog="c", name="n", replace_name=True), g.ObjectCommit(key="e" * 32, catalog="c")]), metadata=auth_metadata(t)), invalid),
        ("CommitPut replace_key with a forged plan ticket", lambda s, t: s.CommitPut(g.CommitPutRequest(objects=[g.ObjectCommit(key="d" * 32, catalog="c", replace_key="e" * 32, plan_ticket="9999999999.00")]), metadata=auth_metadata(t)), denied),
        ("RelayPut traversal replace_key", lambda s, t: s.RelayPut(iter([g.RelayPutRequest(header=g.RelayPutHeader(catalog="c", size=1, replace_key=TRAVERSAL)), g.RelayPutRequest(data=b"x")]), metadata=auth_metadata(t)), invalid),
        ("RelayPut replace_name without a name", lambda s, t: s.RelayPut(iter([g.RelayPutRequest(header=g.RelayPutHeader(catalog="c", size=1, replace_name=True)), g.RelayPutRequest(data=b"x")]), metadata=auth_metadata(t)), invalid),
        ("PlanPut replace flood", lambda s, t: s.PlanPut(g.PlanPutRequest(count=10**6, replace=True), metadata=auth_metadata(t)), invalid),
        ("CommitPut plan ticket of 5,000 digits", lambda s, t: s.CommitPut(g.CommitPutRequest(objects=[g.ObjectCommit(key="d" * 32, catalog="c", plan_ticket="9" * 5000 + ".00")]), metadata=auth_metadata(t)), denied),
    ]  # fmt: skip


def container_cases(mint: Callable[[str, str], str], stored: str) -> list[tuple[str, Call, set[grpc.StatusCode]]]:
    """Cases for a container; ``stored`` is the key of an object with a chunk 0 on it."""
    invalid = {BAD.INVALID_ARGUMENT}
    key = "e" * 32
    frag = c.Fragment(data=b"x", crc32=zlib.crc32(b"x"))

    def whole(index: int, ticket: str, key: str = key) -> c.WriteChunksRequest:
        header = c.ChunkHeader(key=key, index=index, ticket=ticket)
        return c.WriteChunksRequest(chunks=[c.WholeChunk(header=header, fragments=[frag])])

    def status_of(reply: Any) -> grpc.StatusCode:
        code = reply.results[0].code if hasattr(reply.results[0], "code") else reply.results[0].status.code
        return next(s for s in grpc.StatusCode if s.value[0] == code)

    return [
        ("GetChunk traversal", lambda s, t: list(s.GetChunk(c.GetChunkRequest(key=TRAVERSAL))), invalid),
        ("GetChunk index out of range", lambda s, t: list(s.GetChunk(c.GetChunkRequest(key=key, index=4096, ticket=mint(key, "read")))), invalid),
        ("GetChunk huge offset", lambda s, t: list(s.GetChunk(c.GetChunkRequest(key=stored, index=0, offset=2**63, ticket=mint(stored, "read")))), invalid),
        ("GetChunk offset past the end", lambda s, t: list(s.GetChunk(c.GetChunkRequest(key=stored, index=0, offset=1 << 30, ticket=mint(stored, "read")))), invalid),
        ("GetChunk read of another key's ticket", lambda s, t: list(s.GetChunk(c.GetChunkRequest(key=stored, index=0, ticket=mint(key, "read")))), {BAD.PERMISSION_DENIED}),
        ("PutChunk no header", lambda s, t: s.PutChunk(iter([c.PutChunkRequest(fragment=frag)])), invalid),
        ("PutChunk two headers", lambda s, t: s.PutChunk(iter([c.PutChunkRequest(header=c.ChunkHeader(key=key, ticket=mint(key, "write"))), c.PutChunkRequest(header=c.ChunkHeader(key=key))])), invalid),
        ("PutChunk empty stream", lambda s, t: s.PutChunk(iter([])), invalid),
        ("WriteChunks unicode key", lambda s, t: _raise_for(status_of(s.WriteChunks(whole(0, mint(key, "write"), key=UNICODE)))), invalid),
        ("WriteChunks wrong index", lambda s, t: _raise_for(status_of(s.WriteChunks(whole(999, mint(key, "write"))))), invalid),
        ("WriteChunks read ticket", lambda s, t: _raise_for(status_of(s.WriteChunks(whole(0, mint(key, "read"))))), {BAD.PERMISSION_DENIED}),
        ("WriteChunks ticket expiring in 5,000 digits", lambda s, t: _raise_for(status_of(s.WriteChunks(whole(0, "k." + "9" * 5000 + ".write.sig")))), {BAD.PERMISSION_DENIED}),
        ("WriteChunks run ticket of 5,000 digits", lambda s, t: _raise_for(status_of(s.WriteChunks(whole(0, "k.9.write." + "9" * 5000 + ".sig")))), {BAD.PERMISSION_DENIED}),
        ("WriteChunks flood", lambda s, t: s.WriteChunks(c.WriteChunksRequest(chunks=[c.WholeChunk()] * 5000)), invalid),
        ("ReadChunks flood", lambda s, t: s.ReadChunks(c.ReadChunksRequest(chunks=[c.ChunkHeader()] * 5000)), invalid),
        ("DeleteChunk no ticket", lambda s, t: s.DeleteChunk(c.DeleteChunkRequest(key=key, index=0)), {BAD.PERMISSION_DENIED}),
        ("DeleteChunk traversal", lambda s, t: s.DeleteChunk(c.DeleteChunkRequest(key=TRAVERSAL)), invalid),
        ("DeleteChunk of a stored chunk with a read ticket", lambda s, t: s.DeleteChunk(c.DeleteChunkRequest(key=stored, index=0, ticket=mint(stored, "read"))), {BAD.PERMISSION_DENIED}),
        ("Stat with a forged authorization", lambda s, t: s.Stat(c.StatRequest(), metadata=(("authorization", "Bearer " + "x" * 600),)), {BAD.OK}),
    ]  # fmt: skip


class _StatusError(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        self.status = code


def _raise_for(code: grpc.StatusCode) -> None:
    if code != grpc.StatusCode.OK:
        raise _StatusError(code)


def expect(call: Call, stub: Any, token: str, codes: set[grpc.StatusCode]) -> None:
    """The call is refused with one of ``codes`` and says why (``OK`` among them: it may be answered)."""
    try:
        call(stub, token)
    except grpc.RpcError as exc:
        assert exc.code() in codes, (exc.code(), exc.details())
        assert exc.details(), "every refusal says why"
        assert "Traceback" not in exc.details()
        return
    except _StatusError as exc:
        assert exc.status in codes
        return
    if BAD.OK not in codes:
        pytest.fail("the request was accepted")


def fingerprint(session: Session, keys: list[str]) -> dict[Path, str]:
    """Hash of every chunk file of ``keys`` on every container: reads through parity would hide a change."""
    return {
        path: hashlib.sha256(path.read_bytes()).hexdigest()
        for container in session.fabric.containers
        for key in keys
        for path in (container.root / "data" / "chunks").rglob(f"{key}.*")
    }


def untouched(session: Session, keys: list[str], before: dict[Path, str]) -> None:
    assert len(before) == 5 * len(keys)
    assert fingerprint(session, keys) == before
    assert [session.client.repair(k, token_user=session.token, verify=True) for k in keys] == [0] * len(keys)


def methods_of(service: Any) -> set[str]:
    return {m.name for m in service.methods}


@pytest.mark.parametrize(
    ("service", "cases"),
    [
        (g.DESCRIPTOR.services_by_name["Gateway"], lambda: gateway_cases()),
        (c.DESCRIPTOR.services_by_name["Container"], lambda: container_cases(lambda key, op: "", "e" * 32)),
    ],
    ids=["gateway", "container"],
)
def test_every_rpc_has_hostile_cases(service: Any, cases: Callable[[], list[tuple[str, Call, Any]]]) -> None:
    """A new RPC without a hostile case fails here (the case names start with their method)."""
    covered = {name.split()[0] for name, _, _ in cases()}
    assert methods_of(service) - covered == set()
    assert covered - methods_of(service) == set()


def serving(session: Session, address: str) -> bool:
    with session.channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_hostile_requests_to_the_gateway(shared: Session) -> None:
    keys = [shared.client.put(data=bytes([i]) * 5000, token_user=shared.token, catalog="c") for i in range(3)]
    before = fingerprint(shared, keys)
    with shared.channel(shared.fabric.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for name, call, codes in gateway_cases():
            try:
                expect(call, stub, shared.token, codes)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from exc
        # A bounded flood of bad requests from 16 threads at once.
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda _: expect(gateway_cases()[6][1], stub, shared.token, {BAD.INVALID_ARGUMENT}), range(300)
                )
            )
    assert serving(shared, shared.fabric.gateway)
    untouched(shared, keys, before)


def test_hostile_requests_to_containers(shared: Session) -> None:
    keys = [shared.client.put(data=bytes([i]) * 5000, token_user=shared.token, catalog="c") for i in range(3)]
    before = fingerprint(shared, keys)
    holder = shared.client.stat(key=keys[0], token_user=shared.token).chunks[0].container_id
    address = next(x.address for x in shared.fabric.containers if x.container_id == holder)
    with shared.channel(address) as channel:
        stub = container_pb2_grpc.ContainerStub(channel)
        for name, call, codes in container_cases(shared.fabric.mint_ticket, keys[0]):
            try:
                expect(call, stub, shared.token, codes)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from exc
    assert serving(shared, address)
    untouched(shared, keys, before)
