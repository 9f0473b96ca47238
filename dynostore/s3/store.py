"""Buckets and objects of S3 mapped onto DynoStore catalogs and objects, through the SDK (:class:`AsyncClient`).

* A bucket is a catalog of the caller's (``data``), or a catalog another
  user shared with the caller, named ``owner.catalog`` (read-only).
* An S3 object is one or more fabric objects holding its bytes (named
  ``.dynostore-s3/data/KEY``, or one per multipart part) and a small *meta*
  object named ``.dynostore-s3/meta/KEY`` in the same catalog: JSON with its
  parts' keys, size, ETag, Content-Type, user metadata and time. Its bytes
  are visible only through a committed meta object, so a put that failed
  after its bytes landed shows nothing; an overwrite or delete of the key
  evicts such leftovers once they are older than the door's
  ``leftover_grace``. A plain object of the catalog (put with the SDK, named
  KEY) is visible as KEY too (so are the data objects of doors before
  2026-12-04, which were named KEY).
* Multipart uploads keep a record ``.dynostore-s3/uploads/ID`` and their parts
  as objects ``.dynostore-s3/parts/ID/NUMBER/MD5``.

Names under ``.dynostore-s3/`` are reserved: S3 keys may not start with it.
Finding a key lists its catalog (one ``List`` call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Set
from dataclasses import dataclass, field
from typing import Any

from dynostore.client.aio import AsyncClient
from dynostore.client.pipeline import ObjectInfo, SegmentSource
from dynostore.errors import AlreadyExists, DynoStoreError, NotFound, PermissionDenied
from dynostore.s3.auth import Caller
from dynostore.s3.errors import S3Error, access_denied, from_fabric, no_such_bucket, no_such_key

RESERVED = ".dynostore-s3/"
META = RESERVED + "meta/"
DATA = RESERVED + "data/"
PARTS = RESERVED + "parts/"
UPLOADS = RESERVED + "uploads/"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MAX_KEY_BYTES = 1024
MAX_META_BYTES = 2048
# Seconds a door remembers that a bucket exists and whose catalog it is (another door's
# DeleteBucket, or a share revoked, shows here at most this late).
BUCKET_CACHE_SECONDS = 2.0
# Meta-object keys a door remembers, to find a key's current version without listing its bucket.
MAX_REMEMBERED = 100_000
# Seconds a data object no version names must have existed before an overwrite or delete of its key
# evicts it: a put of another door commits its meta object right after its data object, far sooner.
LEFTOVER_GRACE = 600.0


@dataclass(frozen=True)
class Bucket:
    """A bucket as the caller sees it: its S3 name, the catalog behind it, and whether the caller may write."""

    name: str
    catalog: str
    owner: str
    writable: bool
    created: float = 0.0


@dataclass
class S3Object:
    """What S3 knows of an object."""

    key: str
    size: int
    etag: str
    modified: float
    content_type: str = "binary/octet-stream"
    meta: dict[str, str] = field(default_factory=dict)
    parts: list[tuple[str, int]] = field(default_factory=list)
    # The fabric objects that make up this version (its meta object and parts).
    fabric_keys: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        """The meta object's bytes."""
        record = {
            "v": 1,
            "size": self.size,
            "etag": self.etag,
            "modified": self.modified,
            "type": self.content_type,
            "meta": self.meta,
            "parts": self.parts,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, key: str, raw: bytes, meta_key: str) -> S3Object:
        """Parse a meta object's bytes."""
        record = json.loads(raw)
        parts = [(str(p[0]), int(p[1])) for p in record["parts"]]
        return cls(
            key,
            int(record["size"]),
            str(record["etag"]),
            float(record["modified"]),
            str(record["type"]),
            dict(record["meta"]),
            parts,
            [meta_key] + [p[0] for p in parts],
        )


@dataclass
class Index:
    """One listing of a bucket's catalog, sorted into S3 objects, parts and uploads (newest first per name)."""

    metas: dict[str, list[ObjectInfo]] = field(default_factory=dict)
    plain: dict[str, list[ObjectInfo]] = field(default_factory=dict)
    # The data objects of single puts and copies, by S3 key (visible only through a meta object).
    data: dict[str, list[ObjectInfo]] = field(default_factory=dict)
    parts: dict[str, list[ObjectInfo]] = field(default_factory=dict)
    uploads: dict[str, ObjectInfo] = field(default_factory=dict)

    @classmethod
    def of(cls, infos: list[ObjectInfo]) -> Index:
        """Sort a catalog listing."""
        index = cls()
        for info in sorted(infos, key=lambda i: i.created, reverse=True):
            name = info.name or info.key
            if name.startswith(META):
                index.metas.setdefault(name[len(META) :], []).append(info)
            elif name.startswith(DATA):
                index.data.setdefault(name[len(DATA) :], []).append(info)
            elif name.startswith(PARTS):
                index.parts.setdefault(name[len(PARTS) :].split("/", 1)[0], []).append(info)
            elif name.startswith(UPLOADS):
                index.uploads[name[len(UPLOADS) :]] = info
            else:
                index.plain.setdefault(name, []).append(info)
        return index

    def keys(self) -> dict[str, ObjectInfo]:
        """Every visible S3 key, with the fabric object that stands for it (meta, else plain)."""
        visible = {name: infos[0] for name, infos in self.plain.items()}
        visible.update({name: infos[0] for name, infos in self.metas.items()})
        return visible


def check_bucket_name(name: str) -> str:
    """A valid bucket name.

    Raises:
        S3Error: InvalidBucketName.
    """
    if not _BUCKET.fullmatch(name) or ".." in name:
        raise S3Error("InvalidBucketName", f"The bucket name {name[:80]!r} is not valid.")
    return name


def check_key(key: str) -> str:
    """A valid object key (not in the reserved space).

    Raises:
        S3Error: KeyTooLongError or InvalidArgument.
    """
    if not key:
        raise S3Error("InvalidArgument", "The object key may not be empty.")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long.")
    if key.startswith(RESERVED):
        raise S3Error("InvalidArgument", f"Keys under {RESERVED!r} are reserved by DynoStore.")
    if any(not ch.isprintable() for ch in key):
        raise S3Error("InvalidArgument", "Object keys may not contain control characters here.")
    return key


def plain_object(key: str, info: ObjectInfo) -> S3Object:
    """An object put with the SDK: no MD5 is known, so its ETag is its fabric key (in S3's multipart form)."""
    return S3Object(
        key, info.size, f"{info.key}-1", info.created, parts=[(info.key, info.size)], fabric_keys=[info.key]
    )


class Store:
    """S3's buckets and objects over one :class:`AsyncClient` (every call made with the caller's token)."""

    def __init__(self, client: AsyncClient, leftover_grace: float = LEFTOVER_GRACE) -> None:
        """Serve buckets and objects through ``client``; see :data:`LEFTOVER_GRACE`."""
        self.client = client
        self.leftover_grace = leftover_grace
        # (catalog, S3 key) -> the fabric key of its meta object when last seen (checked at every use).
        self._metas: dict[tuple[str, str], str] = {}
        # (token, bucket name) -> (when looked up, the bucket): see BUCKET_CACHE_SECONDS.
        self._buckets: dict[tuple[str, str], tuple[float, Bucket]] = {}

    # buckets ------------------------------------------------------------------

    async def buckets(self, caller: Caller) -> list[Bucket]:
        """The caller's buckets: its catalogs with bucket names, and those shared with it as ``owner.name``."""
        found = []
        for info in await self.client.list_catalogs(caller.token):
            own = info.owner == caller.user
            name = info.name if own else f"{info.owner}.{info.name}"
            if _BUCKET.fullmatch(name):
                found.append(
                    Bucket(name, info.name if own else f"{info.owner}/{info.name}", info.owner, own, info.created)
                )
        return sorted(found, key=lambda b: b.name)

    async def bucket(self, caller: Caller, name: str) -> Bucket:
        """The bucket ``name``: the caller's catalog of that name, else ``owner.catalog`` shared with it.

        Raises:
            S3Error: NoSuchBucket, or AccessDenied for another user's catalog not shared with the caller.
        """
        check_bucket_name(name)
        cached = self._buckets.get((caller.token, name))
        if cached is not None and time.monotonic() - cached[0] < BUCKET_CACHE_SECONDS:
            return cached[1]
        bucket = await self._look_up(caller, name)
        if len(self._buckets) > 10_000:
            self._buckets.clear()
        self._buckets[(caller.token, name)] = (time.monotonic(), bucket)
        return bucket

    def forget_bucket(self, name: str) -> None:
        """Drop what this door remembers of bucket ``name`` (it was created or deleted here)."""
        for cached in [k for k in self._buckets if k[1] == name]:
            del self._buckets[cached]

    async def _look_up(self, caller: Caller, name: str) -> Bucket:
        try:
            info = await self.client.describe_catalog(name, caller.token)
            return Bucket(name, name, caller.user, True, info.created)
        except NotFound:
            pass
        except DynoStoreError as exc:
            raise from_fabric(exc) from None
        owner, dot, catalog = name.partition(".")
        if dot and catalog:
            try:
                info = await self.client.describe_catalog(f"{owner}/{catalog}", caller.token)
            except NotFound:
                raise no_such_bucket(name) from None
            except PermissionDenied:
                raise access_denied(
                    f"The bucket {name!r} belongs to another user and is not shared with you."
                ) from None
            except DynoStoreError as exc:
                if "not a valid" in str(exc):
                    raise no_such_bucket(name) from None
                raise from_fabric(exc) from None
            return Bucket(name, f"{owner}/{catalog}", owner, False, info.created)
        raise no_such_bucket(name)

    async def writable(self, caller: Caller, name: str) -> Bucket:
        """The bucket ``name``, which the caller must own.

        Raises:
            S3Error: NoSuchBucket, or AccessDenied for a bucket shared read-only.
        """
        bucket = await self.bucket(caller, name)
        if not bucket.writable:
            raise access_denied(f"The bucket {name!r} is shared with you read-only.")
        return bucket

    async def create_bucket(self, caller: Caller, name: str) -> None:
        """Create the catalog behind a new bucket.

        Raises:
            S3Error: InvalidBucketName, BucketAlreadyOwnedByYou.
        """
        check_bucket_name(name)
        self.forget_bucket(name)
        try:
            await self.client.create_catalog(name, caller.token)
        except AlreadyExists:
            raise S3Error(
                "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded.", 409
            ) from None
        except DynoStoreError as exc:
            raise from_fabric(exc) from None

    async def delete_bucket(self, caller: Caller, name: str) -> None:
        """Delete an empty bucket (leftovers of failed S3 calls go with it).

        Raises:
            S3Error: NoSuchBucket, AccessDenied, BucketNotEmpty.
        """
        bucket = await self.writable(caller, name)
        index = await self.index(caller, bucket)
        if index.keys() or index.uploads:
            raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty.", 409)
        self.forget_bucket(name)
        try:
            await self.client.delete_catalog(bucket.catalog, caller.token, force=True)
        except DynoStoreError as exc:
            raise from_fabric(exc) from None

    # objects ------------------------------------------------------------------

    async def index(self, caller: Caller, bucket: Bucket) -> Index:
        """List the bucket's catalog once."""
        try:
            return Index.of(await self.client.list(bucket.catalog, caller.token))
        except NotFound:
            raise no_such_bucket(bucket.name) from None
        except DynoStoreError as exc:
            raise from_fabric(exc) from None

    async def key_index(self, caller: Caller, bucket: Bucket, key: str) -> Index:
        """An :class:`Index` of the fabric objects of one S3 key only (its meta, data and plain objects)."""
        return await self.named_index(caller, bucket, META + key, key, DATA + key)

    async def named_index(self, caller: Caller, bucket: Bucket, *names: str) -> Index:
        """An :class:`Index` of the bucket's fabric objects with these names only.

        Name-filtered listings, which the gateway answers from the catalog's
        name entries: the cost does not grow with the bucket.
        """
        try:
            found = await asyncio.gather(*(self.client.list(bucket.catalog, caller.token, name=n) for n in names))
        except NotFound:
            raise no_such_bucket(bucket.name) from None
        except DynoStoreError as exc:
            raise from_fabric(exc) from None
        return Index.of([info for infos in found for info in infos])

    async def versions(self, caller: Caller, index: Index, key: str) -> list[S3Object]:
        """Every stored version of ``key`` in ``index``, newest first (more than one only after a race or crash)."""
        found = []
        for info in index.metas.get(key, []):
            try:
                raw = await self.client.get(info.key, caller.token)
            except NotFound:
                continue  # evicted since the listing: a newer version replaced it
            except DynoStoreError as exc:
                raise from_fabric(exc) from None
            found.append(S3Object.from_json(key, raw, info.key))
        found += [plain_object(key, info) for info in index.plain.get(key, [])]
        return found

    def leftovers(self, index: Index, key: str, versions: list[S3Object]) -> list[S3Object]:
        """The data objects of ``key`` in ``index`` that none of ``versions`` names, older than the grace.

        What a put that failed after its bytes landed left (or a delete that
        did not finish), as versions of their own, for :meth:`evict_versions`.
        """
        named = {k for version in versions for k in version.fabric_keys}
        oldest = time.time() - self.leftover_grace
        return [
            S3Object(key, info.size, "", info.created, fabric_keys=[info.key])
            for info in index.data.get(key, [])
            if info.key not in named and info.created < oldest
        ]

    async def evict_key(self, caller: Caller, index: Index, key: str) -> None:
        """Evict every version of ``key`` in ``index`` and its :meth:`leftovers` (DeleteObject)."""
        versions = await self.versions(caller, index, key)
        await self.evict_versions(caller, versions + self.leftovers(index, key, versions))

    async def previous(self, caller: Caller, bucket: Bucket, key: str) -> list[S3Object]:
        """The S3 versions of ``key`` that a new one replaces (those with a meta object), newest first.

        When it lists an existing key (a door that does not remember its meta object), also the key's
        :meth:`leftovers`; those of a key put anew wait for its next overwrite or delete.
        """
        remembered = self._metas.get((bucket.catalog, key))
        if remembered is not None:
            try:
                return [S3Object.from_json(key, await self.client.get(remembered, caller.token), remembered)]
            except NotFound:
                self._metas.pop((bucket.catalog, key), None)
            except DynoStoreError as exc:
                raise from_fabric(exc) from None
        versions = await self.versions(caller, await self.named_index(caller, bucket, META + key), key)
        if not versions:
            return []  # a new key: not worth a second listing for what a failed put may have left
        data = await self.named_index(caller, bucket, DATA + key)
        return versions + self.leftovers(data, key, versions)

    async def head(self, caller: Caller, bucket: Bucket, key: str) -> S3Object:
        """The newest version of ``key``.

        Raises:
            S3Error: NoSuchKey.
        """
        remembered = self._metas.get((bucket.catalog, key))
        if remembered is not None:
            # Meta objects replace each other by name atomically, so one that still
            # exists is the key's current version: no listing needed.
            try:
                return S3Object.from_json(key, await self.client.get(remembered, caller.token), remembered)
            except NotFound:
                self._metas.pop((bucket.catalog, key), None)
            except DynoStoreError as exc:
                raise from_fabric(exc) from None
        for _ in range(3):
            index = await self.key_index(caller, bucket, key)
            versions = await self.versions(caller, index, key)
            if versions:
                if key in index.metas and versions[0].fabric_keys[0] == index.metas[key][0].key:
                    self._remember(bucket, key, versions[0].fabric_keys[0])
                return versions[0]
            if key not in index.metas:
                break
        raise no_such_key(key)

    def _remember(self, bucket: Bucket, key: str, meta_key: str) -> None:
        if len(self._metas) > MAX_REMEMBERED:
            self._metas.clear()
        self._metas[(bucket.catalog, key)] = meta_key

    async def many(self, caller: Caller, bucket: Bucket, index: Index, keys: list[str]) -> dict[str, S3Object]:
        """The newest version of each of ``keys`` (in ``index``), read with one batch of gets.

        A key whose meta object went between the listing and the gets (an
        overwrite replaced it) is looked up again, so a listing during
        overwrites never leaves the key out; one deleted meanwhile is left out.
        """
        visible = index.keys()
        metas = [k for k in keys if k in index.metas]
        try:
            raws = await self.client.get_batch([visible[k].key for k in metas], caller.token) if metas else []
        except DynoStoreError as exc:
            raise from_fabric(exc) from None
        found = {}
        for key in keys:
            if key in index.metas:
                raw = raws[metas.index(key)]
                if raw is not None:
                    found[key] = S3Object.from_json(key, raw, visible[key].key)
                    continue
                try:
                    found[key] = await self.head(caller, bucket, key)
                except S3Error as exc:
                    if exc.code != "NoSuchKey":  # deleted since the listing: left out
                        raise
                continue
            if key in index.plain:
                found[key] = plain_object(key, index.plain[key][0])
        return found

    async def store_part(self, caller: Caller, bucket: Bucket, name: str, source: SegmentSource, size: int) -> str:
        """Stream ``size`` bytes into a new fabric object named ``name`` in the bucket; its key."""
        try:
            return await self.client.put_stream(source, size, caller.token, bucket.catalog, name=name)
        except DynoStoreError as exc:
            raise from_fabric(exc) from None

    async def commit(self, caller: Caller, bucket: Bucket, obj: S3Object, old: list[S3Object]) -> None:
        """Make ``obj`` the current version of its key, then evict the ``old`` versions' parts.

        The new meta object replaces the old one by name in one etcd
        transaction (``put(replace=True)``): readers find the old version or
        the new one, never neither, and never two. A new key's put replaces by
        name too, so when two doors create one key at once the later commit
        replaces the earlier one's meta object (whose data object is then a
        leftover) rather than leaving two versions, each door serving its own.
        """
        try:
            meta_key = await self.client.put(
                obj.to_json(), caller.token, bucket.catalog, name=META + obj.key, replace=True
            )
        except DynoStoreError as exc:
            raise from_fabric(exc) from None
        obj.fabric_keys = [meta_key] + [p[0] for p in obj.parts]
        self._remember(bucket, obj.key, meta_key)
        await self.evict_versions(caller, old, keep=set(obj.fabric_keys))

    async def evict_versions(self, caller: Caller, versions: list[S3Object], keep: Set[str] = frozenset()) -> None:
        """Evict the fabric objects of ``versions`` (meta objects first), except those in ``keep``."""
        done = set(keep)
        for version in versions:
            for key in version.fabric_keys:
                if key not in done:
                    done.add(key)
                    await self.evict(caller, key)

    async def evict(self, caller: Caller, key: str) -> None:
        """Evict one fabric object (gone already is fine)."""
        try:
            await self.client.evict(key, caller.token)
        except DynoStoreError as exc:
            raise from_fabric(exc) from None

    async def read(self, caller: Caller, obj: S3Object, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of ``obj``, streamed part by part, segment by segment.

        Raises:
            S3Error: NoSuchKey when a part is gone (the version was replaced or deleted meanwhile).
        """
        try:
            async for piece in self._read(caller, obj, start, end):
                yield piece
        except NotFound:
            raise no_such_key(obj.key) from None
        except DynoStoreError as exc:
            raise from_fabric(exc) from None

    async def _read(self, caller: Caller, obj: S3Object, start: int, end: int) -> AsyncIterator[bytes]:
        offset = 0
        for part_key, part_size in obj.parts:
            part_end = offset + part_size
            if part_end > start and offset < end:
                skip = max(start - offset, 0)
                position = offset + skip
                async with contextlib.aclosing(self.client.get_stream(part_key, caller.token, skip)) as stream:
                    async for segment in stream:
                        piece_start, piece_end = max(start - position, 0), min(end - position, len(segment))
                        if piece_start < piece_end:
                            yield segment[piece_start:piece_end] if piece_end - piece_start < len(segment) else segment
                        position += len(segment)
                        if position >= end:
                            break
            offset = part_end
            if offset >= end:
                return


def now() -> float:
    """The time an S3 object is stamped with."""
    return time.time()


def user_metadata(headers: Any) -> dict[str, str]:
    """The ``x-amz-meta-*`` headers of a request, names lower-cased without the prefix.

    Raises:
        S3Error: MetadataTooLarge.
    """
    meta = {name.lower()[11:]: value for name, value in headers.items() if name.lower().startswith("x-amz-meta-")}
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_META_BYTES:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.")
    return meta
