"""The catalog pages of the web UI: catalogs, a catalog's objects, upload, download, evict, sharing, live events."""

from __future__ import annotations

import html
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from dynostore import validation
from dynostore.client import Event
from dynostore.errors import InvalidArgument, NotFound
from dynostore.web.base import HandlerBase, human

# Seconds without events after which a stream sends a comment (a closed page ends it), and a stream's length.
EVENT_IDLE_SECONDS = 10.0
EVENT_STREAM_SECONDS = 300.0


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
            f'<td><a href="/info/{o.key}"><code>{o.key}</code></a></td><td class=n>{human(o.size)}</td>'
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
        events = f'<p><a href="/events/{quote(ref, safe="")}">Live events of this catalog</a></p>'
        body = (
            f"{upload}{events}{self._sharing(name, token) if own else ''}<h2>{len(objects)} object(s)</h2>"
            f"<table><tr><th>name</th><th>key</th><th>size</th><th>created (UTC)</th>{'<th></th>' if own else ''}</tr>"
            f"{rows}</table>"
        )
        self._page(f"Catalog {owner}/{name}", body, user=user)

    def _sharing(self, name: str, token: str) -> str:
        """Who may read one's own catalog, with a revoke button each, and a form to share it."""
        try:
            readers = self.client.describe_catalog(name, token_user=token).shared_with
        except NotFound:
            return ""  # not made yet: its first upload creates it
        rows = "".join(
            f"<li>{html.escape(r)} "
            f'<button class="unshare" data-catalog="{html.escape(name)}" data-user="{html.escape(r)}">'
            "Revoke</button></li>"
            for r in readers
        )
        return (
            f'<h2>Shared with</h2><ul id="readers">{rows or "<li>nobody</li>"}</ul>'
            f'<form id="share" data-catalog="{html.escape(name)}"><label>Share with user '
            '<input name="user" required pattern="[A-Za-z0-9._-]+"></label> <button>Share</button> '
            '<span class="status"></span></form>'
        )

    def _share(self, rest: str, token: str) -> None:
        """``PUT /shares/<catalog>/<user>``: let ``user`` read one's own catalog."""
        catalog, _, reader = rest.partition("/")
        self.client.share(catalog, reader, token_user=token)
        self._send(204, b"", "text/plain")

    def _unshare(self, rest: str, token: str) -> None:
        """``DELETE /shares/<catalog>/<user>``: take ``user``'s access to one's own catalog away."""
        catalog, _, reader = rest.partition("/")
        self.client.unshare(catalog, reader, token_user=token)
        self._send(204, b"", "text/plain")

    def _events(self, ref: str, token: str) -> None:
        """A page that shows the catalog's events as they happen (its script reads :meth:`_event_stream`)."""
        user = self.client.whoami(token_user=token)
        owner, name = validation.catalog_ref(ref, user)
        self.client.describe_catalog(ref, token_user=token) if owner == user else None  # NotFound before a stream
        body = (
            f'<p><a href="/catalogs/{quote(ref, safe="")}">Back to the catalog</a></p>'
            f'<table id="events" data-stream="/event-stream/{quote(ref, safe="")}">'
            "<tr><th>time</th><th>revision</th><th>event</th><th>object or reader</th><th>size</th></tr></table>"
            '<p class="status">Waiting for events...</p>'
        )
        self._page(f"Events of {owner}/{name}", body, user=user)

    def _event_stream(self, ref: str, token: str) -> None:
        """Server-sent events: one ``data:`` line of JSON per catalog event, resumed after ``Last-Event-ID``.

        A comment goes out whenever nothing happened for EVENT_IDLE_SECONDS, so a
        closed page ends its stream; a stream ends after EVENT_STREAM_SECONDS
        (the browser reconnects and resumes where it was).
        """
        last = self.headers.get("Last-Event-ID", "")
        seen = validation.decimal(last)
        start = 0 if seen is None else seen + 1
        events: Generator[Event, None, None] = self.client.subscribe(
            ref, token_user=token, start_revision=start, idle_timeout=EVENT_IDLE_SECONDS
        )
        try:
            first = next(events)  # a catalog that is not there or not readable fails here, as a page would
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            ends = time.monotonic() + EVENT_STREAM_SECONDS
            for event in itertools.chain([first], events):
                if event.kind == "idle":
                    self.wfile.write(b": idle\n\n")
                else:
                    fields = {"kind": event.kind, "key": event.key, "name": event.name, "size": event.size}
                    fields |= {"time": event.time, "revision": event.revision, "user": event.user}
                    self.wfile.write(f"id: {event.revision}\ndata: {json.dumps(fields)}\n\n".encode())
                self.wfile.flush()
                if time.monotonic() > ends:
                    return
        except (BrokenPipeError, ConnectionResetError):
            return  # the page was closed
        finally:
            events.close()

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
