"""Client-side channel settings shared by the SDK, gateway and containers.

A channel may lead to several servers of one kind (gateways, or the members
of an etcd cluster), given as a list of ``host:port`` or one comma-separated
string. Two gRPC policies choose among them:

* ``round_robin`` (etcd members, whose reads are linearizable on any
  member): one connection per server, calls spread over those connected;
  a server that dies drops out and is taken back once it answers again.
* ``pick_first`` over the list in a random order of the channel's own
  (gateways): each channel keeps to one gateway, so a client reads its own
  writes through that gateway's record cache, and channels (clients,
  containers) spread over the gateways. When its gateway dies, the channel
  connects to the next one that answers.

Either way the calls in flight on a server that dies fail ``UNAVAILABLE``,
and a retry goes to another.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Sequence
from typing import Any

import grpc

from dynostore.errors import InvalidArgument
from dynostore.rpc.requests import request_metadata
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
    # Each channel its own connections (gRPC shares them between a process's channels to one address
    # by default): several Clients in one process then spread over a server's workers, which the
    # kernel hands connections, not calls.
    ("grpc.use_local_subchannel_pool", 1),
]


def endpoint_list(endpoints: str | Sequence[str]) -> list[str]:
    """``host:port`` endpoints from a comma-separated string or a list of them.

    Raises:
        InvalidArgument: no endpoint is given, or one has no port.
    """
    given = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    found = [endpoint.strip() for endpoint in given if endpoint.strip()]
    if not found:
        raise InvalidArgument("Give at least one host:port address.")
    for endpoint in found:
        if not endpoint.rpartition(":")[2].isdigit():
            raise InvalidArgument(f"Address {endpoint!r} is not host:port.")
    return found


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def channel_target(endpoints: Sequence[str]) -> str:
    """The gRPC target of ``endpoints``: ``host:port`` for one, an ``ipv4:``/``ipv6:`` address list for several.

    Host names among several endpoints are resolved now (the first address of each).

    Raises:
        InvalidArgument: a host name does not resolve, or the endpoints mix IPv4 and IPv6.
    """
    if len(endpoints) == 1:
        return endpoints[0]
    addresses = []
    for endpoint in endpoints:
        host, port = _split(endpoint)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                ip = ipaddress.ip_address(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])
            except OSError as exc:
                raise InvalidArgument(f"Cannot resolve {endpoint!r}: {exc}") from None
        addresses.append((ip, port))
    if len({ip.version for ip, _ in addresses}) > 1:
        raise InvalidArgument(f"The addresses {list(endpoints)} mix IPv4 and IPv6; use one kind.")
    if addresses[0][0].version == 4:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in addresses)
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in addresses)


def balancing_options(endpoints: Sequence[str], tls: bool, *, spread: bool) -> dict[str, Any]:
    """Channel options for a channel to ``endpoints``: with several, ``round_robin`` if ``spread``, else ``pick_first``.

    Over TLS, every server's certificate must then be valid for the first
    endpoint's host (one certificate naming every server is).
    """
    if len(endpoints) == 1:
        return {}
    options: dict[str, Any] = {"grpc.lb_policy_name": "round_robin" if spread else "pick_first"}
    if tls:
        options["grpc.ssl_target_name_override"] = _split(endpoints[0])[0]
    return options


def open_channel(address: str | Sequence[str], tls: Tls | None = None) -> grpc.aio.Channel:
    """Open an asyncio channel to ``address`` (``host:port``, or several), over TLS when ``tls`` is given.

    With several, the channel keeps to one of them, taken in a random order
    (``pick_first``), and moves on to the next when it stops answering.

    Raises:
        InvalidArgument: see :func:`endpoint_list` and :func:`channel_target`.
    """
    endpoints = endpoint_list(address)
    target = channel_target(random.sample(endpoints, len(endpoints)))
    options = [*CHANNEL_OPTIONS, *balancing_options(endpoints, tls is not None, spread=False).items()]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents ``token`` to the gateway, and the current request id (if any)."""
    return (("authorization", f"Bearer {token}"), *request_metadata())
