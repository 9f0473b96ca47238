"""Object operations: PutObject, GetObject, HeadObject, DeleteObject(s), CopyObject, ListObjects V1 and V2."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from dynostore.s3.auth import Body, Caller, resegment
from dynostore.s3.errors import S3Error, invalid_argument
from dynostore.s3.store import DATA, Bucket, S3Object, Store, check_key, now, user_metadata
from dynostore.s3.xml import document, http_date, iso8601, parse

_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")  # longer numbers: not a range we serve
MAX_KEYS = 1000


def quoted(etag: str) -> str:
    """An ETag as S3 sends it: in double quotes."""
    return f'"{etag}"'


def object_headers(obj: S3Object) -> dict[str, str]:
    """The headers that describe ``obj`` (ETag, type, time, user metadata)."""
    headers = {
        "ETag": quoted(obj.etag),
        "Last-Modified": http_date(obj.modified),
        "Content-Type": obj.content_type,
        "Accept-Ranges": "bytes",
    }
    headers.update({f"x-amz-meta-{name}": value for name, value in obj.meta.items()})
    return headers


async def put_object(store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str) -> web.Response:
    """PutObject: stream the body into the fabric, then make it the key's current version."""
    bucket = await store.writable(caller, bucket_name)
    check_key(key)
    body = Body.of(request, caller)
    content_type = request.headers.get("Content-Type") or "binary/octet-stream"
    meta = user_metadata(request.headers)
    # Which versions the new one replaces is looked up while the bytes stream in.
    previous = asyncio.create_task(store.previous(caller, bucket, key))
    try:
        data_key = await store.store_part(caller, bucket, DATA + key, body.segments, body.size)
    except BaseException:
        previous.cancel()
        with contextlib.suppress(BaseException):
            await previous
        raise
    obj = S3Object(key, body.size, body.etag, now(), content_type, meta, [(data_key, body.size)])
    await replace(store, caller, bucket, obj, await previous)
    return web.Response(status=200, headers={"ETag": quoted(obj.etag)})


async def replace(
    store: Store, caller: Caller, bucket: Bucket, obj: S3Object, previous: list[S3Object] | None = None
) -> None:
    """Make ``obj`` its key's current version and evict the versions before it (``previous``, else looked up)."""
    if previous is None:
        previous = await store.previous(caller, bucket, obj.key)
    new_keys = {p[0] for p in obj.parts}
    await store.commit(caller, bucket, obj, [v for v in previous if not new_keys & set(v.fabric_keys)])


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of a ``Range: bytes=...`` header, None to send everything.

    Raises:
        S3Error: InvalidRange when the range starts past the end.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        return None  # several ranges or another unit: S3 sends the whole object
    first, last = match.groups()
    if not first:
        length = int(last)
        return (max(size - length, 0), size) if length else None
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        raise S3Error("InvalidRange", "The requested range is not satisfiable.", 416)
    return start, end


def _parse_http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp()


def check_conditions(request: web.Request, obj: S3Object) -> int | None:
    """The status a conditional GET/HEAD ends with (304 or 412), None when it goes on."""
    etag = quoted(obj.etag)
    if_match = request.headers.get("If-Match")
    if if_match is not None and if_match.strip() != "*" and etag not in [t.strip() for t in if_match.split(",")]:
        return 412
    if_none = request.headers.get("If-None-Match")
    if if_none is not None and (if_none.strip() == "*" or etag in [t.strip() for t in if_none.split(",")]):
        return 304
    modified = int(obj.modified)
    since = request.headers.get("If-Modified-Since")
    if since is not None and if_none is None and (moment := _parse_http_date(since)) is not None and modified <= moment:
        return 304
    unmodified = request.headers.get("If-Unmodified-Since")
    if (
        unmodified is not None
        and if_match is None
        and (moment := _parse_http_date(unmodified)) is not None
        and modified > moment
    ):
        return 412
    return None


async def get_object(
    store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str, head: bool = False
) -> web.StreamResponse:
    """GetObject and HeadObject (Range, conditionals, response-* overrides).

    A version replaced between the lookup and the first bytes (its parts
    evicted) is looked up again: the reader gets the new version whole.
    """
    bucket = await store.bucket(caller, bucket_name)
    for attempt in range(3):
        obj = await store.head(caller, bucket, key)
        status = check_conditions(request, obj)
        if status == 412:
            raise S3Error("PreconditionFailed", "At least one of the preconditions you specified did not hold.", 412)
        headers = object_headers(obj)
        if status == 304:
            kept = ("ETag", "Last-Modified")
            return web.Response(status=304, headers={k: v for k, v in headers.items() if k in kept})
        span = byte_range(request.headers.get("Range"), obj.size)
        start, end = span or (0, obj.size)
        pieces = store.read(caller, obj, start, end)
        first = b""
        if not head and end > start:
            try:
                first = await anext(pieces)
            except S3Error as exc:
                if exc.code != "NoSuchKey" or attempt == 2:
                    raise
                continue  # replaced since the lookup
        break
    for name, header in RESPONSE_OVERRIDES:
        if name in request.query:
            headers[header] = request.query[name]
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{obj.size}"
    response = web.StreamResponse(status=206 if span else 200, headers=headers)
    response.content_length = end - start
    await response.prepare(request)
    if first:
        await response.write(first)
        async for piece in pieces:
            await response.write(piece)
    await response.write_eof()
    return response


RESPONSE_OVERRIDES = (
    ("response-content-type", "Content-Type"),
    ("response-content-disposition", "Content-Disposition"),
    ("response-cache-control", "Cache-Control"),
    ("response-content-encoding", "Content-Encoding"),
    ("response-content-language", "Content-Language"),
    ("response-expires", "Expires"),
)


async def delete_object(store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str) -> web.Response:
    """DeleteObject: evict every version of the key (no error when there is none)."""
    bucket = await store.writable(caller, bucket_name)
    await store.evict_key(caller, await store.key_index(caller, bucket, key), key)
    return web.Response(status=204)


async def delete_objects(store: Store, request: web.Request, caller: Caller, bucket_name: str) -> web.Response:
    """DeleteObjects: the keys of a ``<Delete>`` document, each evicted."""
    bucket = await store.writable(caller, bucket_name)
    body = Body.of(request, caller)
    raw = await body.read_all(2 * 1024 * 1024)
    root = parse(raw)
    if root.tag != "Delete":
        raise S3Error("MalformedXML", "The body must be a <Delete> document.")
    quiet = (root.findtext("Quiet") or "").strip().lower() == "true"
    keys = [element.findtext("Key") or "" for element in root.findall("Object")]
    if len(keys) > 1000:
        raise S3Error("MalformedXML", "A DeleteObjects request may name at most 1000 keys.")
    index = await store.index(caller, bucket)
    results: list[tuple[str, Any]] = []
    for key in keys:
        try:
            await store.evict_key(caller, index, key)
        except S3Error as exc:
            results.append(("Error", [("Key", key), ("Code", exc.code), ("Message", exc.message)]))
            continue
        if not quiet:
            results.append(("Deleted", [("Key", key)]))
    return xml_response(document("DeleteResult", results))


def copy_source(request: web.Request) -> tuple[str, str]:
    """``(bucket, key)`` of the ``x-amz-copy-source`` header.

    Raises:
        S3Error: InvalidArgument for a malformed source (or one naming a version).
    """
    source = request.headers.get("x-amz-copy-source", "")
    path, _, query = source.partition("?")
    if query:
        raise invalid_argument("Copying a version of an object is not supported (there are no versions).")
    bucket, slash, key = unquote(path).lstrip("/").partition("/")
    if not slash or not bucket or not key:
        raise invalid_argument("x-amz-copy-source must be BUCKET/KEY.")
    return bucket, key


async def copy_object(store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str) -> web.Response:
    """CopyObject: stream the source's bytes into a new object (metadata copied or replaced)."""
    source_bucket, source_key = copy_source(request)
    source = await store.head(caller, await store.bucket(caller, source_bucket), source_key)
    bucket = await store.writable(caller, bucket_name)
    check_key(key)
    status = check_copy_conditions(request, source)
    if status:
        raise S3Error("PreconditionFailed", "At least one of the preconditions you specified did not hold.", 412)
    directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("x-amz-metadata-directive must be COPY or REPLACE.")
    if directive == "REPLACE":
        content_type = request.headers.get("Content-Type") or "binary/octet-stream"
        meta = user_metadata(request.headers)
    else:
        content_type, meta = source.content_type, dict(source.meta)
    md5, data_key = await copy_bytes(store, caller, bucket, DATA + key, source, 0, source.size)
    obj = S3Object(key, source.size, md5, now(), content_type, meta, [(data_key, source.size)])
    await replace(store, caller, bucket, obj)
    result = document("CopyObjectResult", [("LastModified", iso8601(obj.modified)), ("ETag", quoted(obj.etag))])
    return xml_response(result)


def check_copy_conditions(request: web.Request, source: S3Object) -> bool:
    """Whether an ``x-amz-copy-source-if-*`` condition fails."""
    etag = quoted(source.etag)
    match = request.headers.get("x-amz-copy-source-if-match")
    if match is not None and etag not in [t.strip() for t in match.split(",")]:
        return True
    none = request.headers.get("x-amz-copy-source-if-none-match")
    return none is not None and etag in [t.strip() for t in none.split(",")]


async def copy_bytes(
    store: Store, caller: Caller, bucket: Bucket, name: str, source: S3Object, start: int, end: int
) -> tuple[str, str]:
    """Stream bytes ``start:end`` of ``source`` into a new fabric object named ``name``: ``(md5 hex, key)``."""
    digest = hashlib.md5()

    async def pieces() -> AsyncIterator[bytes]:
        async for piece in store.read(caller, source, start, end):
            digest.update(piece)
            yield piece

    async def segments(segment_size: int) -> AsyncIterator[bytes]:
        async for segment in resegment(pieces(), segment_size):
            yield segment

    data_key = await store.store_part(caller, bucket, name, segments, end - start)
    return digest.hexdigest(), data_key


def xml_response(body: bytes, status: int = 200) -> web.Response:
    """An XML response."""
    return web.Response(status=status, body=body, content_type="application/xml")


def _max_keys(request: web.Request) -> int:
    try:
        value = int(request.query.get("max-keys", MAX_KEYS))
    except ValueError:
        raise invalid_argument("max-keys must be a number.") from None
    if value < 0:
        raise invalid_argument("max-keys must not be negative.")
    return min(value, MAX_KEYS)


def _token(value: str) -> str:
    try:
        return base64.urlsafe_b64decode(value.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_argument("The continuation token provided is incorrect.") from None


async def list_objects(store: Store, request: web.Request, caller: Caller, bucket_name: str) -> web.Response:
    """ListObjectsV2 (``list-type=2``) and V1: prefix, delimiter, max-keys, continuation/marker, start-after."""
    bucket = await store.bucket(caller, bucket_name)
    query = request.query
    v2 = query.get("list-type") == "2"
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    encode = query.get("encoding-type") == "url"

    def encoded(text: str) -> str:
        return quote(text, safe="/") if encode else text

    max_keys = _max_keys(request)
    if v2:
        marker = _token(query["continuation-token"]) if "continuation-token" in query else query.get("start-after", "")
    else:
        marker = query.get("marker", "")
    index = await store.index(caller, bucket)
    contents: list[str] = []
    prefixes: list[str] = []
    truncated = False
    last = ""
    for key in sorted(index.keys()):
        if not key.startswith(prefix) or key <= marker:
            continue
        if delimiter and marker.endswith(delimiter) and key.startswith(marker):
            continue  # inside the common prefix the last page ended with
        rest = key[len(prefix) :]
        common = prefix + rest[: rest.index(delimiter) + len(delimiter)] if delimiter and delimiter in rest else None
        if common is not None and prefixes and prefixes[-1] == common:
            continue
        if len(contents) + len(prefixes) >= max_keys:
            truncated = True
            break
        if common is not None:
            prefixes.append(common)
            last = common
        else:
            contents.append(key)
            last = key
    objects = await store.many(caller, bucket, index, contents)
    entries: list[tuple[str, Any]] = [("Name", bucket.name), ("Prefix", encoded(prefix))]
    if v2:
        if "continuation-token" in query:
            entries.append(("ContinuationToken", query["continuation-token"]))
        if "start-after" in query:
            entries.append(("StartAfter", encoded(query["start-after"])))
        entries.append(("KeyCount", len(contents) + len(prefixes)))
        if truncated:
            entries.append(("NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode()))
    else:
        entries.append(("Marker", encoded(marker)))
        if truncated:
            entries.append(("NextMarker", encoded(last)))
    entries.append(("MaxKeys", max_keys))
    if delimiter:
        entries.append(("Delimiter", encoded(delimiter)))
    if encode:
        entries.append(("EncodingType", "url"))
    entries.append(("IsTruncated", truncated))
    for key in contents:
        obj = objects.get(key)
        if obj is None:
            continue
        item: list[tuple[str, Any]] = [
            ("Key", encoded(key)),
            ("LastModified", iso8601(obj.modified)),
            ("ETag", quoted(obj.etag)),
            ("Size", obj.size),
            ("StorageClass", "STANDARD"),
        ]
        if not v2 or query.get("fetch-owner") == "true":
            item.append(("Owner", [("ID", bucket.owner), ("DisplayName", bucket.owner)]))
        entries.append(("Contents", item))
    entries += [("CommonPrefixes", [("Prefix", encoded(p))]) for p in prefixes]
    return xml_response(document("ListBucketResult", entries))
