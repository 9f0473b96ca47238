"""Client-side channel settings shared by the SDK, gateway and containers."""

from __future__ import annotations

import grpc

from dynostore.rpc.tls import Tls

# Fragments travel as ~1 MiB messages; leave room for larger segment sizes.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Connections to a dead container should fail fast, not back off for long.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 100),
]


def open_channel(address: str, tls: Tls | None = None) -> grpc.aio.Channel:
    """Open an asyncio channel to ``address`` (``host:port``), over TLS when ``tls`` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=CHANNEL_OPTIONS)


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents ``token`` to the gateway."""
    return (("authorization", f"Bearer {token}"),)
