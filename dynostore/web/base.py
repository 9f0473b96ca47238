"""What every page of the web UI shares: the page frame, the token cookie, routing, errors, sign-in."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

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

    def __init__(self, address: tuple[str, int], client: Client, handler: type[BaseHTTPRequestHandler]) -> None:
        """Serve on ``address`` through ``client``, each request handled by a new ``handler``."""
        super().__init__(address, handler)
        self.client = client


class HandlerBase(BaseHTTPRequestHandler):
    """Plumbing of one request: cookie, replies, pages, errors, routing, sign-in and out."""

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
            '<nav><a href="/">Catalogs</a> · <a href="/fabric">Fabric</a></nav>'
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
