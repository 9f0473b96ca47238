"""One operation's request id, from the client through the gateway and every container, in logs and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynostore.errors import ResourceExhausted
from dynostore.local import ContainerSpec, LocalFabric
from dynostore.rpc.requests import request_scope

pytestmark = pytest.mark.integration


def json_lines(path: Path) -> list[dict[str, object]]:
    """The JSON log entries of a process's log (its other output, e.g. the ready line, skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_a_put_and_a_refused_put_can_be_followed_across_processes(tmp_path: Path) -> None:
    specs = [ContainerSpec(settings={"log_requests": True}) for _ in range(3)]
    with (
        LocalFabric(
            specs, root=tmp_path / "fabric", k=2, m=1, gateway_args=["--log-requests", "--log-format", "json"]
        ) as fabric,
        fabric.client() as client,
    ):
        token = fabric.create_user("tracy")
        with request_scope("trace-put-1"):
            key = client.put(data=os.urandom(300_000), token_user=token, catalog="traced")
        assert client.get(key, token_user=token)

        gateway_log = fabric.gateways[0].log_path
        traced = [e for e in json_lines(gateway_log) if e["request_id"] == "trace-put-1"]
        assert {str(e["message"]).split()[0] for e in traced} >= {
            "/dynostore.v1.Gateway/PlanPut",
            "/dynostore.v1.Gateway/CommitPut",
        }
        for container in fabric.containers:  # each stored one chunk of it, under the same id
            lines = [line for line in container.log_path.read_text().splitlines() if "[trace-put-1]" in line]
            assert any("/dynostore.v1.Container/" in line and " OK " in line for line in lines), container.log_tail()

        # Every entry of the JSON log parses and has the fields a log pipeline keys on.
        assert all({"time", "level", "logger", "message", "request_id"} <= e.keys() for e in json_lines(gateway_log))

        # A put the gateway refuses: the CLI prints the id, the gateway's line about it carries it.
        client.set_quota("tracy", token_user=fabric.admin_token, bytes=1000)
        with pytest.raises(ResourceExhausted) as refused:
            client.put(data=os.urandom(5000), token_user=token, catalog="traced")
        assert refused.value.request_id
        data = tmp_path / "big.bin"
        data.write_bytes(os.urandom(5000))
        cli = subprocess.run(
            [sys.executable, "-m", "dynostore", "put", str(data), "--catalog", "traced"],
            env={**os.environ, "DYNOSTORE_GATEWAY": fabric.gateway, "DYNOSTORE_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 1
        request_id = cli.stderr.split("(request ")[1].split(":")[0]
        answered = [e for e in json_lines(gateway_log) if e["request_id"] == request_id]
        assert any("answered RESOURCE_EXHAUSTED" in str(e["message"]) for e in answered), answered
