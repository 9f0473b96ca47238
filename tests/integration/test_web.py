"""The web UI against a real fabric: over HTTP, and in a real Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from dynostore.errors import NotFound, PermissionDenied
from tests.conftest import skip_or_fail
from tests.integration.conftest import Session

CHROMIUM = "/usr/bin/chromium"
CHANGE = {"X-DynoStore-Request": "1"}
TRAVERSAL = "..%2F..%2Fetc%2Fpasswd"
# Chromium on a machine without a network: no background connections, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Web:
    url: str
    session: Session


@pytest.fixture
def web(shared: Session) -> Iterator[Web]:
    """``dynostore web`` for the shared fabric, on a free port; stopped after the test."""
    env = {**shared.cli_env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dynostore", "web", "--listen", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "web UI on http://" in line, line + process.stdout.read()
        yield Web(line.split()[3], shared)
    finally:
        process.terminate()
        process.wait(10)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def call(
    url: str, method: str = "GET", body: bytes | None = None, cookie: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if cookie:
        request.add_header("Cookie", cookie)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def sign_in(web: Web, token: str) -> str:
    status, headers, _ = call(f"{web.url}login", "POST", f"token={quote(token)}".encode())
    assert status == 303
    return headers["Set-Cookie"].split(";")[0]


def test_sign_in_browse_upload_download_evict_over_http(web: Web) -> None:
    s = web.session
    status, _, page = call(web.url)
    assert status == 401
    assert b"Sign in" in page
    status, _, page = call(f"{web.url}login", "POST", b"token=dyn_not-a-real-token-at-all-xxxxxxxxx")
    assert status == 401
    assert b"not valid" in page
    cookie = sign_in(web, s.token)
    assert "HttpOnly" in call(f"{web.url}login", "POST", f"token={quote(s.token)}".encode())[1]["Set-Cookie"]

    data = os.urandom(300_000)
    name = '<img src=x onerror="alert(1)">.bin'
    upload = f"{web.url}catalogs/web-ui?name={quote(name)}"
    assert call(upload, "PUT", data, cookie)[0] == 403  # no change header: refused
    status, _, key_bytes = call(upload, "PUT", data, cookie, {"X-DynoStore-Request": "1"})
    assert status == 201
    key = key_bytes.decode()
    assert s.client.get(key=key, token_user=s.token) == data

    status, _, page = call(web.url, cookie=cookie)
    assert status == 200
    assert b'href="/catalogs/web-ui"' in page
    status, _, page = call(f"{web.url}catalogs/web-ui", cookie=cookie)
    assert status == 200
    assert key.encode() in page
    assert b"&lt;img src=x" in page
    assert b"<img src=x" not in page  # escaped, never markup

    status, headers, body = call(f"{web.url}objects/{key}?name=x.bin", cookie=cookie)
    assert status == 200
    assert body == data
    assert "attachment" in headers["Content-Disposition"]

    assert call(f"{web.url}objects/{key}", "DELETE", cookie=cookie)[0] == 403
    assert call(f"{web.url}objects/{key}", "DELETE", cookie=cookie, headers={"X-DynoStore-Request": "1"})[0] == 204
    with pytest.raises(NotFound):
        s.client.get(key=key, token_user=s.token)
    assert call(f"{web.url}objects/{key}", cookie=cookie)[0] == 404


def test_cookie_and_headers_keep_the_token_from_scripts_and_other_sites(web: Web) -> None:
    """The token cookie is HttpOnly and SameSite=Strict; every page forbids scripts from elsewhere."""
    status, headers, _ = call(f"{web.url}login", "POST", f"token={quote(web.session.token)}".encode())
    assert status == 303
    attributes = [a.strip() for a in headers["Set-Cookie"].split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    cookie = attributes[0]
    for url, cookie_sent in ((web.url, ""), (web.url, cookie), (f"{web.url}catalogs/none-such", cookie)):
        policy = call(url, cookie=cookie_sent)[1]["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "script-src" not in policy or "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    status, headers, _ = call(f"{web.url}logout", "POST", cookie=cookie)
    assert status == 303
    assert "Max-Age=0" in headers["Set-Cookie"]


def test_a_revoked_token_signs_the_browser_out(web: Web) -> None:
    s = web.session
    token, info = s.client.create_token(token_user=s.token)
    cookie = sign_in(web, token)
    assert call(web.url, cookie=cookie)[0] == 200
    s.client.revoke_token(info.id, token_user=s.token)
    status, _, page = call(web.url, cookie=cookie)
    assert status == 401
    assert b"Please sign in again" in page
    assert b"Sign in" in page


def test_shared_catalogs_are_read_only(web: Web) -> None:
    s = web.session
    key = s.client.put(data=b"for readers", token_user=s.token, catalog="web-shared", name="note.txt")
    reader = s.fabric.create_user(f"webreader{os.getpid()}")
    s.client.share("web-shared", "webreader" + str(os.getpid()), token_user=s.token)
    cookie = sign_in(web, reader)
    owner = s.client.whoami(token_user=s.token)
    status, _, page = call(web.url, cookie=cookie)
    assert f"{owner}/web-shared".encode() in page
    status, _, page = call(f"{web.url}catalogs/{quote(owner + '/web-shared', safe='')}", cookie=cookie)
    assert status == 200
    assert b"read only" in page
    assert b'class="evict"' not in page
    assert b'id="upload"' not in page
    assert call(f"{web.url}objects/{key}?name=note.txt", cookie=cookie)[2] == b"for readers"
    assert call(f"{web.url}objects/{key}", "DELETE", cookie=cookie, headers={"X-DynoStore-Request": "1"})[0] == 403
    assert s.client.exists(key=key, token_user=s.token)


def test_in_chromium(web: Web, tmp_path: Path) -> None:
    try:
        from playwright import sync_api
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[test]' installs it)")
    if not shutil.which(CHROMIUM):
        skip_or_fail("Chromium is not installed (scripts/test.sh installs Debian's chromium as root)")
    s = web.session
    upload = tmp_path / "results.csv"
    upload.write_bytes(os.urandom(3 * 1024 * 1024))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.goto(web.url)
            page.fill("input[name=token]", s.token)
            page.click("button:has-text('Sign in')")
            page.wait_for_selector("h2:has-text('Catalogs')")
            page.fill("input[name=catalog]", "browser")
            page.click("button:has-text('Open')")
            page.wait_for_url("**/catalogs/browser")
            page.set_input_files("input[type=file]", str(upload))
            page.click("button:has-text('Upload')")
            row = page.wait_for_selector("tr:has-text('results.csv')")
            assert row is not None
            with page.expect_download() as info:
                page.click("a:has-text('results.csv')")
            saved = tmp_path / "downloaded"
            info.value.save_as(saved)
            assert saved.read_bytes() == upload.read_bytes()
            keys = [o.key for o in s.client.list("browser", token_user=s.token) if o.name == "results.csv"]
            assert len(keys) == 1
            page.click("button.evict")
            page.wait_for_selector("tr:has-text('results.csv')", state="detached")
            assert not s.client.exists(key=keys[0], token_user=s.token)
            page.click("button:has-text('Sign out')")
            page.wait_for_selector("input[name=token]")
        finally:
            browser.close()


def test_fabric_and_object_pages_over_http(web: Web) -> None:
    s = web.session
    cookie = sign_in(web, s.token)
    key = s.client.put(data=os.urandom(200_000), token_user=s.token, catalog="web-fabric", name="<b>chunky</b>")
    status, _, page = call(f"{web.url}fabric", cookie=cookie)
    assert status == 200
    text = page.decode()
    assert text.count('class="container up"') == 5
    assert text.count('<section class="site">') == 5  # one site per container
    assert 'id="live" data-refresh="/fabric?part=live"' in text
    assert "5/5 containers up" in text
    status, _, part = call(f"{web.url}fabric?part=live", cookie=cookie)
    assert status == 200
    assert b"<html" not in part
    assert b'id="summary"' in part

    status, _, page = call(f"{web.url}info/{key}", cookie=cookie)
    assert status == 200
    text = page.decode()
    assert text.count('class="chunk stored"') == 5 + 1  # five chunks and the legend
    assert "k=3 data + m=2 parity" in text
    assert "&lt;b&gt;chunky&lt;/b&gt;" in text
    assert "<b>chunky</b>" not in text
    assert call(f"{web.url}info/{TRAVERSAL}", cookie=cookie)[0] == 400
    assert call(f"{web.url}fabric")[0] == 401  # no cookie


def test_sharing_from_the_catalog_page(web: Web) -> None:
    s = web.session
    reader_name = f"webfriend{os.getpid()}"
    reader = s.fabric.create_user(reader_name)
    key = s.client.put(data=b"to share", token_user=s.token, catalog="web-sharing", name="s.txt")
    owner, cookie = s.client.whoami(token_user=s.token), sign_in(web, s.token)
    url = f"{web.url}shares/web-sharing/{reader_name}"
    assert call(url, "PUT", cookie=cookie)[0] == 403  # no change header
    assert call(url, "PUT", cookie=cookie, headers=CHANGE)[0] == 204
    page = call(f"{web.url}catalogs/web-sharing", cookie=cookie)[2].decode()
    assert f'data-user="{reader_name}"' in page
    assert s.client.get(key=key, token_user=reader) == b"to share"
    assert call(f"{web.url}shares/web-sharing/{reader_name}", "DELETE", cookie=cookie, headers=CHANGE)[0] == 204
    assert f'data-user="{reader_name}"' not in call(f"{web.url}catalogs/web-sharing", cookie=cookie)[2].decode()
    with pytest.raises(PermissionDenied):
        s.client.get(key=key, token_user=reader)
    # the reader has no catalog of that name to share: the gateway says so, and the UI passes it on
    reader_cookie = sign_in(web, reader)
    assert call(f"{web.url}shares/web-sharing/{owner}", "PUT", cookie=reader_cookie, headers=CHANGE)[0] == 404


def test_event_stream_sends_a_put_as_it_happens(web: Web) -> None:
    s = web.session
    cookie = sign_in(web, s.token)
    s.client.create_catalog("web-events", token_user=s.token)
    request = urllib.request.Request(f"{web.url}event-stream/web-events", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=60) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        key = s.client.put(data=b"event!", token_user=s.token, catalog="web-events", name="e.txt")
        for line in stream:
            if line.startswith(b"data: "):
                event = json.loads(line[len(b"data: ") :])
                break
    assert (event["kind"], event["key"], event["name"], event["size"]) == ("put", key, "e.txt", 6)
    assert call(f"{web.url}event-stream/none-such-catalog", cookie=cookie)[0] == 404


def test_fabric_object_sharing_and_events_in_chromium(web: Web, tmp_path: Path) -> None:
    try:
        from playwright import sync_api
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[test]' installs it)")
    if not shutil.which(CHROMIUM):
        skip_or_fail("Chromium is not installed (scripts/test.sh installs Debian's chromium as root)")
    s = web.session
    reader_name = f"webpal{os.getpid()}"
    s.fabric.create_user(reader_name)
    key = s.client.put(data=os.urandom(100_000), token_user=s.token, catalog="web-browser2", name="seen.bin")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()
            page.goto(web.url)
            page.fill("input[name=token]", s.token)
            page.click("button:has-text('Sign in')")
            page.click("a:has-text('Fabric')")
            page.wait_for_selector("#summary")
            assert page.locator(".container.up").count() == 5
            assert page.locator(".site .bar .fill").count() == 5
            page.wait_for_selector("#live[data-refreshed]", timeout=30_000)  # the live part refreshed itself
            shot = tmp_path / "fabric.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            page.goto(f"{web.url}catalogs/web-browser2")
            page.click(f"a[href='/info/{key}']")
            page.wait_for_selector("#chunks")
            assert page.locator("#chunks .chunk.stored").count() == 5
            page.screenshot(path=str(tmp_path / "object.png"), full_page=True)

            page.goto(f"{web.url}catalogs/web-browser2")
            page.fill("#share input[name=user]", reader_name)
            page.click("#share button")
            page.wait_for_selector(f"#readers button[data-user='{reader_name}']")
            page.click(f"#readers button[data-user='{reader_name}']")
            page.wait_for_selector(f"#readers button[data-user='{reader_name}']", state="detached")
            assert s.client.describe_catalog("web-browser2", token_user=s.token).shared_with == ()

            page.click("a:has-text('Live events')")
            page.wait_for_selector("p.status:has-text('Following')")
            s.client.put(data=b"live", token_user=s.token, catalog="web-browser2", name="arrived.txt")
            page.wait_for_selector("tr.event.put:has-text('arrived.txt')", timeout=30_000)
            page.screenshot(path=str(tmp_path / "events.png"), full_page=True)
        finally:
            browser.close()
