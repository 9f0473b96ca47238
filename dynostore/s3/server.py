"""The S3 front door's process: an aiohttp server that checks each request's signature and routes it.

``dynostore s3 --gateway HOST:PORT --listen 127.0.0.1:8096`` with an admin
token in ``$DYNOSTORE_ADMIN_TOKEN`` (the door's service credential: it
fetches signing keys with it, and acts for each request with the token of
the access key's user). Only path-style addressing (``http://door/bucket/key``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from dynostore.client.aio import AsyncClient
from dynostore.errors import DynoStoreError
from dynostore.rpc.workers import WORKER_ENV, worker_index
from dynostore.s3 import buckets, multipart, objects
from dynostore.s3.auth import Caller, SigningKeys, authenticate
from dynostore.s3.errors import S3Error, from_fabric
from dynostore.s3.store import LEFTOVER_GRACE, Store
from dynostore.s3.xml import error_document

log = logging.getLogger(__name__)
STORE: web.AppKey[Store] = web.AppKey("store", Store)
KEYS: web.AppKey[SigningKeys] = web.AppKey("keys", SigningKeys)
REGION: web.AppKey[str] = web.AppKey("region", str)
# Sub-resources of buckets and objects this door does not serve (versioning, ACLs, lifecycle...).
UNSUPPORTED = {
    "acl", "analytics", "cors", "encryption", "intelligent-tiering", "inventory", "legal-hold", "lifecycle",
    "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
    "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select", "tagging",
    "torrent", "versioning", "versions", "website", "accelerate", "attributes",
}  # fmt: skip


def split_path(raw_path: str) -> tuple[str, str]:
    """``(bucket, key)`` of a path-style request path (either may be empty)."""
    path = unquote(raw_path.split("?", 1)[0])
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, key


async def route(request: web.Request, store: Store, caller: Caller, region: str) -> web.StreamResponse:
    """Run the operation a request names."""
    bucket, key = split_path(request.raw_path)
    method, query = request.method, request.query
    if bucket and not key and method == "GET" and "versioning" in query:
        return await buckets.bucket_versioning(store, caller, bucket)
    unsupported = UNSUPPORTED & set(query)
    if unsupported:
        raise S3Error("NotImplemented", f"The {sorted(unsupported)[0]!r} sub-resource is not supported here.", 501)
    if not bucket:
        if method == "GET":
            return await buckets.list_buckets(store, caller)
    elif not key:
        if method == "PUT":
            return await buckets.create_bucket(store, request, caller, bucket, region)
        if method == "DELETE":
            return await buckets.delete_bucket(store, caller, bucket)
        if method == "HEAD":
            return await buckets.head_bucket(store, caller, bucket, region)
        if method == "GET" and "location" in query:
            return await buckets.bucket_location(store, caller, bucket, region)
        if method == "GET" and "uploads" in query:
            return await multipart.list_uploads(store, request, caller, bucket)
        if method == "GET":
            return await objects.list_objects(store, request, caller, bucket)
        if method == "POST" and "delete" in query:
            return await objects.delete_objects(store, request, caller, bucket)
    else:
        if method == "PUT" and "uploadId" in query:
            return await multipart.upload_part(store, request, caller, bucket, key)
        if method == "PUT" and "x-amz-copy-source" in request.headers:
            return await objects.copy_object(store, request, caller, bucket, key)
        if method == "PUT":
            return await objects.put_object(store, request, caller, bucket, key)
        if method == "GET" and "uploadId" in query:
            return await multipart.list_parts(store, request, caller, bucket, key)
        if method in ("GET", "HEAD"):
            return await objects.get_object(store, request, caller, bucket, key, head=method == "HEAD")
        if method == "DELETE" and "uploadId" in query:
            return await multipart.abort_upload(store, request, caller, bucket, key)
        if method == "DELETE":
            return await objects.delete_object(store, request, caller, bucket, key)
        if method == "POST" and "uploads" in query:
            return await multipart.create_upload(store, request, caller, bucket, key)
        if method == "POST" and "uploadId" in query:
            return await multipart.complete_upload(store, request, caller, bucket, key)
    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)


async def handle(request: web.Request) -> web.StreamResponse:
    """Authenticate, route, and turn errors into S3's XML error documents."""
    request_id = secrets.token_hex(8).upper()
    try:
        caller = await authenticate(request, request.app[KEYS])
        response = await route(request, request.app[STORE], caller, request.app[REGION])
    except S3Error as exc:
        response = _error(request, exc, request_id)
    except DynoStoreError as exc:
        response = _error(request, from_fabric(exc), request_id)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("S3 request %s %s failed.", request.method, request.path[:200])
        response = _error(request, S3Error("InternalError", "We encountered an internal error.", 500), request_id)
    if not response.prepared:
        response.headers["x-amz-request-id"] = request_id
        response.headers["Server"] = "DynoStore"
    return response


def _error(request: web.Request, error: S3Error, request_id: str) -> web.Response:
    if error.status >= 500:
        log.warning("S3 %s %s: %s %s", request.method, request.path[:200], error.code, error.message)
    body = b"" if request.method == "HEAD" else error_document(error, request.path, request_id)
    response = web.Response(status=error.status, body=body, content_type="application/xml")
    if request.method == "HEAD":
        response.headers["x-amz-error-code"] = error.code
    return response


def make_app(
    client: AsyncClient, service_token: str, region: str = "us-east-1", leftover_grace: float = LEFTOVER_GRACE
) -> web.Application:
    """The front door's aiohttp application over ``client``, fetching signing keys with ``service_token``."""

    async def fetch(access_key_id: str, date: str, request_region: str) -> tuple[bytes, str, str]:
        return await client.s3_signing_key(access_key_id, date, request_region, service_token)

    app = web.Application(client_max_size=1024**2)
    app[STORE] = Store(client, leftover_grace)
    app[KEYS] = SigningKeys(fetch)
    app[REGION] = region
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(
    gateway: str | Sequence[str],
    service_token: str,
    listen: str = "127.0.0.1:8096",
    region: str = "us-east-1",
    ready_file: Path | None = None,
    tls_ca: Path | None = None,
    leftover_grace: float = LEFTOVER_GRACE,
) -> None:
    """Serve the front door on ``listen`` until SIGTERM/SIGINT (``leftover_grace``: see :class:`Store`)."""
    host, _, port = listen.rpartition(":")
    async with AsyncClient(gateway, tls_ca=tls_ca) as client:
        await client.whoami(service_token)  # a bad token fails here, not at the first request
        runner = web.AppRunner(make_app(client, service_token, region, leftover_grace), access_log=None)
        await runner.setup()
        # One of several workers (dynostore.rpc.workers): the port is shared with SO_REUSEPORT.
        shared = WORKER_ENV in os.environ
        # SO_REUSEADDR, as the gRPC servers have: a door started again at once, after one that died with
        # connections open, binds the port (still refused while another server listens on it).
        site = web.TCPSite(runner, host or "127.0.0.1", int(port), reuse_address=True, reuse_port=shared)
        await site.start()
        bound = runner.addresses[0][1]
        address = f"{host or '127.0.0.1'}:{bound}"
        worker = f" worker {worker_index()}" if shared else ""
        log.info("S3 front door%s serving on http://%s (gateway %s, region %s)", worker, address, gateway, region)
        print(f"s3 listening on http://{address}", flush=True)
        if ready_file:
            temp = ready_file.with_name(ready_file.name + ".tmp")
            temp.write_text(address)
            temp.replace(ready_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()
