"""Run a gateway: connect to etcd, ensure the admin user, serve the control RPCs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from dynostore._proto import gateway_pb2_grpc as pb_grpc
from dynostore.client.pipeline import Pipeline
from dynostore.errors import InvalidArgument
from dynostore.gateway.repairer import Repairer
from dynostore.gateway.s3keys import Sealer
from dynostore.gateway.servicer import GatewayPolicy, GatewayServicer
from dynostore.gateway.tickets import ChunkTicketAuthority, PlanSigner
from dynostore.metrics.caches import export_caches
from dynostore.metrics.endpoint import MetricsEndpoint, parse_listen
from dynostore.registry import Registry
from dynostore.rpc import start_server
from dynostore.rpc.channels import endpoint_list
from dynostore.rpc.tls import Tls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewaySettings:
    """Everything a gateway needs to run."""

    # etcd's client endpoint, or those of its cluster's members: a list or a comma-separated string.
    etcd: str | list[str] = "127.0.0.1:2379"
    listen: str = "127.0.0.1:8095"
    # Default erasure-coding policy: k data + m parity fragments per segment.
    k: int = 3
    m: int = 2
    # Seconds a container stays registered without a heartbeat.
    container_ttl: int = 10
    # Objects up to this many bytes are kept inline in etcd, without chunks (0: never).
    inline_max_bytes: int = 4096
    # Object records (with inline bytes) kept in memory, coherent through an etcd watch (0: none).
    object_cache_entries: int = 10_000
    # Repair sweeps: every repair_interval seconds (0: never), rebuild chunks
    # recorded as missing, and those on containers unregistered for repair_grace seconds.
    repair_interval: float = 300.0
    repair_grace: float = 600.0
    # The bootstrap admin token comes from $DYNOSTORE_ADMIN_TOKEN or this file.
    admin_token_file: Path | None = None
    # TLS: this server's certificate and key, and the CA that signed the others'.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # TLS to etcd: the CA that signed etcd's certificate, and the certificate
    # and key the gateway presents when etcd runs with --client-cert-auth.
    etcd_tls_ca: Path | None = None
    etcd_tls_cert: Path | None = None
    etcd_tls_key: Path | None = None
    ready_file: Path | None = None
    # Prometheus metrics over HTTP at /metrics on this HOST:PORT (None: off; port 0: any free port),
    # and a file to write the bound address to before ready_file.
    metrics_listen: str | None = None
    metrics_ready_file: Path | None = None

    def __post_init__(self) -> None:
        """Refuse settings that make no sense."""
        if self.object_cache_entries < 0:
            raise InvalidArgument(f"object_cache_entries must be 0 or more, not {self.object_cache_entries}.")
        if self.metrics_listen is not None:
            parse_listen(self.metrics_listen)
        endpoint_list(self.etcd)

    @property
    def policy(self) -> GatewayPolicy:
        """The put and membership defaults of these settings."""
        return GatewayPolicy(
            k=self.k, m=self.m, container_ttl=self.container_ttl, inline_max_bytes=self.inline_max_bytes
        )


async def serve(settings: GatewaySettings, admin_token: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT; make ``admin_token`` an admin token if it is new."""
    policy = settings.policy  # checked before anything starts
    tls = Tls.load(settings.tls_ca, settings.tls_cert, settings.tls_key)
    etcd_tls = Tls.load(settings.etcd_tls_ca, settings.etcd_tls_cert, settings.etcd_tls_key, setting="etcd_tls")
    registry = Registry(settings.etcd, object_cache_entries=settings.object_cache_entries, tls=etcd_tls)
    metrics = MetricsEndpoint.maybe_start("gateway", settings.metrics_listen, settings.metrics_ready_file)
    if metrics is not None:
        export_caches(registry.caches)
    if admin_token:
        await registry.ensure_admin("admin", admin_token)
    signer = PlanSigner(await registry.plan_secret())
    cache_watch = asyncio.create_task(registry.watch())
    authority = ChunkTicketAuthority(registry, activation=policy.container_ttl)
    await authority.published()  # makes the first key if there is none
    servicer = GatewayServicer(registry, policy, signer, authority, tls)
    if admin_token:
        servicer.s3_sealer = Sealer(admin_token)
    server, bound = await start_server(
        settings.listen,
        lambda s: pb_grpc.add_GatewayServicer_to_server(servicer, s),
        ["dynostore.v1.Gateway"],
        tls,
        metrics=metrics is not None,
    )
    address = f"{settings.listen.rsplit(':', 1)[0]}:{bound}"
    log.info("Gateway serving on %s (etcd %s)", address, ",".join(endpoint_list(settings.etcd)))
    print(f"gateway listening on {address}", flush=True)
    if settings.ready_file:
        temp = settings.ready_file.with_name(settings.ready_file.name + ".tmp")
        temp.write_text(address)
        temp.replace(settings.ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Relay and repair run the client pipeline against this very gateway.
    host = "127.0.0.1" if address.startswith(("0.0.0.0:", "[::]:")) else address.rsplit(":", 1)[0]
    servicer.relay = pipeline = Pipeline(f"{host}:{bound}", tls=tls)
    repairer = None
    if settings.repair_interval > 0 and admin_token:
        repairer = Repairer(
            registry,
            pipeline,
            admin_token,
            interval=settings.repair_interval,
            grace=settings.repair_grace,
            delete_chunks=servicer.delete_chunks,
        )
        sweeps = asyncio.create_task(repairer.run())
    elif settings.repair_interval > 0:
        log.warning("No admin token was given: this gateway runs no repair sweeps.")
    await stop.wait()
    if repairer is not None:
        sweeps.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeps
    await server.stop(grace=2)
    await pipeline.close()
    cache_watch.cancel()
    await registry.close()
    if metrics is not None:
        metrics.close()
