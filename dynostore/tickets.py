"""Chunk tickets: the gateway's signed permission to read or write one object's chunks.

A ticket is ``<key id>.<expires>.<op>.<signature>``: an Ed25519 signature
(base64url) over the key id, the object key, the operation (``read``,
``write``, which also allows deleting, or ``repair``, which also allows
replacing a stored copy) and the expiry (Unix seconds). The
gateway signs with its newest key; a container accepts tickets signed with any
key the gateway currently publishes, so keys rotate without downtime.

A *run ticket*, ``<key id>.<expires>.<op>.<count>.<signature>``, covers the
run of keys a PlanPut hands out in one call: ``count`` keys sharing their
first ``RUN_PREFIX`` hex digits (random) and numbered 0 to count-1 in the
last ones. One signature then serves a whole plan, and a container that has
verified it once knows it for the other keys of the run.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dynostore.errors import PermissionDenied, Unavailable
from dynostore.metrics import TICKET_REJECTIONS
from dynostore.validation import KEY_PATTERN, decimal

OPS = ("read", "write", "repair")  # repair: write, delete, and replace a stored copy


# The keys of a run share this many leading hex digits; the other 8 number them.
RUN_PREFIX = 24
# Verified signatures kept per container (a run's ticket is checked once, then looked up).
_VERIFIED_MAX = 4096


def _message(kid: str, subject: str, op: str, expires: int) -> bytes:
    """What is signed: ``subject`` is an object key, or ``<prefix>[<count>]`` for a run."""
    return f"dynostore-chunk-ticket-v1\n{kid}\n{subject}\n{op}\n{expires}".encode()


def _signed(private_key: Ed25519PrivateKey, kid: str, subject: str, op: str, lifetime: float) -> tuple[int, str]:
    if op not in OPS:
        raise ValueError(f"Unknown ticket operation {op!r}.")
    expires = int(time.time() + lifetime)
    signature = private_key.sign(_message(kid, subject, op, expires))
    return expires, base64.urlsafe_b64encode(signature).decode().rstrip("=")


def sign(private_key: Ed25519PrivateKey, kid: str, key: str, op: str, lifetime: float) -> str:
    """A ticket for ``op`` on the chunks of ``key``, valid for ``lifetime`` seconds."""
    expires, signature = _signed(private_key, kid, key, op, lifetime)
    return f"{kid}.{expires}.{op}.{signature}"


def run_keys(prefix: str, count: int) -> list[str]:
    """The ``count`` object keys of the run starting with ``prefix`` (``RUN_PREFIX`` hex digits)."""
    if len(prefix) != RUN_PREFIX:
        raise ValueError(f"A run's prefix has {RUN_PREFIX} hex digits, not {len(prefix)}.")
    return [f"{prefix}{n:08x}" for n in range(count)]


def sign_run(private_key: Ed25519PrivateKey, kid: str, prefix: str, count: int, op: str, lifetime: float) -> str:
    """One ticket for ``op`` on the chunks of every key of :func:`run_keys` (``prefix``, ``count``)."""
    expires, signature = _signed(private_key, kid, f"{prefix}[{count}]", op, lifetime)
    return f"{kid}.{expires}.{op}.{count}.{signature}"


def _subject(key: str, count_text: str | None) -> str | None:
    """What a ticket for ``key`` must have been signed over (None: a run that does not hold ``key``)."""
    if count_text is None:
        return key
    if not KEY_PATTERN.fullmatch(key) or int(key[RUN_PREFIX:], 16) >= int(count_text):
        return None
    return f"{key[:RUN_PREFIX]}[{count_text}]"


def _refused(reason: str, message: str) -> PermissionDenied:
    """The error refusing a ticket, counted under ``reason`` (one of a few fixed words)."""
    TICKET_REJECTIONS.labels(reason).inc()
    return PermissionDenied(message)


class TicketVerifier:
    """Checks tickets against the public keys the gateway publishes."""

    def __init__(self) -> None:
        """Start with no keys: every ticket is refused until :meth:`set_keys`."""
        self._keys: dict[str, Ed25519PublicKey] = {}
        # (key id, signature, signed message) of tickets verified already.
        self._verified: set[tuple[str, str, bytes]] = set()

    @property
    def ready(self) -> bool:
        """Whether any key is known."""
        return bool(self._keys)

    def set_keys(self, keys: Mapping[str, bytes]) -> None:
        """Replace the accepted keys (id -> raw public key)."""
        self._keys = {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in keys.items()}
        self._verified.clear()

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
        expires = decimal(parts[1]) if len(parts) in (4, 5) else None
        count_text = parts[3] if len(parts) == 5 else None
        if expires is None or (count_text is not None and decimal(count_text) is None):
            raise _refused("malformed", "The chunk ticket is malformed.")
        kid, ticket_op, signature = parts[0], parts[2], parts[-1]
        public = self._keys.get(kid)
        if public is None:
            raise _refused("unknown_key", "The chunk ticket is signed with a key this container does not accept.")
        allowed = (op,) if isinstance(op, str) else op
        if ticket_op not in allowed:
            raise _refused(
                "wrong_operation", f"The chunk ticket allows {ticket_op[:10]!r}, not {' or '.join(allowed)!r}."
            )
        subject = _subject(key, count_text)
        if subject is None:
            raise _refused("bad_signature", "The chunk ticket is not valid for this object.")
        message = _message(kid, subject, ticket_op, expires)
        if (kid, signature, message) not in self._verified:
            try:
                raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
                public.verify(raw, message)
            except (InvalidSignature, ValueError):
                raise _refused("bad_signature", "The chunk ticket is not valid for this object.") from None
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified.add((kid, signature, message))
        if expires < time.time():
            raise _refused("expired", "The chunk ticket has expired; ask the gateway again.")
