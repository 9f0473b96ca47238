"""Real fabrics for integration tests: etcd, gateway and containers as processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dynostore.client import Client
from dynostore.local import LocalFabric

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
