"""The connection to etcd: aetcd's client with keepalive, in plain text or over TLS, to one member or several.

aetcd (1.0) only ever opens a plain-text channel to one ``host:port``;
:class:`EtcdClient` opens its own channel instead: over TLS when given
credentials (the CA that signed etcd's certificate, and the gateway's own
certificate when etcd runs with ``--client-cert-auth``), and to every member
of a cluster when given several endpoints: one channel over them all (see
:mod:`dynostore.rpc.channels`). A call in flight on a member that dies fails
``UNAVAILABLE``, which the registry reports as
:class:`~dynostore.errors.Unavailable`, and the next calls go to the other
members. Watches end with their member, and the registry opens them again on
another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher

from dynostore.rpc.channels import balancing_options, channel_target, endpoint_list
from dynostore.rpc.tls import Tls

# gRPC keepalive on the etcd connection: a ping every 10 s, with or without
# data (the watches stay open and may be quiet for hours), and a connection
# whose ping goes unanswered for 5 s (etcd frozen, a network partition) is
# dropped, which ends the watches and empties the caches they vouch for.
# etcd refuses pings more often than every 5 s.
ETCD_CHANNEL_OPTIONS = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.ping_timeout_ms": 5_000,
    "grpc.http2.max_pings_without_data": 0,
    # A restarted etcd is found again within a second, not after gRPC's default backoff (up to 120 s).
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}


class EtcdClient(aetcd.Client):
    """An aetcd client of one etcd member or several (calls spread over them), speaking TLS when ``tls`` is given."""

    def __init__(self, endpoints: str | Sequence[str], tls: Tls | None = None, **kwargs: Any) -> None:
        """Connect (lazily) to etcd at ``host:port`` endpoints (a list, or comma-separated).

        Over TLS, it presents ``tls``'s certificate if it has one; with several
        endpoints, every member's certificate must be valid for the first
        endpoint's host (one certificate naming every member does).

        Raises:
            InvalidArgument: see :func:`endpoint_list` and :func:`channel_target`.
        """
        self.endpoints = endpoint_list(endpoints)
        self.tls = tls
        options = {**ETCD_CHANNEL_OPTIONS, **balancing_options(self.endpoints, tls is not None, spread=True)}
        super().__init__(options=options, **kwargs)
        self._target = channel_target(self.endpoints)
        self._credentials = tls.channel_credentials(present_certificate=True) if tls else None

    async def connect(self) -> None:
        """Open the channel (TLS or plain text, to every endpoint) and its stubs, as aetcd's own ``connect`` does."""
        if self._connected.is_set():
            return None
        # Nothing here awaits, so no other task can see a half-made connection.
        options = list(self._options.items())
        if self._credentials is None:
            self.channel = grpc.aio.insecure_channel(self._target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(self._target, self._credentials, options=options)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
        self._connected.set()
        return None
