"""Several servers behind one address: gateways for clients, etcd members for gateways."""

from pathlib import Path

import pytest

from dynostore.client import AsyncClient
from dynostore.config import settings_from
from dynostore.errors import InvalidArgument
from dynostore.gateway.server import GatewaySettings
from dynostore.local import LocalFabric
from dynostore.registry.etcd import EtcdClient
from dynostore.rpc.channels import balancing_options, channel_target, endpoint_list


def test_endpoints_come_as_a_list_or_comma_separated() -> None:
    assert endpoint_list("h1:2379, h2:2379,") == ["h1:2379", "h2:2379"]
    assert endpoint_list(["h1:2379"]) == ["h1:2379"]
    for bad in ("", ",", "h1", "h1:port"):
        with pytest.raises(InvalidArgument):
            endpoint_list(bad)


def test_several_endpoints_make_one_balanced_target() -> None:
    assert channel_target(["etcd.example:2379"]) == "etcd.example:2379"  # resolved by gRPC, as ever
    assert channel_target(["127.0.0.1:1", "localhost:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target(["[::1]:1", "[::1]:2"]) == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(InvalidArgument, match="mix IPv4 and IPv6"):
        channel_target(["127.0.0.1:1", "[::1]:2"])
    assert balancing_options(["a:1"], tls=True, spread=True) == {}
    assert balancing_options(["a:1", "b:2"], tls=False, spread=False) == {"grpc.lb_policy_name": "pick_first"}
    assert balancing_options(["a:1", "b:2"], tls=True, spread=True) == {
        "grpc.lb_policy_name": "round_robin",
        "grpc.ssl_target_name_override": "a",
    }
    assert EtcdClient("127.0.0.1:1,127.0.0.1:2").endpoints == ["127.0.0.1:1", "127.0.0.1:2"]


def test_gateway_settings_take_etcd_members_from_a_file_or_a_flag(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\netcd = ["h1:2379", "h2:2379"]\n')
    assert settings_from(GatewaySettings, config, "gateway", {}).etcd == ["h1:2379", "h2:2379"]
    assert settings_from(GatewaySettings, config, "gateway", {"etcd": "h1:2379,h3:2379"}).etcd == "h1:2379,h3:2379"
    config.write_text("[gateway]\netcd = [2379]\n")
    with pytest.raises(InvalidArgument, match="'etcd' must be str or list"):
        settings_from(GatewaySettings, config, "gateway", {})
    with pytest.raises(InvalidArgument, match="not host:port"):
        GatewaySettings(etcd="h1")


def test_clients_take_several_gateways() -> None:
    assert AsyncClient(["h1:8095", "h2:8095"]).gateway == "h1:8095,h2:8095"
    assert AsyncClient("h1:8095, h2:8095").gateway == "h1:8095,h2:8095"
    with pytest.raises(InvalidArgument):
        AsyncClient([8095])  # type: ignore[list-item]


def test_a_fabric_needs_a_member_and_a_gateway() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LocalFabric(etcd_members=0)
    fabric = LocalFabric(etcd_members=3, gateways=2, root="/nonexistent/unused")
    assert [m.name for m in fabric.etcd_members] == ["etcd", "etcd1", "etcd2"]
    assert [g.name for g in fabric.gateways] == ["gateway", "gateway1"]
