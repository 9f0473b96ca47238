"""A local fabric: etcd, gateways, containers (and an S3 front door) as subprocesses of one object."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore import tickets
from dynostore.client import Client
from dynostore.errors import AlreadyExists
from dynostore.local.config import ContainerSpec
from dynostore.local.handles import ContainerHandle, EtcdHandle, GatewayHandle, S3Handle
from dynostore.local.processes import (
    ManagedProcess,
    PinnedHandle,
    Placement,
    _port_is_free,
    _write_secret,
    free_port,
)
from dynostore.registry import Registry
from dynostore.registry.etcd import EtcdClient
from dynostore.registry.registry import TicketKeyRecord
from dynostore.rpc.tls import Tls, make_certs


class LocalFabric:
    """etcd + gateway + N containers on 127.0.0.1, stopped on exit.

    Attributes:
        containers: the data containers, as :class:`ContainerHandle`.
        gateways: the gateways, as :class:`GatewayHandle`; every one reaches every etcd member.
        etcd_members: the etcd cluster's members, as :class:`EtcdHandle`.
    """

    def __init__(
        self,
        containers: int | Sequence[ContainerSpec] = 5,
        root: str | os.PathLike[str] | None = None,
        *,
        k: int = 3,
        m: int = 2,
        sites: list[str] | None = None,
        tls: bool = False,
        inline_max_bytes: int = 4096,
        repair_interval: float | None = None,
        repair_grace: float | None = None,
        gateway_args: Sequence[str] = (),
        gateway_port: int = 0,
        metrics: bool = False,
        etcd_members: int = 1,
        gateways: int = 1,
        core: Placement | None = None,
        etcd_placements: Sequence[Placement] | None = None,
        s3: bool = False,
        s3_args: Sequence[str] = (),
    ) -> None:
        """Describe a fabric of data containers under ``root``.

        Args:
            containers: number of file-system containers, or one spec per container.
            root: directory for all state; a temporary one (removed at exit) if None.
            k: default data fragments per segment.
            m: default parity fragments per segment.
            sites: site label of each container (default: the spec's, else one site per container).
            tls: run the gateway and containers over TLS, with a CA and certificate made under
                ``root/tls`` (``tls_ca`` names the CA file clients need).
            inline_max_bytes: objects up to this size are kept inline in etcd
                instead of as chunks (0: never).
            repair_interval: seconds between the gateway's repair sweeps (None: its default, 300).
            repair_grace: seconds a container may be gone before a sweep rebuilds
                its chunks elsewhere (None: the gateway's default, 600).
            gateway_args: more ``dynostore gateway`` options for every gateway,
                e.g. ``["--object-cache-entries", "0", "--container-ttl", "5"]``.
            gateway_port: the first gateway's port when ``root`` remembers none and it
                is free (0: any free port); ``port_notes`` says when it had to pick another.
            metrics: every gateway and container serves Prometheus metrics over HTTP;
                each handle's ``metrics`` gives its ``host:port`` (``/metrics`` there).
            etcd_members: members of the etcd cluster (3 survives the loss of one), each with
                its own data directory (``root/etcd``, ``root/etcd1``...) and ports.
            gateways: gateways, each reaching every etcd member; containers and
                :meth:`client` use them all.
            core: where the etcd members and gateways run (default: 127.0.0.1 here); each
                container's place is its spec's ``placement`` (see :mod:`dynostore.wan`).
            etcd_placements: where each etcd member runs instead (one per member; default: ``core``).
            s3: also run the S3 front door (``dynostore s3``) at :attr:`s3_endpoint`.
            s3_args: more ``dynostore s3`` options, e.g. ``["--workers", "2"]``.

        Raises:
            ValueError: ``sites`` does not give one label per container, ``etcd_placements`` not one
                placement per member, or there is no etcd member or gateway.
        """
        if etcd_members < 1 or gateways < 1:
            raise ValueError("A fabric needs at least one etcd member and one gateway.")
        if etcd_placements is not None and len(etcd_placements) != etcd_members:
            raise ValueError(f"Give one placement per etcd member ({etcd_members}), not {len(etcd_placements)}.")
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="dynostore-") if root is None else root).resolve()
        self.k, self.m = k, m
        self.core = core or Placement()
        self.etcd_placements = list(etcd_placements) if etcd_placements is not None else None
        self.inline_max_bytes = inline_max_bytes
        self.gateway_options = [
            *(["--repair-interval", str(repair_interval)] if repair_interval is not None else []),
            *(["--repair-grace", str(repair_grace)] if repair_grace is not None else []),
            *gateway_args,
        ]
        self.run_dir = self.root / "run"
        self.metrics = metrics
        self.python_command = [sys.executable, "-m", "dynostore"]
        specs = [ContainerSpec() for _ in range(containers)] if isinstance(containers, int) else list(containers)
        sites = sites or [spec.site or f"site{i}" for i, spec in enumerate(specs)]
        if len(sites) != len(specs):
            raise ValueError("Give one site label per container.")
        self.containers = [
            ContainerHandle(i, self, site, spec) for i, (site, spec) in enumerate(zip(sites, specs, strict=True))
        ]
        self.tls = tls
        self.tls_ca: Path | None = None
        self.admin_token = ""
        # The containers' credential: it may register containers and nothing else.
        self.container_token = ""
        self.etcd_members = [EtcdHandle(i, self) for i in range(etcd_members)]
        self.gateways = [GatewayHandle(i, self) for i in range(gateways)]
        # The S3 front door, when asked for.
        self.s3 = S3Handle(self, s3_args) if s3 else None
        self.gateway_port = gateway_port
        # Ports that were wanted (remembered in root, or gateway_port) but taken, and what was used instead.
        self.port_notes: list[str] = []

    @property
    def gateway(self) -> str:
        """Address of the first gateway, the same after its restarts ("" until the fabric starts)."""
        return self.gateways[0].address

    @property
    def s3_endpoint(self) -> str:
        """URL of the S3 front door (``http://127.0.0.1:port``; "" without ``s3=True`` or before start)."""
        return self.s3.endpoint if self.s3 else ""

    @property
    def gateway_addresses(self) -> list[str]:
        """Addresses of every gateway, the same after their restarts."""
        return [gateway.address for gateway in self.gateways]

    @property
    def etcd_address(self) -> str:
        """Client address (``host:port``) of the first etcd member ("" until the fabric starts)."""
        return self.etcd_members[0].address

    @property
    def etcd_endpoints(self) -> str:
        """Client addresses of every etcd member, comma-separated, as a gateway's ``--etcd`` takes them."""
        return ",".join(member.address for member in self.etcd_members)

    # life cycle -------------------------------------------------------------

    def __enter__(self) -> LocalFabric:
        """Start everything; on failure, stop what started and re-raise."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop everything."""
        self.stop()

    def start(self) -> None:
        """Start etcd, the gateways and the containers; wait until all are ready.

        The etcd members are all launched before any is waited for: none is
        healthy before a majority of them is up.
        """
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.admin_token = self._admin_token()
            if self.tls:
                self.tls_ca = self._certificates()
            self._assign_ports()
            for member in self.etcd_members:
                member.launch()
            for member in self.etcd_members:
                member.wait_started()
            for gateway in self.gateways:
                gateway.start()
            self.container_token = self._container_token()
            for container in self.containers:
                container.start()
            if self.s3:
                self.s3.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process of the fabric (containers, gateways, etcd), however often it was restarted.

        Each handle holds only its latest process; the earlier ones were
        waited for when they were stopped or killed. A handle that fails to
        stop does not keep the others running: its error is raised after.
        """
        errors = []
        for process in [*([self.s3] if self.s3 else []), *self.containers, *self.gateways, *self.etcd_members]:
            try:
                process.stop()
            except BaseException as exc:
                errors.append(exc)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise errors[0]

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every process of the fabric, running or not: etcd members, gateways, containers."""
        return [*self.etcd_members, *self.gateways, *self.containers, *([self.s3] if self.s3 else [])]

    def _admin_token(self) -> str:
        path = self.root / "admin.token"
        if path.exists():
            return path.read_text().strip()
        token = "dyn_" + secrets.token_urlsafe(32)
        _write_secret(path, token)
        return token

    def _container_token(self) -> str:
        """The token of the fabric's container credential, made on first start."""
        path = self.root / "container.token"
        if path.exists():
            return path.read_text().strip()
        with self.client() as client:
            try:
                token = client.create_user("containers", token_user=self.admin_token, container=True)
            except AlreadyExists:  # made by a start that stopped before saving its token
                token, _ = client.create_token(self.admin_token, user="containers")
        _write_secret(path, token)
        return token

    def _assign_ports(self) -> None:
        """Give every gateway and etcd member its ports, kept in ``root/ports.json``.

        A handle keeps its ports for the life of this object; a new fabric on
        the same root takes the ports of the last one where they are free,
        and fresh free ones otherwise.
        """
        path = self.root / "ports.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        handles: list[PinnedHandle] = [*self.etcd_members, *self.gateways, *([self.s3] if self.s3 else [])]
        taken = {port for handle in handles for port in handle.ports.values() if port}
        for handle in handles:
            for role, port in handle.ports.items():
                if port:
                    continue
                # Names of a one-gateway fabric: etcd_client, etcd_peer, gateway_grpc.
                wanted = saved.get(f"{handle.name}_{role}", 0)
                if not wanted and handle is self.gateways[0]:
                    wanted = self.gateway_port
                port = wanted
                while not port or port in taken or not _port_is_free(port):
                    port = free_port()
                if wanted and port != wanted:
                    self.port_notes.append(f"port {wanted} ({handle.name}, {role}) is taken; using {port} instead.")
                handle.ports[role] = port
                taken.add(port)
        saved.update({f"{h.name}_{role}": port for h in handles for role, port in h.ports.items()})
        path.write_text(json.dumps(saved))

    def _certificates(self) -> Path:
        """The CA file of this fabric, made (with the server certificate) on first use."""
        directory = self.root / "tls"
        if not (directory / "ca.pem").exists():
            make_certs(directory, ["127.0.0.1", "localhost"])
        return directory / "ca.pem"

    @property
    def _tls_files(self) -> tuple[Path, Path, Path]:
        """The CA, and the certificate and key every server of this fabric uses (TLS only)."""
        assert self.tls_ca is not None
        return self.tls_ca, self.tls_ca.parent / "server.pem", self.tls_ca.parent / "server-key.pem"

    def _tls_flags(self, ca: str, cert: str, key: str) -> list[str]:
        """``[ca, CA file, cert, certificate file, key, key file]``: the TLS files behind these flags."""
        return [arg for pair in zip((ca, cert, key), self._tls_files, strict=True) for arg in map(str, pair)]

    @property
    def etcd_tls(self) -> Tls | None:
        """What a client of this fabric's etcd needs for TLS (None without TLS)."""
        return Tls.load(*self._tls_files) if self.tls_ca else None

    @property
    def etcd_args(self) -> list[str]:
        """The gateway's flags that reach this fabric's etcd (over TLS when the fabric uses it)."""
        tls = self._tls_flags("--etcd-tls-ca", "--etcd-tls-cert", "--etcd-tls-key") if self.tls_ca else []
        return ["--etcd", self.etcd_endpoints, *tls]

    def etcd_client(self) -> EtcdClient:
        """A client of this fabric's etcd, for tests and benchmarks that look underneath."""
        return EtcdClient(self.etcd_endpoints, self.etcd_tls)

    @property
    def tls_args(self) -> list[str]:
        """Command-line flags that make a server of this fabric speak TLS (none without TLS)."""
        return self._tls_flags("--tls-ca", "--tls-cert", "--tls-key") if self.tls_ca else []

    # conveniences -----------------------------------------------------------

    def client(self, **kwargs: object) -> Client:
        """A new :class:`~dynostore.client.Client` of this fabric's gateways (all of them)."""
        return Client(self.gateway_addresses, tls_ca=self.tls_ca, **kwargs)  # type: ignore[arg-type]

    def create_user(self, name: str) -> str:
        """Create user ``name`` and return its token."""
        with self.client() as client:
            return client.create_user(name, token_user=self.admin_token)

    def mint_ticket(self, key: str, op: str, lifetime: float = 600) -> str:
        """A chunk ticket for ``op`` (read or write) on ``key``, signed with the fabric's current key.

        For tests and benchmarks that talk to containers directly: as the
        operator of this fabric's etcd, it holds the signing keys.
        """

        async def newest() -> TicketKeyRecord:
            registry = Registry(self.etcd_endpoints, tls=self.etcd_tls)
            try:
                return [r for r in await registry.ticket_keys() if r.signing(time.time())][-1]
            finally:
                await registry.close()

        record = asyncio.run(newest())
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(record.private))
        return tickets.sign(private, record.kid, key, op, lifetime)
