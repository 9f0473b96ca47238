from pathlib import Path

import pytest

from dynostore.config import build, load_table, read_secret, settings_from
from dynostore.container.server import ContainerSettings
from dynostore.errors import InvalidArgument
from dynostore.gateway.server import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "containers").glob("*.toml")))
def test_example_container_configs_load(path: Path) -> None:
    settings = settings_from(ContainerSettings, path, "container", {})
    assert settings.gateway
    assert settings.backend in ("fs", "memory")


def test_example_gateway_config_loads() -> None:
    settings = settings_from(GatewaySettings, ROOT / "gateway" / "gateway.toml", "gateway", {})
    assert (settings.k, settings.m) == (3, 2)
    assert settings.policy.container_ttl == 10


def test_flags_override_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[container]\ngateway = "g:1"\nsite = "a"\nroot = "/data"\n')
    settings = settings_from(ContainerSettings, path, "container", {"site": "b", "listen": None})
    assert settings.site == "b"
    assert settings.root == Path("/data")
    assert settings.listen == "127.0.0.1:0"


def test_unknown_settings_are_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[container]\ngateway = "g:1"\nbuckett = "x"\n')
    with pytest.raises(InvalidArgument, match="buckett"):
        settings_from(ContainerSettings, path, "container", {})


def test_wrong_types_and_missing_settings(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="'k' must be int"):
        build(GatewaySettings, {"k": "three"}, "test")
    with pytest.raises(InvalidArgument, match="gateway"):
        build(ContainerSettings, {"site": "a"}, "test")


def test_other_tables_and_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[gateway]\n[extra]\n")
    with pytest.raises(InvalidArgument, match="extra"):
        load_table(path, "gateway")
    path.write_text("not = [toml")
    with pytest.raises(InvalidArgument, match="Cannot read"):
        load_table(path, "gateway")


def test_secrets(tmp_path: Path) -> None:
    assert read_secret("from-env", None, "token") == "from-env"
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    assert read_secret(None, secret, "token") == "from-file"
    with pytest.raises(InvalidArgument, match="No token"):
        read_secret(None, None, "token")
    secret.write_text("")
    with pytest.raises(InvalidArgument, match="empty"):
        read_secret(None, secret, "token")
