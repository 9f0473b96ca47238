"""Run a gateway: connect to etcd, ensure the admin user, serve the control RPCs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from dynostore import __version__
from dynostore._proto import gateway_pb2_grpc as pb_grpc
from dynostore.client.pipeline import Pipeline
from dynostore.errors import DynoStoreError, InvalidArgument
from dynostore.gateway.drain import Mover
from dynostore.gateway.repairer import Repairer
from dynostore.gateway.s3keys import Sealer
from dynostore.gateway.servicer import GatewayPolicy, GatewayServicer
from dynostore.gateway.tickets import ChunkTicketAuthority, PlanSigner
from dynostore.metrics import CATALOG_BYTES, CATALOG_OBJECTS
from dynostore.metrics.caches import export_caches
from dynostore.metrics.endpoint import MetricsEndpoint, parse_listen
from dynostore.registry import Registry
from dynostore.rpc import start_server
from dynostore.rpc.channels import endpoint_list
from dynostore.rpc.servers import write_ready_file
from dynostore.rpc.tls import Tls
from dynostore.rpc.workers import WORKER_ENV, worker_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewaySettings:
    """Everything a gateway needs to run."""

    # etcd's client endpoint, or those of its cluster's members: a list or a comma-separated string.
    etcd: str | list[str] = "127.0.0.1:2379"
    # Seconds one etcd call may take on one member (dead, frozen, or without a leader) before it
    # goes to the next; reads and compare-guarded commits are retried there, within 10 s in all.
    etcd_call_timeout: float = 1.5
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
    # Ask for a rebalance every rebalance_interval seconds (0: never; `dynostore rebalance` asks by hand).
    rebalance_interval: float = 0.0
    # Seconds between two looks in etcd for drains and rebalances to resume (0: never; then this
    # gateway runs only those asked of it, and another gateway resumes the rest).
    move_check_interval: float = 2.0
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
    # With metrics on: seconds between two reads of every catalog's object count and bytes from etcd (0: never).
    catalog_metrics_interval: float = 60.0
    # One log line per call answered (method, status, duration, request id); failures are logged anyway.
    log_requests: bool = False
    # Worker processes serving the one port (SO_REUSEPORT; see dynostore.rpc.workers); each uses a core at most.
    workers: int = 1

    def __post_init__(self) -> None:
        """Refuse settings that make no sense."""
        if not 1 <= self.workers <= 64:
            raise InvalidArgument(f"workers must be from 1 to 64, not {self.workers}.")
        if self.move_check_interval < 0:
            raise InvalidArgument(f"move_check_interval must be 0 (off) or more, not {self.move_check_interval}.")
        if self.rebalance_interval < 0:
            raise InvalidArgument(f"rebalance_interval must be 0 (off) or more, not {self.rebalance_interval}.")
        if not self.etcd_call_timeout > 0:
            raise InvalidArgument(f"etcd_call_timeout must be above 0 seconds, not {self.etcd_call_timeout}.")
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
    """Serve until SIGTERM/SIGINT; make ``admin_token`` an admin token if it is new.

    As one of several workers (``$DYNOSTORE_WORKER`` set) it shares its port,
    and only worker 0 sweeps for repairs, announces the gateway, looks for
    moves to resume and counts catalogs; every worker runs the moves asked of it.
    """
    index = worker_index()
    first = index == 0
    policy = settings.policy  # checked before anything starts
    tls = Tls.load(settings.tls_ca, settings.tls_cert, settings.tls_key)
    etcd_tls = Tls.load(settings.etcd_tls_ca, settings.etcd_tls_cert, settings.etcd_tls_key, setting="etcd_tls")
    registry = Registry(
        settings.etcd,
        object_cache_entries=settings.object_cache_entries,
        tls=etcd_tls,
        call_timeout=settings.etcd_call_timeout,
    )
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
        access_log=settings.log_requests,
        share_port=WORKER_ENV in os.environ,
    )
    address = f"{settings.listen.rsplit(':', 1)[0]}:{bound}"
    log.info(
        "Gateway%s serving on %s (etcd %s)",
        f" worker {index}" if WORKER_ENV in os.environ else "",
        address,
        ",".join(endpoint_list(settings.etcd)),
    )
    print(f"gateway listening on {address}", flush=True)
    if settings.ready_file:
        write_ready_file(settings.ready_file, address)
    announce = asyncio.create_task(_announce(registry, address, policy.container_ttl)) if first else None
    counting = None
    if first and metrics is not None and settings.catalog_metrics_interval > 0:
        counting = asyncio.create_task(_count_catalogs(registry, settings.catalog_metrics_interval))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Relay and repair run the client pipeline against this very gateway.
    host = "127.0.0.1" if address.startswith(("0.0.0.0:", "[::]:")) else address.rsplit(":", 1)[0]
    servicer.relay = pipeline = Pipeline(f"{host}:{bound}", tls=tls)
    repairer = None
    if settings.repair_interval > 0 and admin_token and first:
        repairer = Repairer(
            registry,
            pipeline,
            admin_token,
            interval=settings.repair_interval,
            grace=settings.repair_grace,
            delete_chunks=servicer.delete_chunks,
            gateway=address,
        )
        sweeps = asyncio.create_task(repairer.run())
    elif settings.repair_interval > 0 and first:
        log.warning("No admin token was given: this gateway runs no repair sweeps.")
    # Drains and rebalances: resumed by any gateway with an admin token.
    servicer.mover = mover = Mover(
        registry,
        pipeline,
        admin_token or "",
        gateway=address,
        rebalance_every=settings.rebalance_interval if first else 0.0,
        check_every=settings.move_check_interval if first else 0.0,
    )
    moves = asyncio.create_task(mover.run())
    await stop.wait()
    moves.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await moves
    if repairer is not None:
        sweeps.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeps
    for task in (announce, counting):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await server.stop(grace=2)
    await pipeline.close()
    cache_watch.cancel()
    await registry.close()
    if metrics is not None:
        metrics.close()


async def _announce(registry: Registry, address: str, ttl: int) -> None:
    """Keep this gateway listed in the fabric's status (under a lease) until cancelled; etcd outages only delay it."""
    lease_id = 0
    while True:
        try:
            if not lease_id or not await registry.refresh_gateway(lease_id):
                lease_id = await registry.register_gateway(address, __version__, ttl)
        except DynoStoreError as exc:
            log.warning("Could not announce this gateway in etcd (%s); trying again.", exc)
            lease_id = 0
        await asyncio.sleep(max(ttl / 3, 0.5))


async def _count_catalogs(registry: Registry, interval: float) -> None:
    """Keep the per-catalog gauges (objects, bytes) up to date, one full read of the catalogs per interval."""
    while True:
        try:
            totals = await registry.catalog_totals()
        except DynoStoreError as exc:
            log.warning("Could not count the catalogs' objects for the metrics (%s); trying again.", exc)
        else:
            CATALOG_OBJECTS.clear()
            CATALOG_BYTES.clear()
            for owner, name, objects, size in totals:
                CATALOG_OBJECTS.labels(owner, name).set(objects)
                CATALOG_BYTES.labels(owner, name).set(size)
        await asyncio.sleep(interval)
