"""The catalog pages of the web UI: catalogs, a catalog's objects, upload, download, evict."""

from __future__ import annotations

import html
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from dynostore import validation
from dynostore.errors import InvalidArgument, NotFound
from dynostore.web.base import HandlerBase, human


class CatalogPages(HandlerBase):
    """Catalogs and their objects: browse, upload, download, evict."""

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
