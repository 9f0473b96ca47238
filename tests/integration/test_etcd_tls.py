"""TLS between gateways and etcd: a TLS fabric's etcd takes only TLS clients that show a certificate."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aetcd
import pytest

from dynostore.local import LocalFabric
from dynostore.registry.etcd import EtcdClient
from dynostore.rpc.tls import Tls

pytestmark = pytest.mark.integration


async def can_read(client: aetcd.Client) -> bool:
    try:
        async with client:
            await client.get(b"/dynostore/v1/probe")
        return True
    except aetcd.ConnectionFailedError:
        return False


def test_etcd_of_a_tls_fabric_needs_tls_and_a_client_certificate(tmp_path: Path) -> None:
    with LocalFabric(containers=2, k=1, m=1, root=tmp_path / "fabric", tls=True) as fabric, fabric.client() as client:
        token = fabric.create_user("tess")
        key = client.put(data=b"over TLS all the way", token_user=token, catalog="c")
        assert client.get(key=key, token_user=token) == b"over TLS all the way"
        tls = fabric.etcd_tls
        assert tls is not None
        host, port = fabric.etcd_address.rsplit(":", 1)
        assert asyncio.run(can_read(fabric.etcd_client()))
        assert not asyncio.run(can_read(aetcd.Client(host=host, port=int(port), timeout=5)))  # plain text
        assert not asyncio.run(can_read(EtcdClient(fabric.etcd_address, Tls(ca=tls.ca), timeout=5)))  # no certificate
        started = subprocess.run(  # a gateway with only half of its client certificate settings
            [sys.executable, "-m", "dynostore", "gateway", *fabric.etcd_args[:4], "--etcd-tls-cert", __file__],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode != 0
        assert "etcd_tls_cert and etcd_tls_key" in started.stderr
