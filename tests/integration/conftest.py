"""Real fabrics for integration tests: etcd, gateway and containers as processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dynostore.client import Client
from dynostore.local import LocalFabric
from tests.conftest import SESSION_PIDS
from tests.servers import CephCluster, S3Server, ceph_cluster, ceph_missing, moto_available, moto_server

pytestmark = pytest.mark.integration


@dataclass
class Session:
    """A fabric with a client and a user token."""

    fabric: LocalFabric
    client: Client
    token: str


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """One fabric for a whole module; tests must not stop its processes."""
    root = tmp_path_factory.mktemp("fabric")
    with LocalFabric(containers=5, root=root) as fabric, fabric.client() as client:
        yield Session(fabric, client, fabric.create_user("alice"))


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Session]:
    """A fabric of the test's own, free to kill and restart."""
    with LocalFabric(containers=5, root=tmp_path / "fabric") as fabric, fabric.client() as client:
        yield Session(fabric, client, fabric.create_user("bob"))


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server for the whole run, with bucket ``dynostore`` made."""
    if not moto_available():
        pytest.skip("moto[server] is not installed (pip install -e '.[test]').")
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
        pytest.skip(reason)
    # Short path: Ceph's admin sockets need unix socket paths below 108 bytes.
    with ceph_cluster(tmp_path_factory.mktemp("ceph")) as cluster:
        assert cluster.rgw is not None
        cluster.rgw.create_bucket("dynostore")
        yield cluster
