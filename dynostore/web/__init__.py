"""A small web UI: sign in with a token, browse catalogs, upload, download and evict objects.

``dynostore web --gateway HOST:PORT`` serves it (default ``127.0.0.1:8088``).
It is a thin layer over the SDK (:class:`dynostore.client.Client`): every
page and action is one or two SDK calls made with the visitor's token, which
is kept in an ``HttpOnly``, ``SameSite=Strict`` cookie. Pages are rendered on
the server with every value HTML-escaped; the one script (``static/app.js``)
uploads with a progress bar and evicts. Changes (upload, evict) must carry
the ``X-DynoStore-Request`` header, which a cross-site form cannot send.
"""

from __future__ import annotations

import html
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from dynostore import validation
from dynostore.client import Client
from dynostore.errors import (
    DynoStoreError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

log = logging.getLogger(__name__)
COOKIE = "dynostore_token"
CHANGE_HEADER = "X-DynoStore-Request"
# Form posts (the sign-in) are small; uploads stream to a temporary file.
MAX_FORM_BYTES = 4096
STATUS = {NotFound: 404, PermissionDenied: 403, Unauthenticated: 401, InvalidArgument: 400}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · DynoStore</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ padding: .3rem .6rem; border-bottom: 1px solid #ddd; }}
th {{ text-align: left; }} td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
code {{ font-size: 12px; }} .error {{ color: #a00; }} header {{ display: flex; justify-content: space-between; }}
</style><script src="/static/app.js" defer></script></head>
<body><header><h1><a href="/">DynoStore</a> · {title}</h1>{account}</header>{body}</body></html>
"""


def human(size: int) -> str:
    """``size`` bytes in the largest unit that keeps it at least 1."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class WebUI(ThreadingHTTPServer):
    """The HTTP server; one SDK client serves every visitor (it is thread-safe)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], client: Client) -> None:
        """Serve on ``address`` through ``client``."""
        super().__init__(address, Handler)
        self.client = client


class Handler(BaseHTTPRequestHandler):
    """One request: route it, call the SDK, render the reply."""

    server: WebUI
    server_version = "DynoStoreWeb"

    # plumbing ---------------------------------------------------------------

    def log_message(self, format: str, *args: object) -> None:
        """Log through :mod:`logging` instead of stderr."""
        log.info("%s %s", self.address_string(), format % args)

    @property
    def client(self) -> Client:
        return self.server.client

    def _token(self) -> str | None:
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        return cookie[COOKIE].value if COOKIE in cookie else None

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _page(self, title: str, body: str, status: int = 200, user: str | None = None) -> None:
        account = (
            f'<form method="post" action="/logout"><span>{html.escape(user)}</span> '
            '<button type="submit">Sign out</button></form>'
            if user
            else ""
        )
        text = PAGE.format(title=html.escape(title), body=body, account=account)
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _redirect(self, where: str, cookie: str | None = None) -> None:
        headers = {"Location": where}
        if cookie is not None:
            headers["Set-Cookie"] = cookie
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", headers)

    def _fail(self, exc: DynoStoreError) -> None:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 502)
        if self.command in ("PUT", "DELETE"):
            self._send(status, str(exc).encode(), "text/plain; charset=utf-8")
        elif status == 401:
            self._login("" if self._token() is None else f"Please sign in again: {exc}", status)
        else:
            self._page("Error", f'<p class="error">{html.escape(str(exc))}</p><p><a href="/">Back</a></p>', status)

    def _route(self, routes: dict[str, Callable[[str, str], None]]) -> None:
        path = urlsplit(self.path).path
        try:
            for prefix, handler in routes.items():
                if path == prefix or (prefix != "/" and prefix.endswith("/") and path.startswith(prefix)):
                    token = self._token()
                    if token is None and prefix not in ("/login", "/static/"):
                        self._fail(Unauthenticated("No token: sign in first."))
                        return
                    handler(unquote(path[len(prefix) :]), token or "")
                    return
            self._send(404, b"Not found", "text/plain")
        except DynoStoreError as exc:
            self._fail(exc)

    def _changes_allowed(self) -> bool:
        """Changes need the header a cross-site form or link cannot send."""
        if self.headers.get(CHANGE_HEADER) != "1":
            self._send(403, f"Missing the {CHANGE_HEADER} header.".encode(), "text/plain")
            return False
        return True

    # routes -----------------------------------------------------------------

    def do_GET(self) -> None:
        """Pages, downloads and the script."""
        self._route(
            {"/": self._home, "/catalogs/": self._catalog, "/objects/": self._download, "/static/": self._static}
        )

    def do_HEAD(self) -> None:
        """As GET, without the body."""
        self.do_GET()

    def do_POST(self) -> None:
        """Sign in and out."""
        self._route({"/login": self._sign_in, "/logout": self._sign_out})

    def do_PUT(self) -> None:
        """Upload: ``PUT /catalogs/<catalog>?name=<name>`` with the bytes as the body."""
        if self._changes_allowed():
            self._route({"/catalogs/": self._upload})

    def do_DELETE(self) -> None:
        """Evict: ``DELETE /objects/<key>``."""
        if self._changes_allowed():
            self._route({"/objects/": self._evict})

    def _home(self, rest: str, token: str) -> None:
        user = self.client.whoami(token_user=token)
        rows = "".join(
            f'<li><a href="/catalogs/{quote(ref, safe="")}">{html.escape(ref)}</a></li>'
            for ref in (
                c.name if c.owner == user else f"{c.owner}/{c.name}"
                for c in self.client.list_catalogs(token_user=token)
            )
        )
        body = (
            f"<h2>Catalogs</h2><ul>{rows or '<li>No catalogs yet.</li>'}</ul>"
            '<form id="open-catalog"><label>Open or start a catalog '
            '<input name="catalog" required pattern="[A-Za-z0-9._-]+"></label> <button>Open</button></form>'
        )
        self._page("Catalogs", body, user=user)

    def _catalog(self, ref: str, token: str) -> None:
        user = self.client.whoami(token_user=token)
        owner, name = validation.catalog_ref(ref, user)
        own = owner == user
        try:
            objects = sorted(self.client.list(ref, token_user=token), key=lambda o: o.created, reverse=True)
        except NotFound:
            if not own:
                raise
            objects = []  # a catalog of one's own that does not exist yet: its first upload creates it
        rows = "".join(
            "<tr>"
            f'<td><a href="/objects/{o.key}?name={quote(o.name or o.key)}" download>'
            f"{html.escape(o.name or '-')}</a></td>"
            f"<td><code>{o.key}</code></td><td class=n>{human(o.size)}</td>"
            f"<td>{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(o.created))}</td>"
            + (f'<td><button class="evict" data-key="{o.key}">Evict</button></td>' if own else "")
            + "</tr>"
            for o in objects
        )
        upload = (
            f'<form id="upload" data-catalog="{html.escape(name)}"><input type="file" name="file" required> '
            '<button>Upload</button> <progress hidden max="100" value="0"></progress> '
            '<span class="status"></span></form>'
            if own
            else f"<p>Shared with you by {html.escape(owner)} (read only).</p>"
        )
        body = (
            f"{upload}<h2>{len(objects)} object(s)</h2>"
            f"<table><tr><th>name</th><th>key</th><th>size</th><th>created (UTC)</th>{'<th></th>' if own else ''}</tr>"
            f"{rows}</table>"
        )
        self._page(f"Catalog {owner}/{name}", body, user=user)

    def _download(self, key: str, token: str) -> None:
        validation.key(key)
        name = parse_qs(urlsplit(self.path).query).get("name", [key])[0]
        with tempfile.TemporaryDirectory(prefix="dynostore-web-") as scratch:
            path = Path(scratch) / "object"
            self.client.get_file(key, path, token_user=token)
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name, safe='')}")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)

    def _upload(self, catalog: str, token: str) -> None:
        name = parse_qs(urlsplit(self.path).query).get("name", [""])[0]
        length = int(self.headers.get("Content-Length") or -1)
        if length < 0:
            raise InvalidArgument("An upload needs a Content-Length.")
        with tempfile.TemporaryDirectory(prefix="dynostore-web-") as scratch:
            path = Path(scratch) / "upload"
            with open(path, "wb") as f:
                left = length
                while left:
                    block = self.rfile.read(min(left, 1 << 20))
                    if not block:
                        raise InvalidArgument("The upload ended early.")
                    f.write(block)
                    left -= len(block)
            key = self.client.put_file(path, token_user=token, catalog=catalog, name=name)
        self._send(201, key.encode(), "text/plain")

    def _evict(self, key: str, token: str) -> None:
        self.client.evict(validation.key(key), token_user=token)
        self._send(204, b"", "text/plain")

    def _static(self, name: str, token: str) -> None:
        if name != "app.js":
            self._send(404, b"Not found", "text/plain")
            return
        script = resources.files("dynostore.web").joinpath("static/app.js").read_bytes()
        self._send(200, script, "text/javascript; charset=utf-8", {"Cache-Control": "no-cache"})

    def _login(self, message: str = "", status: int = 200) -> None:
        error = f'<p class="error">{html.escape(message)}</p>' if message else ""
        body = (
            f"{error}<form method=post action=/login><label>Token "
            '<input type="password" name="token" required autocomplete="off" size="50"></label> '
            "<button>Sign in</button></form>"
        )
        self._page("Sign in", body, status)

    def _sign_in(self, rest: str, token: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_FORM_BYTES:
            raise InvalidArgument("Send the sign-in form.")
        given = parse_qs(self.rfile.read(length).decode(errors="replace")).get("token", [""])[0].strip()
        try:
            self.client.whoami(token_user=validation.token(given))
        except (Unauthenticated, InvalidArgument):
            self._login("That token is not valid.", 401)
            return
        self._redirect("/", f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/")

    def _sign_out(self, rest: str, token: str) -> None:
        self._redirect("/", f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")


def serve(gateway: str, listen: str = "127.0.0.1:8088", tls_ca: str | None = None, relay: bool = False) -> None:
    """Serve the web UI for the fabric at ``gateway`` until interrupted (``relay``: data through the gateway).

    ``gateway`` may name several gateways, comma-separated; the UI's client fails over between them.
    """
    host, _, port = listen.rpartition(":")
    with (
        Client(gateway, tls_ca=tls_ca, relay=relay) as client,
        WebUI((host or "127.0.0.1", int(port)), client) as server,
    ):
        print(f"web UI on http://{host or '127.0.0.1'}:{server.server_port}/ (gateway {gateway})", flush=True)
        server.serve_forever()
