"""The compose stack (docker-compose.yml) for real: images built, up with podman-compose, the SDK from the host.

Needs root and podman (``scripts/containers-setup.sh`` installs and configures
podman, podman-compose and a local base image; this test runs it). Each run
uses its own project name, image tag and free ports, and removes its
containers, pod, volumes and images after, also on failure; the base image
stays cached.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dynostore.client import Client
from dynostore.config import settings_from
from dynostore.container.server import ContainerSettings
from dynostore.local import free_port
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SETUP = ROOT / "scripts" / "containers-setup.sh"
BASE_IMAGE = "localhost/dynostore-base:bookworm"
DATACONTAINERS = [f"datacontainer{i}" for i in range(1, 6)]
SERVICES = {"metadata", "init", "apigateway", "frontend", "s3", *DATACONTAINERS}
# The Dockerfiles' images, tagged per run (DYNOSTORE_IMAGE_TAG).
IMAGES = ["localhost/dynostore-gateway", "localhost/dynostore-container", "localhost/dynostore-client"]
START_TIMEOUT = 120.0


def load_compose() -> dict[str, object]:
    yaml = pytest.importorskip("yaml")
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_file_uses_the_host_network_and_own_volumes() -> None:
    """Static checks that need no podman: names, host network only, a volume and a settings file each."""
    compose = load_compose()
    services = compose["services"]
    assert isinstance(services, dict)
    assert set(services) == SERVICES
    declared = compose["volumes"]
    assert isinstance(declared, dict)
    for name, service in services.items():
        assert service.get("network_mode") == "host", f"{name} is not on the host network"
        assert "ports" not in service, name
        assert "networks" not in service, name
        # podman-compose 1.6 waits for a dependency to be running: forever, once the one-shot init exited.
        assert "init" not in service.get("depends_on", []), f"{name} depends on init"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert "networks" not in compose  # no network of its own: no bridge
    for name in DATACONTAINERS:
        mounts = services[name]["volumes"]
        assert f"{name}:/var/lib/dynostore/{name}" in mounts
        assert f"./containers/compose/{name}.toml:/etc/dynostore/container.toml:ro" in mounts
    for i, name in enumerate(DATACONTAINERS, 1):
        settings = settings_from(ContainerSettings, ROOT / "containers" / "compose" / f"{name}.toml", "container", {})
        assert (settings.site, settings.backend) == (f"site{i}", "fs")
        assert settings.root == Path(f"/var/lib/dynostore/{name}")  # in the service's own volume
    # Every service's image is one the Dockerfiles build.
    built = {services[s]["image"] for s in services if "build" in services[s]}
    assert {services[s]["image"] for s in services} == built


class Stack:
    """One podman-compose project of docker-compose.yml, on free ports, with its own image tag."""

    def __init__(self) -> None:
        self.project = f"dynostore-test-{os.getpid()}-{secrets.token_hex(4)}"
        self.tag = self.project
        names = ["ETCD", "ETCD_PEER", "GATEWAY", "WEB", *(f"DATACONTAINER{i}" for i in range(1, 6))]
        ports: dict[str, int] = {}
        while len(set(ports.values())) < len(names):
            ports = {name: free_port() for name in names}
        self.ports = ports
        self.env = {
            **os.environ,
            "DYNOSTORE_BASE_IMAGE": BASE_IMAGE,
            "DYNOSTORE_IMAGE_TAG": self.tag,
            **{f"DYNOSTORE_{name}_PORT": str(port) for name, port in ports.items()},
        }
        self.gateway = f"127.0.0.1:{ports['GATEWAY']}"

    def compose(self, *args: str, timeout: float = START_TIMEOUT, check: bool = True) -> str:
        """Run ``podman-compose ARGS`` for this project; return its output (raise with it on failure)."""
        return run(["podman-compose", "-f", str(COMPOSE_FILE), "-p", self.project, *args], self.env, timeout, check)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def running(self, service: str) -> bool:
        state = run(["podman", "inspect", "-f", "{{.State.Running}}", self.container(service)], self.env, 30)
        return state.strip() == "true"

    def volume_path(self, volume: str) -> Path:
        mount = run(["podman", "volume", "inspect", "-f", "{{.Mountpoint}}", f"{self.project}_{volume}"], self.env, 30)
        return Path(mount.strip())

    def logs(self) -> str:
        """Every service's log, for a failure's report."""
        parts = []
        for service in sorted(SERVICES):
            log = run(["podman", "logs", "--tail", "30", self.container(service)], self.env, 30, check=False)
            parts.append(f"--- {service}\n{log}")
        return "\n".join(parts)

    def leftovers(self) -> list[str]:
        """Containers, pod, volumes and images of this project that still exist."""
        label = f"label=io.podman.compose.project={self.project}"
        found = []
        for kind, listing in [
            ("container", ["ps", "-a", "-q", "--filter", label]),
            ("volume", ["volume", "ls", "-q", "--filter", label]),
            ("pod", ["pod", "ps", "-q", "--filter", f"name=^pod_{self.project}$"]),
        ]:
            found += [f"{kind} {ident}" for ident in run(["podman", *listing], self.env, 30, check=False).split()]
        for image in IMAGES:
            if subprocess.run(["podman", "image", "exists", f"{image}:{self.tag}"], check=False).returncode == 0:
                found.append(f"image {image}:{self.tag}")
        return found

    def remove(self) -> None:
        """Take everything down: containers, pod and volumes (`down -v`), then the images this run built."""
        self.compose("down", "-v", "-t", "10", timeout=180, check=False)
        # Only if `down` failed part-way: what is left of this project, by its label and name.
        label = f"label=io.podman.compose.project={self.project}"
        for ident in run(["podman", "ps", "-a", "-q", "--filter", label], self.env, 30, check=False).split():
            run(["podman", "rm", "-f", "-t", "0", ident], self.env, 60, check=False)
        run(["podman", "pod", "rm", "-f", "--ignore", f"pod_{self.project}"], self.env, 60, check=False)
        for ident in run(["podman", "volume", "ls", "-q", "--filter", label], self.env, 30, check=False).split():
            run(["podman", "volume", "rm", "-f", ident], self.env, 60, check=False)
        # Untagging an image also deletes the untagged layers below it that no other image uses.
        for image in IMAGES:
            run(["podman", "rmi", "--ignore", f"{image}:{self.tag}"], self.env, 120, check=False)


def run(argv: list[str], env: dict[str, str], timeout: float, check: bool = True) -> str:
    """Run ``argv``, bounded by ``timeout``; its stdout and stderr together."""
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{output[-4000:]}")
    return output


def eventually(check: Callable[[], bool], within: float = START_TIMEOUT, every: float = 0.2) -> bool:
    """Whether ``check`` comes true within ``within`` seconds (an exception counts as not yet)."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(Exception):
            if check():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


def web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
            return bool(reply.status)
    except urllib.error.HTTPError as error:  # the sign-in page: 401 without a token
        return error.code == 401


@pytest.fixture
def podman_ready() -> None:
    """Root, podman, podman-compose and the base image: set up by scripts/containers-setup.sh (idempotent)."""
    if os.geteuid() != 0:
        skip_or_fail("the compose stack test needs root (podman on this machine runs as root only)")
    if shutil.which("apt-get") is None and shutil.which("podman") is None:
        skip_or_fail("podman is not installed and there is no apt-get to install it")
    setup = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900, check=False)
    if setup.returncode != 0:
        skip_or_fail(f"scripts/containers-setup.sh failed, so podman cannot run here:\n{setup.stderr[-2000:]}")


@pytest.fixture
def stack(podman_ready: None) -> Iterator[Stack]:
    stack = Stack()
    try:
        yield stack
    finally:
        stack.remove()
    assert not stack.leftovers(), f"the stack left behind: {stack.leftovers()}"


@pytest.mark.timeout(1200)
def test_compose_stack_serves_the_sdk_and_survives_two_containers_down(stack: Stack) -> None:
    # Build the gateway's image first: the other two then reuse its layers instead of building them alongside.
    stack.compose("build", "apigateway", timeout=900)
    stack.compose("build", timeout=900)
    stack.compose("up", "-d")
    try:
        check_stack(stack)
    except BaseException:
        print(stack.logs())
        raise


def spread_over_all_five(client: Client, token: str) -> bool:
    """Whether a new object's chunks land on five live containers."""
    key = client.put(data=os.urandom(10_000), token_user=token, catalog="probe")
    chunks = client.stat(key, token_user=token).chunks
    return len({c.container_id for c in chunks if c.stored and c.live}) == 5


def check_stack(stack: Stack) -> None:
    # The one-shot service made the admin token, stored it in the secrets volume and printed it.
    exit_code = run(["podman", "wait", stack.container("init")], stack.env, START_TIMEOUT)
    assert exit_code.strip() == "0", f"init exited {exit_code}"
    admin = (stack.volume_path("secrets") / "admin.token").read_text().strip()
    assert admin.startswith("dyn_")
    assert f"DYNOSTORE_TOKEN={admin}" in run(["podman", "logs", stack.container("init")], stack.env, 30)

    payloads = {
        "tiny": b"Hello, World!",  # inline in etcd
        "one-segment": os.urandom(100_000),
        "segments": os.urandom(3 * 1024 * 1024 + 123),  # several segments of 3 MiB
    }
    with Client(stack.gateway) as client:
        assert eventually(lambda: client.whoami(token_user=admin) == "admin")
        token = client.create_user("alice", token_user=admin)

        assert eventually(lambda: spread_over_all_five(client, token)), "the five data containers did not all register"
        keys = {name: client.put(data=data, token_user=token, catalog="runs") for name, data in payloads.items()}
        for name, key in keys.items():
            assert client.get(key, token_user=token) == payloads[name]
        assert eventually(lambda: web_answers(stack.ports["WEB"])), "the frontend does not answer"

        stack.compose("stop", "-t", "10", "datacontainer2", "datacontainer4")
        assert not stack.running("datacontainer2")
        assert not stack.running("datacontainer4")
        for name, key in keys.items():  # 3 of 5 chunks are enough
            assert client.get(key, token_user=token) == payloads[name]

        stack.compose("start", "datacontainer2", "datacontainer4")

        def all_chunks_live() -> bool:
            return all(all(c.live for c in client.stat(key, token_user=token).chunks) for key in keys.values())

        assert eventually(all_chunks_live), "datacontainer2 and datacontainer4 did not register again"
        assert eventually(lambda: spread_over_all_five(client, token))
        for name, key in keys.items():
            assert client.get(key, token_user=token) == payloads[name]
        assert sorted(info.key for info in client.list("runs", token_user=token)) == sorted(keys.values())

    # `down` without -v keeps the volumes: the next `up` has the same admin token, users and objects.
    stack.compose("down", "-t", "10")
    stack.compose("up", "-d")
    assert run(["podman", "wait", stack.container("init")], stack.env, START_TIMEOUT).strip() == "0"
    assert (stack.volume_path("secrets") / "admin.token").read_text().strip() == admin
    with Client(stack.gateway) as client:
        assert eventually(lambda: client.get(keys["segments"], token_user=token) == payloads["segments"])
        assert eventually(lambda: spread_over_all_five(client, token))
        for name, key in keys.items():
            assert client.get(key, token_user=token) == payloads[name]
