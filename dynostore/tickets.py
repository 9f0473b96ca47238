"""Chunk tickets: the gateway's signed permission to read or write one object's chunks.

A ticket is ``<key id>.<expires>.<op>.<signature>``: an Ed25519 signature
(base64url) over the key id, the object key, the operation (``read``,
``write``, which also allows deleting, or ``repair``, which also allows
replacing a stored copy) and the expiry (Unix seconds). The
gateway signs with its newest key; a container accepts tickets signed with any
key the gateway currently publishes, so keys rotate without downtime.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dynostore.errors import PermissionDenied, Unavailable
from dynostore.metrics import TICKET_REJECTIONS

OPS = ("read", "write", "repair")  # repair: write, delete, and replace a stored copy


def _message(kid: str, key: str, op: str, expires: int) -> bytes:
    return f"dynostore-chunk-ticket-v1\n{kid}\n{key}\n{op}\n{expires}".encode()


def sign(private_key: Ed25519PrivateKey, kid: str, key: str, op: str, lifetime: float) -> str:
    """A ticket for ``op`` on the chunks of ``key``, valid for ``lifetime`` seconds."""
    if op not in OPS:
        raise ValueError(f"Unknown ticket operation {op!r}.")
    expires = int(time.time() + lifetime)
    signature = private_key.sign(_message(kid, key, op, expires))
    return f"{kid}.{expires}.{op}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


def _refused(reason: str, message: str) -> PermissionDenied:
    """The error refusing a ticket, counted under ``reason`` (one of a few fixed words)."""
    TICKET_REJECTIONS.labels(reason).inc()
    return PermissionDenied(message)


class TicketVerifier:
    """Checks tickets against the public keys the gateway publishes."""

    def __init__(self) -> None:
        """Start with no keys: every ticket is refused until :meth:`set_keys`."""
        self._keys: dict[str, Ed25519PublicKey] = {}

    @property
    def ready(self) -> bool:
        """Whether any key is known."""
        return bool(self._keys)

    def set_keys(self, keys: Mapping[str, bytes]) -> None:
        """Replace the accepted keys (id -> raw public key)."""
        self._keys = {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in keys.items()}

    def check(self, ticket: str, key: str, op: str | tuple[str, ...]) -> None:
        """Accept the ticket for ``op`` (or any one of several) on ``key``, or raise.

        Raises:
            PermissionDenied: the ticket is missing, malformed, forged, expired,
                or for another key or operation.
            Unavailable: this container has no keys yet (not registered).
        """
        if not self._keys:
            TICKET_REJECTIONS.labels("not_registered").inc()
            raise Unavailable("This container has not registered with a gateway yet; try again shortly.")
        if not ticket:
            raise _refused("missing", "Chunk calls need a ticket from the gateway.")
        parts = ticket.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            raise _refused("malformed", "The chunk ticket is malformed.")
        kid, expires_text, ticket_op, signature = parts
        public = self._keys.get(kid)
        if public is None:
            raise _refused("unknown_key", "The chunk ticket is signed with a key this container does not accept.")
        allowed = (op,) if isinstance(op, str) else op
        if ticket_op not in allowed:
            raise _refused(
                "wrong_operation", f"The chunk ticket allows {ticket_op[:10]!r}, not {' or '.join(allowed)!r}."
            )
        try:
            raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            public.verify(raw, _message(kid, key, ticket_op, int(expires_text)))
        except (InvalidSignature, ValueError):
            raise _refused("bad_signature", "The chunk ticket is not valid for this object.") from None
        if int(expires_text) < time.time():
            raise _refused("expired", "The chunk ticket has expired; ask the gateway again.")
