"""The servers of a local fabric, one handle each: containers, gateways, the S3 front door, etcd members."""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dynostore.local.config import ContainerSpec, _toml_value
from dynostore.local.processes import (
    START_TIMEOUT,
    ManagedProcess,
    PinnedHandle,
    _numbered,
    _reuse,
    etcd_binary,
)

if TYPE_CHECKING:
    from dynostore.local.fabric import LocalFabric


class ContainerHandle(ManagedProcess):
    """One data container of a :class:`LocalFabric`; keeps its port across restarts."""

    def __init__(self, index: int, fabric: LocalFabric, site: str, spec: ContainerSpec | None = None) -> None:
        """Describe container ``index`` of ``fabric`` at ``site``, built from ``spec`` (fs by default)."""
        self.index = index
        self.site = site
        self.spec = spec or ContainerSpec(site=site)
        self.root = fabric.root / "containers" / f"container{index}"
        self.port = 0
        self.metrics_port = 0
        self._fabric = fabric
        self.placement = self.spec.placement
        super().__init__(
            f"container{index}", [], fabric.root / "logs" / f"container{index}.log", prefix=self.placement.prefix
        )

    @property
    def address(self) -> str:
        """``host:port`` of this container (``127.0.0.1`` unless its placement says otherwise)."""
        return f"{self.placement.host}:{self.port}"

    @property
    def metrics(self) -> str:
        """``127.0.0.1:port`` of the container's metrics endpoint ("" without metrics or before it starts).

        Like :attr:`address`, it is read again at every start: a restart takes
        the same port again when it is free.
        """
        return f"127.0.0.1:{self.metrics_port}" if self.metrics_port else ""

    @property
    def container_id(self) -> str:
        """The id the container registered with."""
        return (self.root / "container-id").read_text().strip()

    def start(self) -> None:
        """Start (or restart) the container and wait until it is registered."""
        if self.running:
            return
        ready = self._fabric.run_dir / f"{self.name}.addr"
        ready.unlink(missing_ok=True)
        listen = self.placement.listen or _reuse(self.port, self.placement.host)
        metrics_ready = self._fabric.run_dir / f"{self.name}.metrics"
        metrics_ready.unlink(missing_ok=True)
        metrics = ["--metrics-listen", _reuse(self.metrics_port), "--metrics-ready-file", str(metrics_ready)]
        config = self._fabric.run_dir / f"{self.name}.toml"
        values = {"backend": self.spec.backend, **self.spec.settings}
        config.write_text("[container]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()))
        self.argv = [
            *self._fabric.python_command,
            "container",
            "--config", str(config),
            "--gateway", ",".join(self._fabric.gateway_addresses),
            "--root", str(self.root),
            "--site", self.site,
            "--listen", listen,
            *(["--advertise", self.placement.advertise] if self.placement.advertise else []),
            "--ready-file", str(ready),
            *(metrics if self._fabric.metrics else []),
            *self._fabric.tls_args,
        ]  # fmt: skip
        self.env = {**self.spec.env, "DYNOSTORE_TOKEN": self._fabric.container_token}
        super().start()
        address = self.wait_for_file(ready)
        self.port = int(address.rsplit(":", 1)[1])
        if self._fabric.metrics:  # written before the ready file
            # Several workers: "worker 0's address,worker 1's..."; the first is the container's.
            self.metrics_port = int(metrics_ready.read_text().split(",")[0].rsplit(":", 1)[1])


class GatewayHandle(PinnedHandle):
    """One gateway of a :class:`LocalFabric`, at the same address after every restart.

    :meth:`start` returns once the gateway serves (its ready file is written
    after its gRPC server started). Containers need no help: their leases
    live in etcd and outlive a short outage; a container whose heartbeat met
    the outage retries every second and registers again about a second after
    the gateway is back; one whose lease lapsed meanwhile learns so at its
    next heartbeat (every ``container_ttl / 3`` s) and registers again.
    """

    def __init__(self, index: int, fabric: LocalFabric) -> None:
        """Describe gateway ``index`` of ``fabric``."""
        super().__init__(
            _numbered("gateway", index), index, fabric, ["grpc", "metrics"] if fabric.metrics else ["grpc"]
        )
        self._ready = fabric.run_dir / f"{self.name}.addr"
        self._metrics_ready = fabric.run_dir / f"{self.name}.metrics"

    @property
    def metrics(self) -> str:
        """``127.0.0.1:port`` of the gateway's metrics endpoint, the same after every restart.

        "" without metrics or before the fabric starts.
        """
        port = self.ports.get("metrics", 0)
        return f"127.0.0.1:{port}" if port else ""

    def _command(self) -> list[str]:
        fabric = self._fabric
        self._ready.unlink(missing_ok=True)
        self._metrics_ready.unlink(missing_ok=True)
        metrics = bool(self.metrics)
        self.env = {"DYNOSTORE_ADMIN_TOKEN": fabric.admin_token}
        return [
            *fabric.python_command,
            "gateway",
            *fabric.etcd_args,
            "--listen", self.address,
            "--k", str(fabric.k),
            "--m", str(fabric.m),
            "--inline-max-bytes", str(fabric.inline_max_bytes),
            *fabric.gateway_options,
            "--ready-file", str(self._ready),
            *(["--metrics-listen", self.metrics, "--metrics-ready-file", str(self._metrics_ready)] if metrics else []),
            *fabric.tls_args,
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        address = self.wait_for_file(self._ready)
        if address != self.address:
            raise RuntimeError(f"{self.name} listens on {address}, not {self.address}.")
        if self.metrics and self._metrics_ready.read_text().strip() != self.metrics:  # written before the ready file
            raise RuntimeError(f"{self.name} serves metrics on another address than {self.metrics}.")


class S3Handle(PinnedHandle):
    """The S3 front door of a :class:`LocalFabric` (``dynostore s3``), at the same port after every restart."""

    def __init__(self, fabric: LocalFabric, options: Sequence[str] = ()) -> None:
        """Describe the front door of ``fabric``, run with more ``dynostore s3`` ``options``."""
        super().__init__("s3", 0, fabric, ["http"])
        self._ready = fabric.run_dir / "s3.addr"
        self._options = list(options)

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:port`` of the front door ("" until the fabric starts)."""
        return f"http://{self.address}" if self.port else ""

    def _command(self) -> list[str]:
        fabric = self._fabric
        self._ready.unlink(missing_ok=True)
        self.env = {"DYNOSTORE_ADMIN_TOKEN": fabric.admin_token}
        return [
            *fabric.python_command,
            "s3",
            "--gateway", ",".join(fabric.gateway_addresses),
            "--listen", self.address,
            "--ready-file", str(self._ready),
            *(["--tls-ca", str(fabric.tls_ca)] if fabric.tls_ca else []),
            *self._options,
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        address = self.wait_for_file(self._ready)
        if address != self.address:
            raise RuntimeError(f"{self.name} listens on {address}, not {self.address}.")


class EtcdHandle(PinnedHandle):
    """One etcd member of a :class:`LocalFabric`, at the same client and peer ports after every restart.

    It keeps its data directory, so committed objects survive a kill;
    :meth:`start` returns once the member reports itself healthy.
    """

    def __init__(self, index: int, fabric: LocalFabric) -> None:
        """Describe etcd member ``index`` of ``fabric`` (its data under ``root/etcd``, numbered after the first)."""
        places = fabric.etcd_placements
        super().__init__(_numbered("etcd", index), index, fabric, ["client", "peer"], places[index] if places else None)
        self.data_dir = fabric.root / self.name
        self.member_name = _numbered("dynostore", index)

    @property
    def client_url(self) -> str:
        """The member's client URL (https with TLS)."""
        return f"{'https' if self._fabric.tls_ca else 'http'}://{self.placement.host}:{self.ports['client']}"

    @property
    def peer_url(self) -> str:
        """The member's peer URL."""
        return f"http://{self.placement.host}:{self.ports['peer']}"

    def _command(self) -> list[str]:
        fabric = self._fabric
        tls = fabric.tls_ca is not None
        return [
            etcd_binary(),
            "--name", self.member_name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", ",".join(f"{m.member_name}={m.peer_url}" for m in fabric.etcd_members),
            "--log-level", "warn",
            # Keep an hour of history (for event resumption), then let etcd
            # reclaim old revisions: evicted records and inline bytes.
            "--auto-compaction-mode", "periodic",
            "--auto-compaction-retention", "1h",
            # With TLS, etcd also wants a certificate from its clients.
            *(fabric._tls_flags("--trusted-ca-file", "--cert-file", "--key-file") if tls else []),
            *(["--client-cert-auth"] if tls else []),
        ]  # fmt: skip

    def _wait_ready(self) -> None:
        context = None
        if self._fabric.tls_ca:
            ca, cert, key = self._fabric._tls_files
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{self.client_url}/health", timeout=1, context=context) as reply:
                    if json.loads(reply.read()).get("health") == "true":
                        return
            except OSError:
                pass
            if not self.running:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become healthy:\n{self.log_tail()}")
            time.sleep(0.05)
