"""Several worker processes of one server on one port: ``dynostore gateway --workers N``.

One Python process serves gRPC on one core at most (the GIL). With
``--workers N`` a supervisor process starts N copies of the same command,
each binding the same port with ``SO_REUSEPORT``, so that the kernel spreads
new connections over them; a client's channel stays on one worker. The
supervisor holds the port (bound, not listening) while it runs, so a port
chosen as 0 stays the workers' own. It writes the ready file once every
worker serves, starts a worker again when one dies unexpectedly (after a
second), and on SIGTERM/SIGINT stops them all. Each worker learns its
number from ``$DYNOSTORE_WORKER``; worker 0 does what must be done once per
server (the gateway's repair sweeps, its announcement in etcd, resuming
moves, counting catalogs for the metrics).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dynostore.rpc.servers import write_ready_file

log = logging.getLogger(__name__)

WORKER_ENV = "DYNOSTORE_WORKER"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0


def worker_index() -> int:
    """This process's worker number (0 when it is not one of several workers)."""
    try:
        return max(int(os.environ.get(WORKER_ENV, "0")), 0)
    except ValueError:
        return 0


def reserve_port(listen: str) -> tuple[socket.socket, str]:
    """Bind ``host:port`` (port 0: a free one) with SO_REUSEPORT; return the socket and the bound address.

    Raises:
        OSError: the address cannot be bound (e.g. a server without SO_REUSEPORT holds the port).
    """
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bare, int(port)))
    except BaseException:
        sock.close()
        raise
    return sock, f"{host}:{sock.getsockname()[1]}"


def metrics_listen_for(listen: str | None, index: int) -> str | None:
    """Worker ``index``'s metrics address: the given port plus the index (port 0: any free port)."""
    if listen is None:
        return None
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + index if int(port) else 0}"


class Supervisor:
    """Runs ``count`` workers of ``dynostore ARGV`` on one port until SIGTERM/SIGINT."""

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        listen: str,
        *,
        ready_file: Path | None = None,
        metrics_listen: str | None = None,
        metrics_ready_file: Path | None = None,
        what: str = "server",
    ) -> None:
        """Describe the workers: ``argv`` is the command line after ``dynostore``; flags added later win."""
        self._argv = list(argv)
        self._count = count
        self._listen = listen
        self._ready_file = ready_file
        self._metrics_listen = metrics_listen
        self._metrics_ready_file = metrics_ready_file
        self._what = what
        self._stopping = False
        self._workers: list[subprocess.Popen[bytes] | None] = [None] * count

    def run(self) -> int:
        """Start the workers, keep them running, stop them on a signal; return the exit status."""
        reserved, address = reserve_port(self._listen)
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        with tempfile.TemporaryDirectory(prefix="dynostore-workers-") as scratch, reserved:
            run_dir = Path(scratch)
            try:
                for index in range(self._count):
                    self._start(index, address, run_dir)
                if not self._wait_all_ready(run_dir):
                    return 1
                if self._metrics_listen is not None and self._metrics_ready_file is not None:
                    metrics = [(run_dir / f"metrics{i}.addr").read_text() for i in range(self._count)]
                    write_ready_file(self._metrics_ready_file, ",".join(metrics))
                if self._ready_file is not None:
                    write_ready_file(self._ready_file, address)
                log.info("%s serving on %s with %d workers", self._what.capitalize(), address, self._count)
                print(f"{self._what} listening on {address} ({self._count} workers)", flush=True)
                self._watch(address, run_dir)
            finally:
                self._stop_all()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return 0

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _start(self, index: int, address: str, run_dir: Path) -> None:
        ready = run_dir / f"worker{index}.addr"
        ready.unlink(missing_ok=True)
        flags = ["--workers", "1", "--listen", address, "--ready-file", str(ready)]
        metrics = metrics_listen_for(self._metrics_listen, index)
        if metrics is not None:
            flags += ["--metrics-listen", metrics, "--metrics-ready-file", str(run_dir / f"metrics{index}.addr")]
        command = [sys.executable, "-m", "dynostore._launch", str(os.getpid()), sys.executable, "-m", "dynostore"]
        env = {**os.environ, WORKER_ENV: str(index)}
        self._workers[index] = subprocess.Popen([*command, *self._argv, *flags], env=env)

    def _wait_all_ready(self, run_dir: Path) -> bool:
        """Wait until every worker writes its ready file; False if one exits first or a signal comes."""
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._stopping:
            if all((run_dir / f"worker{i}.addr").exists() for i in range(self._count)):
                return True
            for index, worker in enumerate(self._workers):
                if worker is not None and worker.poll() is not None:
                    log.error("Worker %d exited with status %s while starting.", index, worker.returncode)
                    return False
            if time.monotonic() > deadline:
                log.error("The workers did not all start within %.0f s.", _START_TIMEOUT)
                return False
            time.sleep(0.05)
        return False

    def _watch(self, address: str, run_dir: Path) -> None:
        """Start a worker again a second after it dies, until a signal comes."""
        while not self._stopping:
            for index, worker in enumerate(self._workers):
                if worker is not None and worker.poll() is not None and not self._stopping:
                    log.warning("Worker %d exited with status %s; starting it again.", index, worker.returncode)
                    time.sleep(1)
                    if not self._stopping:
                        self._start(index, address, run_dir)
            time.sleep(0.1)

    def _stop_all(self) -> None:
        """SIGTERM every worker, then SIGKILL those still running after a bound."""
        running = [w for w in self._workers if w is not None and w.poll() is None]
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for worker in running:
            try:
                worker.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
