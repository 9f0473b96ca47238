"""Plan tickets: proof that a caller was given a key to commit.

PlanPut hands out a fresh key with a ticket, an HMAC-SHA256 (keyed with a
secret all gateways share through etcd) over the key, the owner and an expiry.
CommitPut accepts the key only with a valid, unexpired ticket of the same
owner, so planning a put costs no etcd write and any gateway can commit it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from dynostore.errors import FailedPrecondition, PermissionDenied


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
        if not expires_text.isdigit() or not hmac.compare_digest(mac, self._mac(key, owner, int(expires_text))):
            raise PermissionDenied(f"The plan ticket does not allow {owner} to commit {key}.")
        if int(expires_text) < (time.time() if now is None else now):
            raise FailedPrecondition(f"The plan of {key} expired; put the object again.")
