"""The connection to etcd: aetcd's client with keepalive, in plain text or over TLS.

aetcd (1.0) only ever opens a plain-text channel; :class:`EtcdClient` opens a
TLS one when given credentials (the CA that signed etcd's certificate, and
the gateway's own certificate when etcd runs with ``--client-cert-auth``).
"""

from __future__ import annotations

from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher

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
    """An aetcd client that speaks TLS when ``tls`` is given."""

    def __init__(self, address: str, tls: Tls | None = None, **kwargs: Any) -> None:
        """Connect (lazily) to etcd at ``host:port``; over TLS, presenting ``tls``'s certificate if it has one."""
        host, _, port = address.rpartition(":")
        super().__init__(host=host or "127.0.0.1", port=int(port), options=ETCD_CHANNEL_OPTIONS, **kwargs)
        self._credentials = tls.channel_credentials(present_certificate=True) if tls else None

    async def connect(self) -> None:
        """Open the channel (TLS) and its stubs, as aetcd's own ``connect`` does for plain text."""
        if self._credentials is None:
            return await super().connect()
        if self._connected.is_set():
            return None
        # Nothing here awaits, so no other task can see a half-made connection.
        self.channel = grpc.aio.secure_channel(
            f"{self._host}:{self._port}", self._credentials, options=list(self._options.items())
        )
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
        self._connected.set()
        return None
