"""A small web UI: catalogs and objects, sharing, live events, the fabric and where chunks are.

Sign in with a token, browse catalogs, upload, download and evict objects,
share catalogs, follow a catalog's events live, see the fabric (sites,
containers, repair) and where an object's chunks are.

``dynostore web --gateway HOST:PORT`` serves it (default ``127.0.0.1:8088``).
It is a thin layer over the SDK (:class:`dynostore.client.Client`): every
page and action is one or two SDK calls made with the visitor's token, which
is kept in an ``HttpOnly``, ``SameSite=Strict`` cookie. Pages are rendered on
the server with every value HTML-escaped; the one script (``static/app.js``)
uploads with a progress bar, evicts, shares, streams events and refreshes the
fabric page. Changes (upload, evict, share, unshare) must carry
the ``X-DynoStore-Request`` header, which a cross-site form cannot send.
"""

from __future__ import annotations

from dynostore.client import Client
from dynostore.web.base import CHANGE_HEADER, COOKIE, HandlerBase, WebUI, human
from dynostore.web.catalogs import CatalogPages
from dynostore.web.fabric import FabricPages


class Handler(CatalogPages, FabricPages):
    """One request: route it to its page, call the SDK, render the reply."""

    # routes -----------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's method name
        """Pages, downloads and the script."""
        self._route(
            {
                "/": self._home,
                "/catalogs/": self._catalog,
                "/objects/": self._download,
                "/info/": self._object,
                "/fabric": self._fabric,
                "/events/": self._events,
                "/event-stream/": self._event_stream,
                "/static/": self._static,
            }
        )

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's method name
        """As GET, without the body."""
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802 - http.server's method name
        """Sign in and out."""
        self._route({"/login": self._sign_in, "/logout": self._sign_out})

    def do_PUT(self) -> None:  # noqa: N802 - http.server's method name
        """Upload (``PUT /catalogs/<catalog>?name=<name>``, the bytes as the body) and share."""
        if self._changes_allowed():
            self._route({"/catalogs/": self._upload, "/shares/": self._share})

    def do_DELETE(self) -> None:  # noqa: N802 - http.server's method name
        """Evict (``DELETE /objects/<key>``) and unshare."""
        if self._changes_allowed():
            self._route({"/objects/": self._evict, "/shares/": self._unshare})


def serve(gateway: str, listen: str = "127.0.0.1:8088", tls_ca: str | None = None, relay: bool = False) -> None:
    """Serve the web UI for the fabric at ``gateway`` until interrupted (``relay``: data through the gateway).

    ``gateway`` may name several gateways, comma-separated; the UI's client fails over between them.
    """
    host, _, port = listen.rpartition(":")
    with (
        Client(gateway, tls_ca=tls_ca, relay=relay) as client,
        WebUI((host or "127.0.0.1", int(port)), client, Handler) as server,
    ):
        print(f"web UI on http://{host or '127.0.0.1'}:{server.server_port}/ (gateway {gateway})", flush=True)
        server.serve_forever()


__all__ = ["CHANGE_HEADER", "COOKIE", "Handler", "HandlerBase", "WebUI", "human", "serve"]
