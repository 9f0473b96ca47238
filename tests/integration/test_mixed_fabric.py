"""Fabrics whose containers use S3 and RADOS at several sites: lose a whole site, read everything back."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from dynostore.client import Client
from dynostore.errors import Unavailable
from dynostore.local import ContainerSpec, LocalFabric
from tests.integration.conftest import dynostore_up
from tests.servers import REGION, CephCluster, S3Server

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SIZES = [0, 1, 1000, 5000, 3 * MiB + 5, 20 * MiB + 7]


def s3_spec(server: S3Server, site: str, keys: dict[str, Path]) -> ContainerSpec:
    return ContainerSpec(
        "s3",
        site=site,
        settings={
            "s3_bucket": "dynostore",
            "s3_endpoint": server.endpoint,
            "s3_region": REGION,
            "s3_prefix": f"{uuid.uuid4().hex[:12]}/",
            "capacity_bytes": 1 << 34,
            **keys,
        },
    )


def rados_spec(cluster: CephCluster, site: str) -> ContainerSpec:
    return ContainerSpec(
        "rados",
        site=site,
        settings={
            "rados_pool": cluster.pool,
            "ceph_conf": cluster.conf,
            "rados_namespace": uuid.uuid4().hex[:12],
            "capacity_bytes": 1 << 34,
        },
    )


def exercise(fabric: LocalFabric, lost_site: str) -> tuple[str, dict[str, bytes]]:
    """Put objects, stop every container of ``lost_site``, read them all back; return the token and them."""
    token = fabric.create_user("carol")
    with fabric.client() as client:
        objects = {}
        for size in SIZES:
            data = os.urandom(size)
            objects[client.put(data=data, token_user=token, catalog="mixed")] = data
        for key, data in objects.items():
            assert client.get(key=key, token_user=token) == data
        lost = [c for c in fabric.containers if c.site == lost_site]
        assert lost
        for container in lost:
            container.stop()
        for key, data in objects.items():
            assert client.get(key=key, token_user=token) == data, f"lost site {lost_site}"
    return token, objects


@pytest.fixture
def s3_keys(moto: S3Server, tmp_path: Path) -> dict[str, Path]:
    return moto.write_credentials(tmp_path / "keys")


def test_s3_fabric_survives_a_lost_site(tmp_path: Path, moto: S3Server, s3_keys: dict[str, Path]) -> None:
    sites = ["east", "east", "west", "west", "north"]
    specs = [s3_spec(moto, site, s3_keys) for site in sites]
    with LocalFabric(containers=specs, root=tmp_path / "fabric") as fabric:
        assert [c.site for c in fabric.containers] == sites
        token, objects = exercise(fabric, "east")
        for container in fabric.containers:  # restarted S3 containers serve their chunks again
            if container.site == "east":
                container.start()
            elif container.site == "west":
                container.stop()
        with fabric.client() as client:
            for key, data in objects.items():
                assert client.get(key=key, token_user=token) == data


def test_mixed_fabric_survives_a_lost_site(
    tmp_path: Path, moto: S3Server, ceph: CephCluster, s3_keys: dict[str, Path]
) -> None:
    assert ceph.rgw is not None
    rgw_keys = ceph.rgw.write_credentials(tmp_path / "rgw-keys")
    specs = [
        s3_spec(moto, "cloud", s3_keys),
        s3_spec(moto, "cloud", s3_keys),
        rados_spec(ceph, "ceph-site"),
        s3_spec(ceph.rgw, "ceph-site", rgw_keys),
        ContainerSpec("fs", site="hpc"),
    ]
    with LocalFabric(containers=specs, root=tmp_path / "fabric") as fabric:
        exercise(fabric, "cloud")


def test_mixed_fabric_losing_three_containers_is_data_loss(
    tmp_path: Path, moto: S3Server, ceph: CephCluster, s3_keys: dict[str, Path]
) -> None:
    specs = [
        s3_spec(moto, "cloud", s3_keys),
        rados_spec(ceph, "ceph-site"),
        ContainerSpec("fs", site="hpc"),
        ContainerSpec("fs", site="hpc2"),
        rados_spec(ceph, "ceph-site2"),
    ]
    with LocalFabric(containers=specs, root=tmp_path / "fabric") as fabric:
        token = fabric.create_user("dave")
        with fabric.client() as client:
            key = client.put(data=os.urandom(MiB), token_user=token, catalog="mixed")
            for container in fabric.containers[:3]:
                container.stop()
            with pytest.raises(Unavailable, match="down or unreachable"):
                client.get(key=key, token_user=token)


def test_up_runs_a_mixed_fabric_from_a_config_file(tmp_path: Path, moto: S3Server, s3_keys: dict[str, Path]) -> None:
    s3 = "".join(
        f'[[fabric.containers]]\nbackend = "s3"\nsite = "cloud"\ns3_bucket = "dynostore"\n'
        f's3_endpoint = "{moto.endpoint}"\ns3_region = "{REGION}"\ns3_prefix = "up-{i}-{uuid.uuid4().hex[:8]}/"\n'
        f'capacity_bytes = 1_000_000_000\ns3_access_key_file = "{s3_keys["s3_access_key_file"]}"\n'
        f's3_secret_key_file = "{s3_keys["s3_secret_key_file"]}"\n\n'
        for i in range(2)
    )
    fs = "".join(f'[[fabric.containers]]\nbackend = "fs"\nsite = "hpc-{i}"\n\n' for i in range(3))
    config = tmp_path / "fabric.toml"
    config.write_text(f'[fabric]\nroot = "{tmp_path / "up"}"\nk = 3\nm = 2\n\n{s3}{fs}')
    with dynostore_up("--config", str(config)) as (gateway, token, text):
        assert "5 containers" in text, text
        with Client(gateway) as client:
            data = os.urandom(2 * MiB + 3)
            key = client.put(data=data, token_user=token, catalog="up")
            assert client.get(key=key, token_user=token) == data
        listed = moto.client().list_objects_v2(Bucket="dynostore", Prefix="up-")["Contents"]
        assert len({item["Key"].split("/")[0] for item in listed}) == 2  # a chunk in each S3 container
