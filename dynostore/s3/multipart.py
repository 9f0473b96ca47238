"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts, ListMultipartUploads.

Each part streams into its own fabric object (``.dynostore-s3/parts/ID/NUMBER``),
then a tiny marker object ``.dynostore-s3/parts/ID/NUMBER/MD5/KEY`` records
that it landed whole, with its MD5 and fabric key, so listing the catalog
tells every part without reading any. Completing writes the object's meta
object naming the parts in order: no byte is copied again.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dynostore.errors import DynoStoreError
from dynostore.s3.auth import Body, Caller
from dynostore.s3.errors import S3Error, from_fabric, invalid_argument
from dynostore.s3.objects import byte_range, copy_bytes, copy_source, quoted, replace, xml_response
from dynostore.s3.store import PARTS, UPLOADS, Bucket, Index, S3Object, Store, check_key, now, user_metadata
from dynostore.s3.xml import document, iso8601, parse

MAX_PARTS = 10_000
# S3's smallest part but the last.
MIN_PART_BYTES = 5 * 1024 * 1024
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Part:
    """A part that landed whole."""

    number: int
    etag: str
    size: int
    key: str
    modified: float


def no_such_upload(upload_id: str) -> S3Error:
    """The upload does not exist (never made, completed or aborted)."""
    return S3Error(
        "NoSuchUpload",
        "The specified multipart upload does not exist. The upload ID may be invalid, "
        "or the upload may have been aborted or completed.",
        404,
    )


def _upload_id(request: web.Request) -> str:
    upload_id = request.query.get("uploadId", "")
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise no_such_upload(upload_id)
    return upload_id


def parts_of(index: Index, upload_id: str) -> dict[int, Part]:
    """The newest landed part of each number of an upload, from the markers in ``index``."""
    sizes = {}
    found: dict[int, Part] = {}
    infos = index.parts.get(upload_id, [])
    for info in infos:
        fields = info.name[len(PARTS) :].split("/")
        if len(fields) == 2:
            sizes[info.key] = info.size
    for info in infos:  # newest first
        fields = info.name[len(PARTS) :].split("/")
        if len(fields) == 4 and int(fields[1]) not in found and fields[3] in sizes:
            number = int(fields[1])
            found[number] = Part(number, fields[2], sizes[fields[3]], fields[3], info.created)
    return found


async def _upload_record(store: Store, caller: Caller, index: Index, upload_id: str, key: str) -> dict[str, Any]:
    info = index.uploads.get(upload_id)
    if info is None:
        raise no_such_upload(upload_id)
    try:
        record: dict[str, Any] = json.loads(await store.client.get(info.key, caller.token))
    except DynoStoreError as exc:
        raise from_fabric(exc) from None
    if record["key"] != key:
        raise no_such_upload(upload_id)
    record["fabric_key"] = info.key
    return record


async def create_upload(store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str) -> web.Response:
    """CreateMultipartUpload: a record of the upload (key, type, metadata)."""
    bucket = await store.writable(caller, bucket_name)
    check_key(key)
    upload_id = secrets.token_hex(16)
    record = {
        "key": key,
        "type": request.headers.get("Content-Type") or "binary/octet-stream",
        "meta": user_metadata(request.headers),
        "initiated": now(),
    }
    try:
        await store.client.put(json.dumps(record).encode(), caller.token, bucket.catalog, name=UPLOADS + upload_id)
    except DynoStoreError as exc:
        raise from_fabric(exc) from None
    entries = [("Bucket", bucket.name), ("Key", key), ("UploadId", upload_id)]
    return xml_response(document("InitiateMultipartUploadResult", entries))


def _part_number(request: web.Request) -> int:
    try:
        number = int(request.query.get("partNumber", ""))
    except ValueError:
        raise invalid_argument("partNumber must be a number from 1 to 10000.") from None
    if not 1 <= number <= MAX_PARTS:
        raise invalid_argument("partNumber must be a number from 1 to 10000.")
    return number


async def _mark(store: Store, caller: Caller, bucket: Bucket, upload_id: str, number: int, md5: str, key: str) -> None:
    try:
        await store.client.put(b"", caller.token, bucket.catalog, name=f"{PARTS}{upload_id}/{number:05d}/{md5}/{key}")
    except DynoStoreError as exc:
        raise from_fabric(exc) from None


async def upload_part(store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str) -> web.Response:
    """UploadPart and UploadPartCopy: stream the part into its own fabric object, then mark it landed."""
    bucket = await store.writable(caller, bucket_name)
    upload_id, number = _upload_id(request), _part_number(request)
    index = await store.named_index(caller, bucket, UPLOADS + upload_id)
    await _upload_record(store, caller, index, upload_id, key)
    name = f"{PARTS}{upload_id}/{number:05d}"
    if "x-amz-copy-source" in request.headers:
        source_bucket, source_key = copy_source(request)
        source = await store.head(caller, await store.bucket(caller, source_bucket), source_key)
        span = byte_range(request.headers.get("x-amz-copy-source-range"), source.size) or (0, source.size)
        md5, data_key = await copy_bytes(store, caller, bucket, name, source, *span)
        await _mark(store, caller, bucket, upload_id, number, md5, data_key)
        result = document("CopyPartResult", [("LastModified", iso8601(now())), ("ETag", quoted(md5))])
        return xml_response(result)
    body = Body.of(request, caller)
    data_key = await store.store_part(caller, bucket, name, body.segments, body.size)
    await _mark(store, caller, bucket, upload_id, number, body.etag, data_key)
    return web.Response(status=200, headers={"ETag": quoted(body.etag)})


async def complete_upload(
    store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str
) -> web.Response:
    """CompleteMultipartUpload: the listed parts, in order, become the key's current version."""
    bucket = await store.writable(caller, bucket_name)
    upload_id = _upload_id(request)
    root = parse(await Body.of(request, caller).read_all(2 * 1024 * 1024))
    wanted: list[tuple[int, str]] = []
    for element in root.findall("Part"):
        try:
            wanted.append((int(element.findtext("PartNumber") or ""), (element.findtext("ETag") or "").strip('" ')))
        except ValueError:
            raise S3Error("MalformedXML", "Every Part needs a PartNumber.") from None
    if not wanted:
        raise S3Error("MalformedXML", "The upload must name at least one part.")
    if [n for n, _ in wanted] != sorted({n for n, _ in wanted}):
        raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order.")
    index = await store.index(caller, bucket)
    record = await _upload_record(store, caller, index, upload_id, key)
    landed = parts_of(index, upload_id)
    chosen = []
    for position, (number, etag) in enumerate(wanted):
        part = landed.get(number)
        if part is None or (etag and etag != part.etag):
            raise S3Error("InvalidPart", f"Part {number} was not uploaded, or its ETag does not match.")
        if position < len(wanted) - 1 and part.size < MIN_PART_BYTES:
            raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.")
        chosen.append(part)
    etag = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen)).hexdigest() + f"-{len(chosen)}"
    parts = [(p.key, p.size) for p in chosen]
    obj = S3Object(key, sum(p.size for p in chosen), etag, now(), record["type"], record["meta"], parts)
    await replace(store, caller, bucket, obj)
    keep = {p.key for p in chosen}
    await _evict_upload(store, caller, index, upload_id, record["fabric_key"], keep)
    entries = [("Location", f"/{bucket.name}/{key}"), ("Bucket", bucket.name), ("Key", key), ("ETag", quoted(etag))]
    return xml_response(document("CompleteMultipartUploadResult", entries))


async def _evict_upload(
    store: Store, caller: Caller, index: Index, upload_id: str, record_key: str, keep: set[str]
) -> None:
    """Evict an upload's record, its markers and its parts not in ``keep``."""
    await store.evict(caller, record_key)
    for info in index.parts.get(upload_id, []):
        if info.key not in keep:
            await store.evict(caller, info.key)


async def abort_upload(store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str) -> web.Response:
    """AbortMultipartUpload: evict the upload's record and parts."""
    bucket = await store.writable(caller, bucket_name)
    upload_id = _upload_id(request)
    index = await store.index(caller, bucket)
    record = await _upload_record(store, caller, index, upload_id, key)
    await _evict_upload(store, caller, index, upload_id, record["fabric_key"], set())
    return web.Response(status=204)


async def list_parts(store: Store, request: web.Request, caller: Caller, bucket_name: str, key: str) -> web.Response:
    """ListParts (max-parts, part-number-marker)."""
    bucket = await store.bucket(caller, bucket_name)
    upload_id = _upload_id(request)
    index = await store.index(caller, bucket)
    await _upload_record(store, caller, index, upload_id, key)
    try:
        marker = int(request.query.get("part-number-marker", "0"))
        max_parts = min(int(request.query.get("max-parts", "1000")), 1000)
    except ValueError:
        raise invalid_argument("part-number-marker and max-parts must be numbers.") from None
    parts = [p for n, p in sorted(parts_of(index, upload_id).items()) if n > marker]
    page, truncated = parts[:max_parts], len(parts) > max_parts
    entries: list[tuple[str, Any]] = [
        ("Bucket", bucket.name),
        ("Key", key),
        ("UploadId", upload_id),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", page[-1].number if page else marker),
        ("MaxParts", max_parts),
        ("IsTruncated", truncated),
        ("StorageClass", "STANDARD"),
    ]
    entries += [
        (
            "Part",
            [
                ("PartNumber", p.number),
                ("LastModified", iso8601(p.modified)),
                ("ETag", quoted(p.etag)),
                ("Size", p.size),
            ],
        )
        for p in page
    ]
    return xml_response(document("ListPartsResult", entries))


async def list_uploads(store: Store, request: web.Request, caller: Caller, bucket_name: str) -> web.Response:
    """ListMultipartUploads (prefix; every upload in one page)."""
    bucket = await store.bucket(caller, bucket_name)
    prefix = request.query.get("prefix", "")
    index = await store.index(caller, bucket)
    ids = sorted(index.uploads)
    try:
        raws = await store.client.get_batch([index.uploads[i].key for i in ids], caller.token) if ids else []
    except DynoStoreError as exc:
        raise from_fabric(exc) from None
    uploads = []
    for upload_id, raw in zip(ids, raws, strict=True):
        if raw is None:
            continue
        record = json.loads(raw)
        if record["key"].startswith(prefix):
            uploads.append((record["key"], upload_id, record["initiated"]))
    entries: list[tuple[str, Any]] = [("Bucket", bucket.name), ("Prefix", prefix), ("MaxUploads", 1000)]
    entries.append(("IsTruncated", False))
    entries += [
        ("Upload", [("Key", k), ("UploadId", u), ("StorageClass", "STANDARD"), ("Initiated", iso8601(t))])
        for k, u, t in sorted(uploads)
    ]
    return xml_response(document("ListMultipartUploadsResult", entries))
