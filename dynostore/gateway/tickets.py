"""Plan tickets (proof that a caller was given a key to commit) and chunk-ticket signing.

PlanPut hands out a fresh key with a ticket, an HMAC-SHA256 (keyed with a
secret all gateways share through etcd) over the key, the owner and an expiry.
CommitPut accepts the key only with a valid, unexpired ticket of the same
owner, so planning a put costs no etcd write and any gateway can commit it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore import tickets as chunk_tickets
from dynostore.errors import FailedPrecondition, PermissionDenied
from dynostore.registry import Registry
from dynostore.registry.registry import TicketKeyRecord
from dynostore.validation import decimal


class PlanSigner:
    """Signs and checks plan tickets with one shared secret."""

    def __init__(self, secret: bytes, lifetime: float = 6 * 3600) -> None:
        """Sign with ``secret``; tickets stay valid for ``lifetime`` seconds."""
        self._secret = secret
        self.lifetime = lifetime

    def _mac(self, key: str, owner: str, expires: int) -> str:
        message = f"{key}\n{owner}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, key: str, owner: str, now: float | None = None) -> tuple[str, int]:
        """Return ``(ticket, expires)`` for ``owner`` to commit ``key``."""
        expires = int((time.time() if now is None else now) + self.lifetime)
        return f"{expires}.{self._mac(key, owner, expires)}", expires

    def check(self, ticket: str, key: str, owner: str, now: float | None = None) -> None:
        """Accept the ticket or raise.

        Raises:
            PermissionDenied: the ticket is malformed or not for this key and owner.
            FailedPrecondition: the ticket expired.
        """
        expires_text, _, mac = ticket.partition(".")
        expires = decimal(expires_text)
        if expires is None or not hmac.compare_digest(mac, self._mac(key, owner, expires)):
            raise PermissionDenied(f"The plan ticket does not allow {owner} to commit {key}.")
        if expires < (time.time() if now is None else now):
            raise FailedPrecondition(f"The plan of {key} expired; put the object again.")


class ChunkTicketAuthority:
    """Signs chunk tickets with the registry's newest key; knows which keys containers must accept."""

    def __init__(
        self, registry: Registry, lifetime: float = 3600, refresh_seconds: float = 5.0, activation: float = 10.0
    ) -> None:
        """Sign tickets valid for ``lifetime`` seconds; re-read the keys every ``refresh_seconds``.

        A rotated-in key is published at once but signed with only after
        ``activation`` seconds (the container lease: every live container
        has heartbeated, and so learned the key, by then).
        """
        self._registry = registry
        self.lifetime = lifetime
        self.activation = activation
        self._refresh_seconds = refresh_seconds
        self._records: list[TicketKeyRecord] = []
        self._read_at = -1e9
        self._read_wall = 0.0  # time.time() of that read
        self._signing: tuple[str, Ed25519PrivateKey] | None = None

    async def _keys(self) -> list[TicketKeyRecord]:
        now = time.time()
        due = any(r.sign_after > self._read_wall and r.sign_after <= now for r in self._records)
        if due or time.monotonic() - self._read_at > self._refresh_seconds:
            records = await self._registry.ticket_keys()
            if not records:
                await self._registry.add_first_ticket_key()
                records = await self._registry.ticket_keys()
                now = time.time()
            if not any(r.signing(now) for r in records):  # none signs now (clocks far apart): make one
                await self._registry.add_ticket_key(grace=None)
                records = await self._registry.ticket_keys()
                now = time.time()
            self._records, self._read_at, self._read_wall = records, time.monotonic(), now
            newest = [r for r in records if r.signing(now)][-1]
            if self._signing is None or self._signing[0] != newest.kid:
                raw = base64.b64decode(newest.private)
                self._signing = (newest.kid, Ed25519PrivateKey.from_private_bytes(raw))
        return self._records

    async def published(self) -> dict[str, bytes]:
        """Public keys that tickets may be signed with now (id -> raw key)."""
        now = time.time()
        return {r.kid: base64.b64decode(r.public) for r in await self._keys() if r.active(now)}

    async def _signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        """The id and private key that tickets are signed with now."""
        await self._keys()
        assert self._signing is not None
        return self._signing

    async def sign(self, key: str, op: str, lifetime: float | None = None) -> str:
        """A ticket for ``op`` (read or write) on the chunks of ``key``."""
        kid, private = await self._signing_key()
        return chunk_tickets.sign(private, kid, key, op, lifetime or self.lifetime)

    async def sign_run(self, prefix: str, count: int, op: str, lifetime: float | None = None) -> str:
        """One ticket for ``op`` on the chunks of the ``count`` keys of the run ``prefix`` (see :func:`run_keys`)."""
        kid, private = await self._signing_key()
        return chunk_tickets.sign_run(private, kid, prefix, count, op, lifetime or self.lifetime)

    async def rotate(self, grace: float | None = None) -> str:
        """Add a new key, signed with after ``activation``; older keys stay accepted ``grace`` seconds more."""
        kid = await self._registry.add_ticket_key(
            grace=self.lifetime if grace is None else grace, activation=self.activation
        )
        self._read_at = -1e9
        return kid
