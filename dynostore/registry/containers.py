"""Containers (membership and owners), chunk-ticket keys and the plan secret gateways share."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import asdict
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore.registry import keys
from dynostore.registry.base import RegistryBase, etcd_errors
from dynostore.registry.records import TicketKeyRecord, dumps


class ContainerCalls(RegistryBase):
    """Container registration, leases and owners; the keys gateways sign tickets and plans with."""

    @etcd_errors
    async def plan_secret(self) -> bytes:
        """The secret shared by all gateways for plan tickets (made on first use)."""
        fresh = secrets.token_bytes(32)
        await self.etcd.transaction(
            compare=[self._tx.create(keys.plan_secret()) == 0],
            success=[self._tx.put(keys.plan_secret(), fresh)],
            failure=[],
        )
        found = await self.etcd.get(keys.plan_secret())
        assert found is not None
        return bytes(found.value)

    @etcd_errors
    async def ticket_keys(self) -> list[TicketKeyRecord]:
        """Every chunk-ticket key, oldest first."""
        found = await self.etcd.get_prefix(keys.ticket_key(""))
        return sorted((TicketKeyRecord(**json.loads(kv.value)) for kv in found), key=lambda r: r.created)

    @etcd_errors
    async def add_first_ticket_key(self) -> None:
        """Make the fabric's first chunk-ticket key, unless a gateway made one already.

        Gateways (or one gateway's workers) starting together on a new fabric
        would otherwise each make a key and sign with it before the containers
        had heard of the others'.
        """
        record = _new_ticket_key(time.time(), 0.0)
        await self.etcd.transaction(
            compare=[self._tx.create(keys.first_ticket_key()) == 0],
            success=[
                self._tx.put(keys.first_ticket_key(), record.kid.encode()),
                self._tx.put(keys.ticket_key(record.kid), dumps(asdict(record))),
            ],
            failure=[],
        )

    @etcd_errors
    async def add_ticket_key(self, grace: float | None, activation: float = 0.0) -> str:
        """Add a new key, signed with from ``activation`` seconds from now (containers learn it meanwhile).

        With ``grace``, the current keys retire ``grace`` seconds after the new one starts signing.
        """
        now = time.time()
        record = _new_ticket_key(now, activation)
        now += activation
        ops = [self._tx.put(keys.ticket_key(record.kid), dumps(asdict(record)))]
        for old in await self.ticket_keys():
            if old.retire_after is not None and old.retire_after < now - 86400:
                ops.append(self._tx.delete(keys.ticket_key(old.kid)))  # long retired
            elif grace is not None and (old.retire_after is None or old.retire_after > now + grace):
                retiring = TicketKeyRecord(**{**asdict(old), "retire_after": now + grace})
                ops.append(self._tx.put(keys.ticket_key(old.kid), dumps(asdict(retiring))))
        await self.etcd.transaction(compare=[], success=ops, failure=[])
        return record.kid

    @etcd_errors
    async def claim_container(self, container_id: str, user: str) -> str:
        """The container user that owns ``container_id``; ``user`` becomes it if nobody is.

        Owners are kept until their user is removed, so a container
        credential cannot act for (or pose as) another user's containers.
        """
        if self._container_owners.get(container_id) == user:
            return user
        key = keys.container_owner(container_id)
        claimed, replies = await self.etcd.transaction(
            compare=[self._tx.create(key) == 0],
            success=[self._tx.put(key, user.encode())],
            failure=[self._tx.get(key)],
        )
        owner = user if claimed else replies[0][0][0].decode()  # a range reply: [(value, kv meta)]
        self._container_owners[container_id] = owner
        return owner

    @etcd_errors
    async def register_container(self, info: dict[str, Any], ttl: int) -> int:
        """Record a live container under a new lease and return the lease id."""
        lease = await self.etcd.lease(ttl)
        await self.etcd.put(keys.container(info["id"]), dumps(info), lease=lease)
        return int(lease.id)

    @etcd_errors
    async def refresh_container(self, info: dict[str, Any], lease_id: int) -> bool:
        """Keep a container's lease alive and update its record; False if the lease is gone."""
        reply = await self.etcd.refresh_lease(lease_id)
        if reply is None or reply.TTL <= 0:
            return False
        current = await self.etcd.get(keys.container(info["id"]))
        if current is None or current.lease != lease_id:
            return False
        await self.etcd.put(keys.container(info["id"]), dumps(info), lease=lease_id)
        return True

    @etcd_errors
    async def known_containers(self) -> set[str]:
        """Ids of every container that ever registered (until its user is removed), live or not."""
        prefix = keys.container_owners_prefix()
        found = await self.etcd.get_prefix(prefix, keys_only=True)
        return {kv.key[len(prefix) :].decode() for kv in found}

    @etcd_errors
    async def containers(self) -> list[dict[str, Any]]:
        """Records of all live containers."""
        found = await self.etcd.get_prefix(keys.containers_prefix())
        return [json.loads(kv.value) for kv in found]


def _new_ticket_key(now: float, activation: float) -> TicketKeyRecord:
    """A fresh Ed25519 chunk-ticket key, made at ``now``, signed with ``activation`` seconds later."""
    private = Ed25519PrivateKey.generate()
    return TicketKeyRecord(
        kid=secrets.token_hex(4),
        private=base64.b64encode(private.private_bytes_raw()).decode(),
        public=base64.b64encode(private.public_key().public_bytes_raw()).decode(),
        created=now,
        sign_after=now + activation,
    )
