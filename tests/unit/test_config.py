from pathlib import Path

import pytest

from dynostore.cli.parser import build_parser
from dynostore.config import build, load_table, read_secret, settings_from
from dynostore.container.backends import FileSystemBackend
from dynostore.container.backends.s3 import S3Backend
from dynostore.container.server import BACKENDS, ContainerSettings, make_backend
from dynostore.errors import InvalidArgument
from dynostore.gateway.server import GatewaySettings
from dynostore.local import load_fabric_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "containers").glob("*.toml")))
def test_example_container_configs_load(path: Path) -> None:
    settings = settings_from(ContainerSettings, path, "container", {})
    assert settings.gateway
    assert settings.backend in BACKENDS


def test_example_gateway_config_loads() -> None:
    settings = settings_from(GatewaySettings, ROOT / "gateway" / "gateway.toml", "gateway", {})
    assert (settings.k, settings.m) == (3, 2)
    assert settings.policy.container_ttl == 10
    assert settings.repair_interval == 300.0
    assert settings.policy.inline_max_bytes == 4096
    assert settings.object_cache_entries == 10_000


def test_a_negative_cache_size_is_refused() -> None:
    assert build(GatewaySettings, {"object_cache_entries": 0}, "test").object_cache_entries == 0
    with pytest.raises(InvalidArgument, match="object_cache_entries must be 0 or more"):
        build(GatewaySettings, {"object_cache_entries": -1}, "test")


def test_float_settings_take_ints_not_bools() -> None:
    assert build(GatewaySettings, {"repair_grace": 5}, "test").repair_grace == 5.0
    with pytest.raises(InvalidArgument, match="'repair_interval' must be float"):
        build(GatewaySettings, {"repair_interval": True}, "test")


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


def test_example_configs_cover_every_backend() -> None:
    backends = {
        settings_from(ContainerSettings, p, "container", {}).backend for p in (ROOT / "containers").glob("*.toml")
    }
    assert backends == set(BACKENDS)


def test_s3_settings_build_the_backend(tmp_path: Path) -> None:
    (tmp_path / "ak").write_text("AKID\n")
    (tmp_path / "sk").write_text("SECRET\n")
    values = {
        "gateway": "g:1",
        "backend": "s3",
        "root": str(tmp_path),
        "s3_bucket": "b",
        "s3_endpoint": "http://127.0.0.1:9",
        "s3_prefix": "p/",
        "capacity_bytes": 1000,
        "s3_access_key_file": str(tmp_path / "ak"),
        "s3_secret_key_file": str(tmp_path / "sk"),
    }
    backend = make_backend(build(ContainerSettings, values, "test"))
    assert isinstance(backend, S3Backend)
    assert (backend.bucket, backend.prefix, backend.capacity_bytes) == ("b", "p/", 1000)


def test_fs_direct_writes_can_be_turned_off_by_file_or_flag(tmp_path: Path) -> None:
    assert ContainerSettings(gateway="g:1").fs_direct_writes  # on by default
    config = tmp_path / "site.toml"
    config.write_text(f'[container]\ngateway = "g:1"\nroot = "{tmp_path}"\nfs_direct_writes = false\n')
    from_file = make_backend(settings_from(ContainerSettings, config, "container", {}))
    args = build_parser().parse_args(["container", "--gateway", "g:1", "--root", str(tmp_path), "--fs-buffered-writes"])
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "verbose", "log_format")}
    from_flag = make_backend(settings_from(ContainerSettings, None, "container", flags))
    assert isinstance(from_file, FileSystemBackend)
    assert isinstance(from_flag, FileSystemBackend)
    assert not from_file.direct
    assert not from_flag.direct


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"backend": "fs", "root": "/x", "s3_bucket": "b"}, "s3_bucket applies to the s3 backend"),
        ({"backend": "s3", "root": "/x", "rados_pool": "p", "s3_bucket": "b"}, "rados_pool applies to the rados"),
        ({"backend": "s3", "root": "/x", "s3_bucket": "b", "fs_direct_writes": False}, "fs_direct_writes applies"),
        ({"backend": "s3", "root": "/x"}, "needs s3_bucket"),
        ({"backend": "s3", "s3_bucket": "b"}, "needs root"),
        ({"backend": "s3", "root": "/x", "s3_bucket": "b", "s3_access_key_file": "/k"}, "both"),
        ({"backend": "s3", "root": "/x", "s3_bucket": "b", "s3_part_size": 1024}, "at least 5 MiB"),
        ({"backend": "tape"}, "Unknown backend 'tape'"),
        ({"backend": "fs"}, "needs a root"),
    ],
)
def test_backend_settings_are_checked(values: dict[str, str | int], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make_backend(build(ContainerSettings, {"gateway": "g:1", **values}, "test"))


@pytest.mark.parametrize("path", sorted((ROOT / "fabric").glob("*.toml")))
def test_example_fabric_configs_load(path: Path) -> None:
    config = load_fabric_config(path)
    assert {spec.backend for spec in config.containers} <= set(BACKENDS)
    assert len({spec.site for spec in config.containers}) >= 3  # a lost site costs at most m chunks


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[fabric]\n", "give each container"),
        ("[fabric]\nsize = 3\n[[fabric.containers]]\n", "unknown fabric setting"),
        ('[[fabric.containers]]\nbackend = "s3"\nbuckett = "x"\n', "buckett"),
        ('[[fabric.containers]]\nroot = "/x"\n', "sets those itself"),
        ('[fabric]\nk = "3"\n[[fabric.containers]]\n', "'k' must be int"),
    ],
)
def test_bad_fabric_configs_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fabric.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument, match=message):
        load_fabric_config(path)


@pytest.mark.parametrize("advertise", ["10.0.0.2", "10.0.0.2:0", ":7000", "10.0.0.2:70000", "10.0.0.2:x"])
def test_an_advertised_address_needs_a_host_and_a_port(advertise: str) -> None:
    with pytest.raises(InvalidArgument, match="advertise must be HOST:PORT"):
        build(ContainerSettings, {"gateway": "g:1", "advertise": advertise}, "test")


def test_an_advertised_address_is_taken_as_given() -> None:
    assert (
        build(ContainerSettings, {"gateway": "g:1", "advertise": "10.0.0.2:7000"}, "test").advertise == "10.0.0.2:7000"
    )
