"""Real storage servers for tests: a moto S3 server and a micro Ceph cluster (with RGW).

Both are started and stopped by pid: moto as a child process of the test run
(it dies with it), Ceph through ``scripts/micro_ceph.py``, whose ``stop``
signals exactly the daemons it recorded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from dynostore.local import LocalFabric, ManagedProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
MICRO_CEPH = ROOT / "scripts" / "micro_ceph.py"
REGION = "us-east-1"


@dataclass
class S3Server:
    """An S3 endpoint with credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    process: ManagedProcess | None = None

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (if new) and return its name."""
        client = self.client()
        with suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def write_credentials(self, directory: Path) -> dict[str, Path]:
        """Key files for the ``s3_access_key_file`` / ``s3_secret_key_file`` settings."""
        directory.mkdir(parents=True, exist_ok=True)
        access, secret = directory / "s3-access-key", directory / "s3-secret-key"
        access.write_text(self.access_key + "\n")
        secret.write_text(self.secret_key + "\n")
        return {"s3_access_key_file": access, "s3_secret_key_file": secret}


def _wait_http(url: str, process: ManagedProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if not process.running:
                raise RuntimeError(f"{process.name} exited during start-up:\n{process.log_tail()}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} did not answer at {url}:\n{process.log_tail()}") from None
            time.sleep(0.1)


def moto_available() -> bool:
    """Whether moto's server mode is installed."""
    return importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask") is not None


@contextmanager
def moto_server(log_dir: Path) -> Iterator[S3Server]:
    """A moto S3 server on a free port, stopped by pid on exit."""
    port = free_port()
    process = ManagedProcess(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log_dir / f"moto-{port}.log",
    )
    process.start()
    try:
        server = S3Server(f"http://127.0.0.1:{port}", "testing-access-key", "testing-secret-key", process)
        _wait_http(f"{server.endpoint}/moto-api/", process)
        yield server
    finally:
        process.stop()


@dataclass
class CephCluster:
    """A running micro cluster."""

    conf: Path
    pool: str
    rgw: S3Server | None


def ceph_missing() -> str | None:
    """Why a micro Ceph cluster cannot run here, or None."""
    missing = [b for b in ("ceph-mon", "ceph-osd", "ceph", "rados", "radosgw") if shutil.which(b) is None]
    if missing:
        return f"Ceph is not installed ({', '.join(missing)} missing); scripts/test.sh installs it as root."
    try:
        from dynostore.container.backends.rados import load_rados

        load_rados()
    except ImportError as exc:
        return f"python-rados cannot be loaded: {exc}"
    return None


@contextmanager
def ceph_cluster(directory: Path) -> Iterator[CephCluster]:
    """A micro Ceph cluster (mon, osd, radosgw) under ``directory``, stopped on exit.

    It is also stopped when this process dies without cleaning up (its watcher sees to that).
    """
    directory.mkdir(parents=True, exist_ok=True)
    try:
        for attempt in range(2):  # a daemon that loses a port race at start-up gets one more try
            done = subprocess.run(
                [sys.executable, str(MICRO_CEPH), "start", str(directory), "--rgw", "--owner-pid", str(os.getpid())],
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            if done.returncode == 0:
                break
            subprocess.run([sys.executable, str(MICRO_CEPH), "stop", str(directory)], timeout=120, check=False)
            if attempt:
                raise RuntimeError(f"micro_ceph.py start failed:\n{done.stderr}")
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        env = dict(line.split("=", 1) for line in done.stdout.split())
        rgw = S3Server(env["RGW_ENDPOINT"], env["RGW_ACCESS_KEY"], env["RGW_SECRET_KEY"])
        yield CephCluster(Path(env["CEPH_CONF"]), env["CEPH_POOL"], rgw)
    finally:
        subprocess.run([sys.executable, str(MICRO_CEPH), "stop", str(directory)], timeout=120, check=False)


@contextmanager
def s3_door(fabric: LocalFabric, *options: str) -> Iterator[str]:
    """Another S3 front door process of ``fabric`` (caches of its own), run with ``options``; yields its URL."""
    port = free_port()
    ready = fabric.run_dir / f"s3-{port}.addr"
    command = ["s3", "--gateway", fabric.gateway, "--listen", f"127.0.0.1:{port}", "--ready-file", str(ready)]
    process = ManagedProcess(
        f"s3-{port}",
        [*fabric.python_command, *command, *options],
        fabric.root / "logs" / f"s3-{port}.log",
        env={"DYNOSTORE_ADMIN_TOKEN": fabric.admin_token},
    )
    process.start()
    try:
        yield f"http://{process.wait_for_file(ready)}"
    finally:
        process.stop()


def s3_client(endpoint: str, access_key: str, secret: str, **config: Any) -> Any:
    """A boto3 S3 client of ``endpoint`` (path-style, SigV4), with more botocore ``config`` options."""
    from botocore.client import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, **config),
    )
