"""The HTTP endpoint a gateway or container serves its metrics at (``GET /metrics``).

It is off unless the settings name an address (``metrics_listen``,
``--metrics-listen HOST:PORT``; port 0 picks a free one). The address it is
bound to is logged, printed, and written to ``metrics_ready_file`` when that
is set, before the process announces itself ready.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from dynostore.errors import InvalidArgument
from dynostore.metrics import REGISTRY, register_role

log = logging.getLogger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    """The host and port of ``HOST:PORT`` (``[::]:PORT`` for IPv6).

    Raises:
        InvalidArgument: ``listen`` is not of that form, or the port is out of range.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"metrics_listen must be HOST:PORT (port 0: any free port), not {listen!r}.")
    return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass
class MetricsEndpoint:
    """A running metrics endpoint; :meth:`close` stops it."""

    address: str
    _server: WSGIServer
    _thread: threading.Thread

    @classmethod
    def start(cls, role: str, listen: str, ready_file: Path | None = None) -> MetricsEndpoint:
        """Serve the metrics of ``role`` on ``listen``; write the bound address to ``ready_file``.

        Raises:
            InvalidArgument: ``listen`` is not ``HOST:PORT``.
            OSError: the address cannot be bound.
        """
        host, port = parse_listen(listen)
        register_role(role)
        server, thread = start_http_server(port, host, registry=REGISTRY)
        bound = int(server.server_address[1])
        address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        log.info("Metrics on http://%s/metrics", address)
        print(f"metrics on http://{address}/metrics", flush=True)
        if ready_file is not None:
            temp = ready_file.with_name(ready_file.name + ".tmp")
            temp.write_text(address)
            temp.replace(ready_file)
        return cls(address, server, thread)

    @classmethod
    def maybe_start(cls, role: str, listen: str | None, ready_file: Path | None = None) -> MetricsEndpoint | None:
        """:meth:`start` if ``listen`` is set, else None (metrics off).

        Raises:
            InvalidArgument: ``listen`` is not ``HOST:PORT``.
            OSError: the address cannot be bound.
        """
        return None if listen is None else cls.start(role, listen, ready_file)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
