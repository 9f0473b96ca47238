"""Run a data container: serve chunks and keep registered with the gateway."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc

from dynostore import validation
from dynostore._proto import common_pb2, gateway_pb2, gateway_pb2_grpc
from dynostore._proto import container_pb2_grpc as pb_grpc
from dynostore.container.backends import Backend, FileSystemBackend, MemoryBackend
from dynostore.container.servicer import ContainerServicer
from dynostore.rpc import auth_metadata, open_channel, start_server
from dynostore.rpc.tuning import tune_malloc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSettings:
    """Everything a container daemon needs to run."""

    gateway: str
    root: Path | None = None
    listen: str = "127.0.0.1:0"
    site: str = "default"
    backend: str = "fs"
    container_id: str | None = None
    # The token to register with comes from $DYNOSTORE_TOKEN or this file.
    token_file: Path | None = None
    ready_file: Path | None = None


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


def make_backend(settings: ContainerSettings) -> Backend:
    """Build the storage backend the settings name."""
    if settings.backend == "memory":
        return MemoryBackend()
    if settings.backend == "fs":
        if settings.root is None:
            raise SystemExit("The fs backend needs a root directory (--root).")
        return FileSystemBackend(settings.root / "data")
    raise SystemExit(f"Unknown backend {settings.backend!r}; choose fs or memory.")


class Membership:
    """Registers the container with the gateway and keeps its lease alive."""

    def __init__(
        self, settings: ContainerSettings, token: str, info: common_pb2.ContainerInfo, backend: Backend
    ) -> None:
        """Announce ``info`` to the gateway named in ``settings``, presenting ``token``."""
        self._settings = settings
        self._token = token
        self._info = info
        self._backend = backend
        self.registered = asyncio.Event()

    async def run(self) -> None:
        """Register, then heartbeat until cancelled; re-register when the lease is lost."""
        metadata = auth_metadata(self._token)
        async with open_channel(self._settings.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            while True:
                try:
                    usage = await self._backend.usage()
                    self._info.free_bytes = usage.free_bytes
                    self._info.capacity_bytes = usage.capacity_bytes
                    reply = await stub.RegisterContainer(
                        gateway_pb2.RegisterContainerRequest(container=self._info),
                        metadata=metadata,
                        timeout=5,
                    )
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
                            ),
                            metadata=metadata,
                            timeout=5,
                        )
                        if not beat.alive:
                            log.warning("Lease lost; registering again.")
                            break
                except grpc.aio.AioRpcError as exc:
                    log.warning("Gateway %s: %s; retrying.", self._settings.gateway, exc.details())
                    await asyncio.sleep(1)


async def serve(settings: ContainerSettings, token: str) -> None:
    """Serve until SIGTERM/SIGINT, registering with the gateway using ``token``."""
    tune_malloc()
    container_id = container_identity(settings)
    backend = make_backend(settings)
    servicer = ContainerServicer(backend, container_id, settings.site)
    server, port = await start_server(
        settings.listen,
        lambda s: pb_grpc.add_ContainerServicer_to_server(servicer, s),
        ["dynostore.v1.Container"],
    )
    host = settings.listen.rsplit(":", 1)[0]
    address = f"{host}:{port}"
    info = common_pb2.ContainerInfo(id=container_id, address=address, site=settings.site, backend=backend.name)
    membership = Membership(settings, token, info, backend)
    member_task = asyncio.create_task(membership.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait(
        [asyncio.create_task(membership.registered.wait()), asyncio.create_task(stop.wait())],
        return_when=asyncio.FIRST_COMPLETED,
    )
    if membership.registered.is_set():
        log.info("Container %s serving on %s (site %s)", container_id, address, settings.site)
        print(f"container {container_id} listening on {address}", flush=True)
        if settings.ready_file:
            _write_atomically(settings.ready_file, address)
    await stop.wait()
    member_task.cancel()
    await server.stop(grace=2)
    await backend.close()


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    temp.replace(path)
