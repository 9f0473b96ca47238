"""Run a data container: serve chunks and keep registered with the gateway."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

from dynostore import validation
from dynostore._proto import common_pb2, gateway_pb2, gateway_pb2_grpc
from dynostore.config import read_secret
from dynostore.container.backends import Backend, FileSystemBackend, MemoryBackend
from dynostore.container.keyfile import KEYS_FILE, follow_keys, publish_keys
from dynostore.container.scrubber import DamageReporter, Scrubber
from dynostore.container.servicer import ContainerServicer, add_to_server
from dynostore.errors import InvalidArgument
from dynostore.metrics import CONTAINER_INFO
from dynostore.metrics.backend import MeasuredBackend
from dynostore.metrics.endpoint import MetricsEndpoint, parse_listen
from dynostore.rpc import auth_metadata, open_channel, start_server
from dynostore.rpc.servers import write_ready_file
from dynostore.rpc.tls import Tls
from dynostore.rpc.tuning import tune_malloc
from dynostore.rpc.workers import WORKER_ENV, worker_index
from dynostore.tickets import TicketVerifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSettings:
    """Everything a container daemon needs to run."""

    gateway: str
    root: Path | None = None
    listen: str = "127.0.0.1:0"
    # HOST:PORT to register instead of the listen address, where a relay or NAT
    # in front of the container forwards to it (the WAN simulation's delay relay).
    advertise: str | None = None
    site: str = "default"
    backend: str = "fs"
    container_id: str | None = None
    # The token to register with comes from $DYNOSTORE_TOKEN or this file.
    token_file: Path | None = None
    # TLS: this server's certificate and key, and the CA that signed the others'.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    ready_file: Path | None = None
    # Prometheus metrics over HTTP at /metrics on this HOST:PORT (None: off; port 0: any free port),
    # and a file to write the bound address to before ready_file.
    metrics_listen: str | None = None
    metrics_ready_file: Path | None = None
    # One log line per call answered (method, status, duration, request id); failures are logged anyway.
    log_requests: bool = False
    # backend = "fs": chunks past 8 MiB are written with O_DIRECT, past the page cache, where the
    # file system takes it (False: through the page cache, so a get right after a put reads memory).
    fs_direct_writes: bool = True
    # Capacity to report for backends that have none (S3) or to cap a shared pool (RADOS).
    capacity_bytes: int | None = None
    # Seconds between scrubs (every chunk re-read and verified; damage reported); 0: never.
    scrub_interval: float = 86400.0
    # A scrub deletes chunks no object record has relied on for this long (0: never):
    # longer than any put takes between writing its chunks and committing.
    gc_grace: float = 21600.0
    # backend = "s3": credentials from the two files, else boto3's chain ($AWS_ACCESS_KEY_ID...).
    s3_bucket: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_prefix: str = ""
    s3_access_key_file: Path | None = None
    s3_secret_key_file: Path | None = None
    s3_part_size: int = 8 * 1024 * 1024
    # backend = "rados"
    rados_pool: str | None = None
    ceph_conf: Path | None = None
    rados_namespace: str = ""
    rados_object_size: int = 4 * 1024 * 1024
    # Worker processes serving the one port (SO_REUSEPORT; see dynostore.rpc.workers); each uses a core at most.
    workers: int = 1

    def __post_init__(self) -> None:
        """Refuse settings that make no sense."""
        if not 1 <= self.workers <= 64:
            raise InvalidArgument(f"workers must be from 1 to 64, not {self.workers}.")
        if self.workers > 1 and self.backend == "memory":
            raise InvalidArgument("The memory backend keeps its chunks in one process: it cannot have workers.")
        if self.workers > 1 and self.root is None:
            raise InvalidArgument("A container with workers needs root (--root): they share its state there.")
        if self.metrics_listen is not None:
            parse_listen(self.metrics_listen)
        if self.advertise is not None:
            host, sep, port = self.advertise.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise InvalidArgument(f"advertise must be HOST:PORT with a port above 0, not {self.advertise!r}.")


def container_identity(settings: ContainerSettings) -> str:
    """The container's id: given, or kept in ``root/container-id`` across restarts."""
    if settings.container_id:
        return validation.container_id(settings.container_id)
    if settings.root is None:
        return f"mem-{secrets.token_hex(4)}"
    id_file = settings.root / "container-id"
    if id_file.exists():
        return validation.container_id(id_file.read_text().strip())
    new_id = f"c-{secrets.token_hex(6)}"
    settings.root.mkdir(parents=True, exist_ok=True)
    id_file.write_text(new_id + "\n")
    return new_id


BACKENDS = ("fs", "memory", "s3", "rados")


def _check_backend_settings(settings: ContainerSettings) -> None:
    """Refuse settings of another backend than the one chosen (likely a mistake).

    Raises:
        InvalidArgument: an ``s3_*`` or RADOS setting is set for another backend.
    """
    defaults = ContainerSettings(gateway="")
    for prefix, owner in (("fs_", "fs"), ("s3_", "s3"), ("rados_", "rados"), ("ceph_", "rados")):
        for name in ContainerSettings.__dataclass_fields__:
            changed = getattr(settings, name) != getattr(defaults, name)
            if name.startswith(prefix) and settings.backend != owner and changed:
                raise InvalidArgument(
                    f"Setting {name} applies to the {owner} backend, but backend is {settings.backend!r}."
                )
    if settings.backend in ("s3", "rados") and settings.root is None and not settings.container_id:
        raise InvalidArgument(
            f"The {settings.backend} backend needs root (a small state directory that keeps the container id) "
            "or container_id, so that a restarted container keeps serving its chunks."
        )


def _s3_backend(settings: ContainerSettings) -> Backend:
    from dynostore.container.backends.s3 import S3Backend

    if not settings.s3_bucket:
        raise InvalidArgument("The s3 backend needs s3_bucket (--s3-bucket).")
    if (settings.s3_access_key_file is None) != (settings.s3_secret_key_file is None):
        raise InvalidArgument("Set both s3_access_key_file and s3_secret_key_file, or neither.")
    access_key = secret_key = None
    if settings.s3_access_key_file and settings.s3_secret_key_file:
        access_key = read_secret(None, settings.s3_access_key_file, "S3 access key (s3_access_key_file)")
        secret_key = read_secret(None, settings.s3_secret_key_file, "S3 secret key (s3_secret_key_file)")
    return S3Backend(
        settings.s3_bucket,
        endpoint=settings.s3_endpoint,
        region=settings.s3_region,
        prefix=settings.s3_prefix,
        access_key=access_key,
        secret_key=secret_key,
        capacity_bytes=settings.capacity_bytes or 1 << 40,
        part_size=settings.s3_part_size,
    )


def _rados_backend(settings: ContainerSettings) -> Backend:
    try:
        from dynostore.container.backends.rados import RadosBackend
    except ImportError as exc:
        raise InvalidArgument(
            "The rados backend needs python-rados: apt-get install python3-rados, then make it importable "
            f"(see docs/backends/rados.md): {exc}"
        ) from None
    if not settings.rados_pool:
        raise InvalidArgument("The rados backend needs rados_pool (--rados-pool).")
    return RadosBackend(
        settings.rados_pool,
        ceph_conf=settings.ceph_conf,
        namespace=settings.rados_namespace,
        object_size=settings.rados_object_size,
        capacity_bytes=settings.capacity_bytes,
    )


def make_backend(settings: ContainerSettings) -> Backend:
    """Build the storage backend the settings name (without connecting to it yet).

    Raises:
        InvalidArgument: the settings are incomplete or contradict each other.
    """
    if settings.backend not in BACKENDS:
        raise InvalidArgument(f"Unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}.")
    _check_backend_settings(settings)
    if settings.backend == "memory":
        return MemoryBackend(settings.capacity_bytes or 1 << 34)
    if settings.backend == "fs":
        if settings.root is None:
            raise InvalidArgument("The fs backend needs a root directory (root, --root).")
        worker = worker_index() if WORKER_ENV in os.environ else None
        return FileSystemBackend(settings.root / "data", worker=worker, direct_writes=settings.fs_direct_writes)
    if settings.backend == "s3":
        return _s3_backend(settings)
    return _rados_backend(settings)


class Membership:
    """Registers the container with the gateway and keeps its lease alive."""

    def __init__(
        self,
        settings: ContainerSettings,
        token: str,
        info: common_pb2.ContainerInfo,
        backend: Backend,
        verifier: TicketVerifier,
        scrubber: Scrubber | None = None,
        keys_file: Path | None = None,
    ) -> None:
        """Announce ``info`` to the gateway named in ``settings``, presenting ``token``.

        The gateway's answers carry the chunk-ticket keys, handed to ``verifier``
        (and written to ``keys_file`` for the container's other workers);
        heartbeats carry the backend's usage and when ``scrubber`` last finished.
        """
        self._settings = settings
        self._token = token
        self._verifier = verifier
        self._keys_file = keys_file
        self._info = info
        self._backend = backend
        self._scrubber = scrubber
        self.registered = asyncio.Event()

    async def run(self) -> None:
        """Register, then heartbeat until cancelled; re-register when the lease is lost."""
        metadata = auth_metadata(self._token)
        tls = Tls.load(self._settings.tls_ca, self._settings.tls_cert, self._settings.tls_key)
        async with open_channel(self._settings.gateway, tls) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            while True:
                try:
                    usage = await self._backend.usage()
                    self._info.free_bytes = usage.free_bytes
                    self._info.capacity_bytes = usage.capacity_bytes
                    self._info.chunk_count = usage.chunks
                    self._info.last_scrub = self._last_scrub()
                    reply = await stub.RegisterContainer(
                        gateway_pb2.RegisterContainerRequest(container=self._info),
                        metadata=metadata,
                        timeout=5,
                    )
                    self._take_keys(reply.ticket_keys)
                    self.registered.set()
                    log.info("Registered %s with %s", self._info.id, self._settings.gateway)
                    interval = max(reply.ttl_seconds / 3, 0.5)
                    while True:
                        await asyncio.sleep(interval)
                        usage = await self._backend.usage()
                        beat = await stub.Heartbeat(
                            gateway_pb2.HeartbeatRequest(
                                container_id=self._info.id,
                                lease_id=reply.lease_id,
                                free_bytes=usage.free_bytes,
                                capacity_bytes=usage.capacity_bytes,
                                chunk_count=usage.chunks,
                                last_scrub=self._last_scrub(),
                            ),
                            metadata=metadata,
                            timeout=5,
                        )
                        if beat.ticket_keys:
                            self._take_keys(beat.ticket_keys)
                        if not beat.alive:
                            log.warning("Lease lost; registering again.")
                            break
                except grpc.aio.AioRpcError as exc:
                    log.warning("Gateway %s: %s; retrying.", self._settings.gateway, exc.details())
                    await asyncio.sleep(1)

    def _take_keys(self, published: Iterable[gateway_pb2.TicketKey]) -> None:
        keys = {k.id: k.public_key for k in published}
        self._verifier.set_keys(keys)
        if self._keys_file is not None:
            publish_keys(self._keys_file, keys)

    def _last_scrub(self) -> float:
        return self._scrubber.last_completed if self._scrubber is not None else 0.0


async def serve(settings: ContainerSettings, token: str) -> None:
    """Serve until SIGTERM/SIGINT, registering with the gateway using ``token``.

    As one of several workers (``$DYNOSTORE_WORKER`` set) it shares its port;
    only worker 0 registers, heartbeats and scrubs, and the others take the
    ticket keys it writes under the root (:mod:`dynostore.container.keyfile`).
    """
    tune_malloc()
    several = WORKER_ENV in os.environ
    index = worker_index()
    backend = make_backend(settings)
    try:
        await backend.check()
    except BaseException:
        await backend.close()
        raise
    container_id = container_identity(settings)
    metrics = MetricsEndpoint.maybe_start("container", settings.metrics_listen, settings.metrics_ready_file)
    if metrics is not None:
        backend = MeasuredBackend(backend)
        CONTAINER_INFO.labels(container_id, settings.site, backend.name).set(1)
    verifier = TicketVerifier()
    tls = Tls.load(settings.tls_ca, settings.tls_cert, settings.tls_key)
    reporter = DamageReporter(backend, container_id, settings.gateway, token, tls)
    servicer = ContainerServicer(backend, container_id, settings.site, verifier, on_damage=reporter.note)
    server, port = await start_server(
        settings.listen,
        lambda s: add_to_server(servicer, s),
        ["dynostore.v1.Container"],
        tls,
        metrics=metrics is not None,
        access_log=settings.log_requests,
        share_port=several,
    )
    host = settings.listen.rsplit(":", 1)[0]
    address = settings.advertise or f"{host}:{port}"
    info = common_pb2.ContainerInfo(id=container_id, address=address, site=settings.site, backend=backend.name)
    background = [asyncio.create_task(reporter.run())]
    keys_file = settings.root / KEYS_FILE if several and settings.root is not None else None
    ready = asyncio.Event()
    if index == 0:
        scrubber = None
        if settings.scrub_interval > 0:
            scrubber = Scrubber(reporter, interval=settings.scrub_interval, gc_grace=settings.gc_grace)
            background.append(asyncio.create_task(scrubber.run()))
        membership = Membership(settings, token, info, backend, verifier, scrubber, keys_file)
        ready = membership.registered
        background.append(asyncio.create_task(membership.run()))
    else:
        assert keys_file is not None  # workers have a root (ContainerSettings)
        background.append(asyncio.create_task(follow_keys(keys_file, verifier, ready)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait(
        [asyncio.create_task(ready.wait()), asyncio.create_task(stop.wait())],
        return_when=asyncio.FIRST_COMPLETED,
    )
    if ready.is_set():
        worker = f" worker {index}" if several else ""
        log.info("Container %s%s serving on %s (site %s)", container_id, worker, address, settings.site)
        print(f"container {container_id} listening on {address}", flush=True)
        if settings.ready_file:
            write_ready_file(settings.ready_file, address)
    await stop.wait()
    for task in background:
        task.cancel()
    await server.stop(grace=2)
    await backend.close()
    if metrics is not None:
        metrics.close()
