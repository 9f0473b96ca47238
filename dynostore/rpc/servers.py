"""Start grpc.aio servers with health checking, reflection and error mapping."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dynostore.metrics.rpc import MetricsInterceptor
from dynostore.rpc.channels import CHANNEL_OPTIONS
from dynostore.rpc.errors import ErrorMappingInterceptor
from dynostore.rpc.observe import AccessLogInterceptor
from dynostore.rpc.tls import Tls

# gRPC servers set SO_REUSEPORT by default: a second server on a port in use would bind it
# without error and take half its connections. A port in use must be an error instead.
SERVER_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)]


async def start_server(
    address: str,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    tls: Tls | None = None,
    *,
    metrics: bool = False,
    access_log: bool = False,
    share_port: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """Start a server on ``address`` and return it with its bound port.

    ``register`` adds the servicers; ``service_names`` are their full names,
    announced through health checking and server reflection. With ``tls``
    the server speaks only TLS. With ``metrics`` every call is counted and
    timed (:class:`~dynostore.metrics.rpc.MetricsInterceptor`, outside the
    error mapping so that it sees the final status). With ``access_log``
    every call is logged (method, status, duration, request id). With
    ``share_port`` the port is bound with SO_REUSEPORT, beside the other
    workers of one server (:mod:`dynostore.rpc.workers`).
    """
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorMappingInterceptor()]
    if access_log:
        interceptors.insert(0, AccessLogInterceptor())
    if metrics:
        interceptors.insert(0, MetricsInterceptor())
    options = [*CHANNEL_OPTIONS, ("grpc.so_reuseport", 1)] if share_port else SERVER_OPTIONS
    server = grpc.aio.server(options=options, interceptors=interceptors)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    port = server.add_secure_port(address, tls.server_credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"Could not listen on {address}.")
    await server.start()
    for name in [*service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def write_ready_file(path: Path, text: str) -> None:
    """Write ``text`` (a bound address) to ``path`` at once: a reader sees no file or all of it."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    temp.replace(path)
