"""Bucket operations: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation."""

from __future__ import annotations

from aiohttp import web

from dynostore.s3.auth import Body, Caller
from dynostore.s3.errors import S3Error
from dynostore.s3.objects import xml_response
from dynostore.s3.store import Store
from dynostore.s3.xml import NAMESPACE, document, iso8601, parse


async def list_buckets(store: Store, caller: Caller) -> web.Response:
    """ListBuckets: the caller's catalogs, and those shared with it as ``owner.catalog``."""
    buckets = await store.buckets(caller)
    entries = [
        ("Owner", [("ID", caller.user), ("DisplayName", caller.user)]),
        ("Buckets", [("Bucket", [("Name", b.name), ("CreationDate", iso8601(b.created))]) for b in buckets]),
    ]
    return xml_response(document("ListAllMyBucketsResult", entries))


async def create_bucket(store: Store, request: web.Request, caller: Caller, name: str, region: str) -> web.Response:
    """CreateBucket (a LocationConstraint, if sent, must be this door's region)."""
    raw = await Body.of(request, caller).read_all(64 * 1024)
    if raw.strip():
        constraint = parse(raw).findtext("LocationConstraint")
        if constraint and constraint != region:
            raise S3Error("IllegalLocationConstraintException", f"This endpoint serves the region {region!r} only.")
    await store.create_bucket(caller, name)
    return web.Response(status=200, headers={"Location": f"/{name}"})


async def delete_bucket(store: Store, caller: Caller, name: str) -> web.Response:
    """DeleteBucket: only an empty one."""
    await store.delete_bucket(caller, name)
    return web.Response(status=204)


async def head_bucket(store: Store, caller: Caller, name: str, region: str) -> web.Response:
    """HeadBucket: 200 when the bucket exists and the caller may read it."""
    await store.bucket(caller, name)
    return web.Response(status=200, headers={"x-amz-bucket-region": region})


async def bucket_location(store: Store, caller: Caller, name: str, region: str) -> web.Response:
    """GetBucketLocation: this door's region (empty for us-east-1, as S3 answers)."""
    await store.bucket(caller, name)
    text = "" if region == "us-east-1" else region
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{NAMESPACE}">{text}</LocationConstraint>'
    )
    return xml_response(body.encode())


async def bucket_versioning(store: Store, caller: Caller, name: str) -> web.Response:
    """GetBucketVersioning: never enabled (an empty configuration, as S3 answers for such buckets)."""
    await store.bucket(caller, name)
    return xml_response(document("VersioningConfiguration", []))
