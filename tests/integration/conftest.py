"""Real fabrics for integration tests: etcd, gateway and containers as processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from dynostore.client import Client
from dynostore.local import EtcdHandle, LocalFabric, ManagedProcess
from tests.conftest import SESSION_PIDS, skip_or_fail
from tests.servers import CephCluster, S3Server, ceph_cluster, ceph_missing, moto_available, moto_server

pytestmark = pytest.mark.integration
# How long another gateway's change may take to reach a gateway's caches (its etcd watch).
WATCH_DELAY = 5.0


def eventually(check: Callable[[], bool], within: float = WATCH_DELAY) -> bool:
    """Whether ``check`` comes true within ``within`` seconds (default: the watch delay; polled every 10 ms)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def is_etcd_leader(member: EtcdHandle) -> bool:
    """Whether etcd ``member`` is its cluster's leader now (it says so itself)."""
    request = urllib.request.Request(f"{member.client_url}/v3/maintenance/status", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        status = json.loads(reply.read())
    return bool(status["header"]["member_id"] == status.get("leader"))  # no leader: the field is left out


def chunk_paths(fabric: LocalFabric, key: str) -> list[Path]:
    """The files of every chunk of ``key`` on the fabric's fs containers."""
    return [p for c in fabric.containers for p in (c.root / "data" / "chunks").rglob(f"{key}.*")]


@dataclass
class Session:
    """A fabric with a client and a user token."""

    fabric: LocalFabric
    client: Client
    token: str

    def channel(self, address: str) -> grpc.Channel:
        """A plain gRPC channel to one of the fabric's servers (TLS when the fabric uses it)."""
        if self.fabric.tls_ca is None:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(self.fabric.tls_ca.read_bytes()))

    @property
    def cli_env(self) -> dict[str, str]:
        """Environment for the CLI (and examples) to reach this fabric."""
        env = {**os.environ, "DYNOSTORE_GATEWAY": self.fabric.gateway}
        if self.fabric.tls_ca is not None:
            env["DYNOSTORE_TLS_CA"] = str(self.fabric.tls_ca)
        return env

    @property
    def grpcurl_security(self) -> list[str]:
        """grpcurl's flags for this fabric's transport."""
        return ["-cacert", str(self.fabric.tls_ca)] if self.fabric.tls_ca else ["-plaintext"]


@contextmanager
def dynostore_up(*args: str) -> Iterator[tuple[str, str, str]]:
    """Run ``dynostore up ARGS`` until it is ready; yield (gateway, admin token, what it printed); SIGTERM it after."""
    up = subprocess.Popen(
        [sys.executable, "-m", "dynostore", "up", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "DYNOSTORE_GATEWAY=" in text, text
        yield text.split("DYNOSTORE_GATEWAY=")[1].split()[0], text.split("DYNOSTORE_TOKEN=")[1].split()[0], text
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
    assert up.returncode == 0


@pytest.fixture(scope="module", params=["plain", "tls"])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """One fabric for a whole module (the module runs twice: plain, then TLS); tests must not stop its processes."""
    root = tmp_path_factory.mktemp("fabric")
    with LocalFabric(containers=5, root=root, tls=request.param == "tls") as fabric, fabric.client() as client:
        yield Session(fabric, client, fabric.create_user("alice"))


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Session]:
    """A fabric of the test's own, free to kill and restart."""
    with LocalFabric(containers=5, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        yield Session(fabric, client, fabric.create_user("bob"))


@pytest.fixture
def second_gateway(shared: Session, tmp_path: Path) -> Iterator[str]:
    """Another gateway process on the shared fabric's etcd."""
    ready = tmp_path / "gateway2.addr"
    process = ManagedProcess(
        "gateway2",
        [sys.executable, "-m", "dynostore", "gateway", *shared.fabric.etcd_args,
         "--listen", "127.0.0.1:0", "--ready-file", str(ready), *shared.fabric.tls_args],
        tmp_path / "gateway2.log",
    )  # fmt: skip
    process.start()
    try:
        yield process.wait_for_file(ready)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server for the whole run, with bucket ``dynostore`` made."""
    if not moto_available():
        skip_or_fail("moto[server] is not installed (pip install -e '.[test]').")
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        assert server.process is not None
        assert server.process.pid is not None
        SESSION_PIDS.add(server.process.pid)
        server.create_bucket("dynostore")
        yield server


@pytest.fixture(scope="session")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephCluster]:
    """A micro Ceph cluster (mon, osd, radosgw) for the whole run; its RGW has bucket ``dynostore``."""
    reason = ceph_missing()
    if reason:
        skip_or_fail(reason)
    # Short path: Ceph's admin sockets need unix socket paths below 108 bytes.
    with ceph_cluster(tmp_path_factory.mktemp("ceph")) as cluster:
        assert cluster.rgw is not None
        cluster.rgw.create_bucket("dynostore")
        yield cluster
