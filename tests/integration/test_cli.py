"""The dynostore command, run as users run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.cli.parser import UP_PORT
from dynostore.local import ManagedProcess
from dynostore.local.processes import _port_is_free
from dynostore.rpc import auth_metadata
from tests.conftest import alive, child_pids, descendant_pids
from tests.integration.conftest import Session, dynostore_up, eventually

DYNOSTORE = [sys.executable, "-m", "dynostore"]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DYNOSTORE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_user_put_ls_get_rm(shared: Session, tmp_path: Path) -> None:
    admin = {**shared.cli_env, "DYNOSTORE_TOKEN": shared.fabric.admin_token}
    made = run(["user", "add", "dave"], admin)
    assert made.returncode == 0, made.stderr
    env = {**admin, "DYNOSTORE_TOKEN": made.stdout.strip()}
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(4 * 1024 * 1024 + 1))
    put = run(["put", str(source), "--catalog", "cli"], env)
    assert put.returncode == 0, put.stderr
    key = put.stdout.strip()
    listed = run(["ls", "cli"], env)
    assert key in listed.stdout
    assert "data.bin" in listed.stdout
    target = tmp_path / "back.bin"
    got = run(["get", key, "-o", str(target)], env)
    assert got.returncode == 0, got.stderr
    assert target.read_bytes() == source.read_bytes()
    assert run(["rm", key], env).returncode == 0
    assert key not in run(["ls", "cli"], env).stdout


def test_errors_are_one_clear_line(shared: Session, tmp_path: Path) -> None:
    env = {**shared.cli_env, "DYNOSTORE_TOKEN": "wrong"}
    result = run(["ls", "cli"], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    missing = run(["get", "../../etc/passwd", "-o", str(tmp_path / "x")], {**env, "DYNOSTORE_TOKEN": shared.token})
    assert missing.returncode == 1
    assert "not a DynoStore key" in missing.stderr


@pytest.mark.parametrize("tls", [[], ["--tls"]], ids=["plain", "tls"])
def test_up_prints_address_and_token_and_stops_cleanly(tmp_path: Path, tls: list[str]) -> None:
    before = child_pids()
    with dynostore_up("--root", str(tmp_path / "up"), "--containers", "3", "--k", "2", "--m", "1", *tls) as (
        gateway,
        token,
        text,
    ):
        assert gateway.startswith("127.0.0.1:"), text
        env = {"DYNOSTORE_GATEWAY": gateway, "DYNOSTORE_TOKEN": token}
        if tls:
            env["DYNOSTORE_TLS_CA"] = text.split("DYNOSTORE_TLS_CA=")[1].split()[0]
            plain = run(["user", "add", "fred"], env={**env, "DYNOSTORE_TLS_CA": ""})
            assert plain.returncode != 0  # the gateway speaks only TLS
        made = run(["user", "add", "erin"], env)
        assert made.returncode == 0, made.stderr
        fabric = descendant_pids() - before  # up, and below it etcd, the gateway and the containers
        assert len(fabric) >= 6, fabric
    assert child_pids() == before
    assert eventually(lambda: not alive(fabric)), f"processes of dynostore up outlived it: {sorted(alive(fabric))}"


def test_container_from_config_file_registers(shared: Session, tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    ready = tmp_path / "ready"
    config.write_text(
        f'[container]\ngateway = "{shared.fabric.gateway}"\nsite = "extra"\nbackend = "memory"\n'
        f'listen = "127.0.0.1:0"\nready_file = "{ready}"\n'
    )
    if shared.fabric.tls_ca:  # the flags LocalFabric passes, as settings
        flags = shared.fabric.tls_args
        settings = {flags[i][2:].replace("-", "_"): flags[i + 1] for i in range(0, len(flags), 2)}
        config.write_text(config.read_text() + "".join(f'{k} = "{v}"\n' for k, v in settings.items()))
    process = ManagedProcess(
        "extra", [*DYNOSTORE, "container", "--config", str(config)], tmp_path / "extra.log",
        env={"DYNOSTORE_TOKEN": shared.fabric.admin_token},
    )  # fmt: skip
    process.start()
    try:
        address = process.wait_for_file(ready)
        with shared.channel(shared.fabric.gateway) as channel:
            listed = gateway_pb2_grpc.GatewayStub(channel).ListContainers(
                gateway_pb2.ListContainersRequest(), metadata=auth_metadata(shared.token)
            )
        assert any(c.address == address and c.site == "extra" for c in listed.containers)
    finally:
        process.stop()


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[container]\ngateway = "127.0.0.1:1"\nbukket = "x"\n')
    result = run(["container", "--config", str(config)], {"DYNOSTORE_TOKEN": "x"})
    assert result.returncode == 1
    assert "unknown setting(s) ['bukket']" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_and_reads_back_after_losing_two_containers(tmp_path: Path) -> None:
    """The README's main command: `dynostore demo`."""
    result = subprocess.run(
        [sys.executable, "-m", "dynostore", "demo", "--root", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "get -> b'Hello, World!'" in result.stdout
    assert "killed 2 of 5 containers" in result.stdout
    assert "identical=True" in result.stdout
    assert result.stdout.rstrip().endswith("Demo done.")
    assert "Traceback" not in result.stderr


def start_up(root: Path) -> tuple[subprocess.Popen[str], str]:
    """`dynostore up` on ``root`` until it is ready: the process and what it printed so far."""
    up = subprocess.Popen(
        [sys.executable, "-m", "dynostore", "up", "--root", str(root), "--containers", "3", "--k", "2", "--m", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    lines = []
    for line in up.stdout:
        lines.append(line)
        if "Ctrl-C" in line:
            break
    return up, "".join(lines)


def stop_up(up: subprocess.Popen[str]) -> str:
    """SIGTERM it; what it printed while stopping."""
    up.send_signal(signal.SIGTERM)
    rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, rest
    return rest


def test_up_keeps_its_gateway_address_across_restarts(tmp_path: Path) -> None:
    """8095 when free, the same port on every restart of a root, and a clear note when it is taken."""
    root = tmp_path / "up"
    free = _port_is_free(UP_PORT)
    up, text = start_up(root)
    first = text.split("DYNOSTORE_GATEWAY=")[1].split()[0]
    assert (first == f"127.0.0.1:{UP_PORT}") == free, text
    assert "DynoStore stopped; its state stays in" in stop_up(up)
    up, text = start_up(root)
    assert text.split("DYNOSTORE_GATEWAY=")[1].split()[0] == first
    stop_up(up)
    port = int(first.rsplit(":", 1)[1])
    with socket.socket() as holder:  # someone else took the port meanwhile
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the TIME_WAIT of closed connections
        holder.bind(("127.0.0.1", port))
        holder.listen()
        up, text = start_up(root)
        try:
            assert f"note: port {port} (gateway, grpc) is taken; using" in text
            assert text.split("DYNOSTORE_GATEWAY=")[1].split()[0] != first
        finally:
            stop_up(up)


def test_rm_verbose_says_what_happened(shared: Session) -> None:
    env = {**shared.cli_env, "DYNOSTORE_TOKEN": shared.token}
    key = shared.client.put(data=b"to remove", token_user=shared.token, catalog="cli")
    assert run(["rm", "-v", key], env).stdout.strip() == f"evicted {key}"
    again = run(["rm", "-v", key], env)
    assert again.returncode == 0
    assert again.stdout.strip() == f"no object {key}: nothing to evict"
    assert run(["rm", key], env).stdout == ""  # quiet without -v
