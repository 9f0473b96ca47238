"""The invariants a fault scenario is held to once every process is back: what the ledger says was promised."""

from __future__ import annotations

import time

import grpc

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.client import Client, ObjectStat
from dynostore.errors import DynoStoreError, FailedPrecondition, NotFound, Unavailable
from dynostore.local import LocalFabric
from dynostore.rpc import auth_metadata
from tests.faults.ledger import CATALOG, RECOVERY_LIMIT, Attempt, Ledger, N, digest, error_name, within


class Checker:
    """The invariants, checked once every process is back and the fabric is healthy."""

    def __init__(self, fabric: LocalFabric, client: Client, token: str, ledger: Ledger) -> None:
        self.fabric = fabric
        self.client = client
        self.token = token
        self.ledger = ledger
        self.figures = ledger.figures

    def violation(self, message: str) -> None:
        self.ledger.violation(message)

    def registered(self) -> bool:
        """Whether every container is registered, at the address it serves on now."""
        with grpc.insecure_channel(self.fabric.gateway) as channel:
            try:
                reply = gateway_pb2_grpc.GatewayStub(channel).ListContainers(
                    gateway_pb2.ListContainersRequest(), metadata=auth_metadata(self.token), timeout=10
                )
            except grpc.RpcError:
                return False
        listed = {c.id: c.address for c in reply.containers}
        return all(listed.get(c.container_id) == c.address for c in self.fabric.containers)

    def read(self, key: str) -> bytes | None:
        """The object's bytes, None if there is none; any other failure is a violation (raised as AssertionError)."""
        try:
            return self.client.get(key=key, token_user=self.token)
        except NotFound:
            return None

    def check(self) -> None:
        started = time.monotonic()
        ledger = self.ledger
        listed = {info.key: info for info in self.client.list(catalog=CATALOG, token_user=self.token)}
        expected: dict[str, Attempt] = {}  # every object that must survive, with the put that made it
        for attempt in list(ledger.attempts.values()):
            key = attempt.key or attempt.planned
            if not key:
                continue  # an unplanned put that raised: found by name in the listing below
            try:
                data = self.read(key)
            except DynoStoreError as exc:
                self.violation(f"after recovery, {key} ({attempt.name}) cannot be read: {error_name(exc)}: {exc}")
                continue
            must_exist = bool(attempt.key or attempt.landed) and key not in ledger.evicting
            if data is None:
                if must_exist:
                    what = "returned" if attempt.key else "found committed by a retry"
                    self.violation(f"after recovery, {key} ({attempt.name}, {what}) is gone; it was never evicted")
                elif key in listed:
                    self.violation(f"{key} ({attempt.name}) is listed but reads as absent")
                continue
            if digest(data) not in attempt.readable(float("inf")):
                self.violation(f"after recovery, {key} ({attempt.name}) reads back {ledger.version_of(attempt, data)}")
            attempt = attempt.settled(data)  # the version it holds, for the listing and the sweep
            if key in ledger.evicted:
                self.violation(f"after recovery, {key} ({attempt.name}) is readable although its evict returned")
            if key not in listed:
                self.violation(f"{key} ({attempt.name}) is readable but not listed in its catalog")
            expected[key] = attempt
            if not attempt.key:
                self.figures.appeared += 1
        for key, info in listed.items():
            if key in expected:
                attempt = expected[key]
                if (info.name, info.size) != (attempt.name, attempt.size):
                    self.violation(f"{key} is listed as {info.name!r} of {info.size} bytes, put as {attempt.name!r}")
                continue
            raised = ledger.attempts.get(info.name)
            if raised is None or raised.key or raised.planned:
                self.violation(f"listed object {key} ({info.name!r}, {info.size} bytes) matches no put that raised")
                continue
            if raised.size != info.size:
                self.violation(f"listed object {key} has {info.size} bytes; put {info.name} had {raised.size}")
            try:
                data = self.read(key)
            except DynoStoreError as exc:
                self.violation(f"listed object {key} ({info.name}), from a put that raised, is unreadable: {exc}")
                continue
            if data is None or digest(data) != raised.digest:
                self.violation(f"listed object {key} ({info.name}), from a put that raised, is not what was put")
                continue
            self.figures.appeared += 1
            expected[key] = raised  # a put that raised: the ledger knows it by name only
        self.figures.objects_checked = len(expected)
        self.sweep(expected)
        self.figures.verify_seconds = time.monotonic() - started

    def explain(self, key: str, attempt: Attempt, before: ObjectStat, rebuilt: int) -> None:
        """Count why the sweep had chunks of ``key`` to rebuild; one it cannot explain is a violation."""
        reasons = []
        if any(not c.stored for c in before.chunks):
            reasons.append("recorded missing")
        if any(c.stored and not c.live for c in before.chunks):
            reasons.append("on a container gone")
        if len({c.container_id for c in before.chunks}) < len(before.chunks):
            reasons.append("sharing a container")
        if self.ledger.damaged.get(key):
            reasons.append("damaged by the suite")
        for reason in reasons:
            self.figures.rebuilt_because[reason] += 1
        if not reasons:
            self.violation(
                f"the repair sweep rebuilt {rebuilt} chunks of {key} ({attempt.name}, put by {attempt.op or 'a put'} "
                f"that {'returned' if attempt.key else 'raised'}), all recorded stored, on live containers of their "
                f"own, and none damaged by the suite: chunks {before.chunks}"
            )

    def sweep(self, objects: dict[str, Attempt]) -> None:
        """Repair (verify) every surviving object (key: its put); then each has n chunks on distinct live containers."""
        for key in sorted(objects):
            attempt = objects[key]
            if not attempt.chunked:
                continue
            rebuilt: list[int] = []

            def repaired(key: str = key, rebuilt: list[int] = rebuilt) -> bool:
                try:
                    rebuilt.append(self.client.repair(key, token_user=self.token, verify=True))
                except (Unavailable, FailedPrecondition):
                    return False  # a container just back, or a repair sweep of the gateway's in between
                return True

            try:
                before = self.client.stat(key=key, token_user=self.token)
                if not within(RECOVERY_LIMIT, repaired):
                    self.violation(f"repair of {key} ({attempt.name}) kept failing after recovery")
                    continue
                self.figures.rebuilt += sum(rebuilt)
                if sum(rebuilt):
                    self.explain(key, attempt, before, sum(rebuilt))
                stat = self.client.stat(key=key, token_user=self.token)
                again = self.client.repair(key, token_user=self.token, verify=True)
                data = self.read(key)
            except DynoStoreError as exc:
                self.violation(f"repair sweep of {key} ({attempt.name}): {error_name(exc)}: {exc}")
                continue
            chunks = sorted(stat.chunks, key=lambda c: c.index)
            where = {c.container_id for c in chunks}
            if [c.index for c in chunks] != list(range(N)) or not all(c.stored and c.live for c in chunks):
                self.violation(f"after repair, {key} ({attempt.name}) has chunks {chunks}")
            elif len(where) != N:
                self.violation(f"after repair, the {N} chunks of {key} ({attempt.name}) share containers: {chunks}")
            if again:
                self.violation(f"a second repair of {key} ({attempt.name}) rebuilt {again} more chunks")
            if data is None or digest(data) != attempt.digest:
                self.violation(f"after repair, {key} ({attempt.name}) does not read back whole")
