"""Count and time every RPC a server answers, by service, method and final status code.

:class:`MetricsInterceptor` goes first in a server's interceptors, outside
:class:`~dynostore.rpc.errors.ErrorMappingInterceptor`, so it sees the status
that mapping chose (see :mod:`dynostore.rpc.observe`). A stream counts once,
when it ends. Methods no servicer registered are not counted (grpc answers
them ``UNIMPLEMENTED`` itself), so the labels take only the values the
servers define.
"""

from __future__ import annotations

import time

import grpc

from dynostore.metrics import RPC_DURATION, RPC_REQUESTS
from dynostore.rpc.observe import ObservingInterceptor, Recorder


class _Counter:
    """Counts and times the calls of one method."""

    def __init__(self, method: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self.labels = (service, name)

    def record(self, started: float, context: grpc.aio.ServicerContext, code: str) -> None:
        RPC_REQUESTS.labels(*self.labels, code).inc()
        RPC_DURATION.labels(*self.labels, code).observe(time.perf_counter() - started)


class MetricsInterceptor(ObservingInterceptor):
    """Record ``dynostore_rpc_requests_total`` and ``dynostore_rpc_duration_seconds`` for every call."""

    def recorder(self, method: str) -> Recorder:
        """The counters of ``method``."""
        return _Counter(method)
