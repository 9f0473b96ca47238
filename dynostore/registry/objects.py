"""Object records: read, repair, evict and expire them; catalog indexes (commits are in :mod:`.commits`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from dynostore import validation
from dynostore.errors import (
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from dynostore.registry import keys
from dynostore.registry.base import CAS_ATTEMPTS, COMMIT_GROUP, MAX_TXN_OPS, RegistryBase, etcd_errors
from dynostore.registry.records import ObjectRecord, dumps, entry_expired


class ObjectCalls(RegistryBase):
    """Object records and the catalog index entries committed with them."""

    def _put_record_ops(self, record: ObjectRecord, replaces: list[str] | None = None) -> list[Any]:
        """The puts that make ``record`` visible: record, index entry, name entry, inline bytes, version pointer.

        ``replaces``: keys of the objects this one replaces, kept in its index
        entry so that the catalog's events call the change ``replace``.
        """
        entry = record.index_entry() | ({"replaces": replaces} if replaces else {})
        ops = [
            self._tx.put(keys.obj(record.key), record.to_json()),
            self._tx.put(keys.index_entry(record.owner, record.catalog, record.key), dumps(entry)),
        ]
        if record.name:
            ops.append(self._tx.put(keys.name_entry(record.owner, record.catalog, record.name, record.key), b""))
        if record.inline:
            ops.append(self._tx.put(keys.inline_data(record.key), record.data))
        if record.version:
            ops.append(self._tx.put(keys.version(record.version), record.key.encode()))
        return ops

    @staticmethod
    def _record_keys(record: ObjectRecord) -> list[bytes]:
        """The etcd keys :meth:`_put_record_ops` writes for ``record``."""
        written = [keys.obj(record.key), keys.index_entry(record.owner, record.catalog, record.key)]
        if record.name:
            written.append(keys.name_entry(record.owner, record.catalog, record.name, record.key))
        if record.inline:
            written.append(keys.inline_data(record.key))
        if record.version:
            written.append(keys.version(record.version))
        return written

    @etcd_errors
    async def referenced(self, chunks: list[tuple[str, int]], container_id: str) -> list[bool]:
        """For each ``(key, index)``: whether a record lists that chunk as stored on ``container_id``.

        ``key`` is the key a chunk is stored under: an object's own, or the
        version of the object that replaced it by key (see :meth:`commit_replacing`).
        """
        wanted = list(dict.fromkeys(key for key, _ in chunks))
        records = await self._records_by_chunk_key(wanted)
        return [
            (record := records[key]) is not None
            and index < len(record.chunks)
            and record.chunks[index] == (container_id, True)
            for key, index in chunks
        ]

    async def _records_by_chunk_key(self, chunk_keys: list[str]) -> dict[str, ObjectRecord | None]:
        """The record whose current version keeps its chunks under each key (None: no record does)."""
        found = dict(zip(chunk_keys, await self._read_objects(chunk_keys, with_data=False), strict=True))
        other = [k for k, record in found.items() if record is None or record.chunk_key != k]
        for start in range(0, len(other), COMMIT_GROUP):
            group = other[start : start + COMMIT_GROUP]
            _, replies = await self.etcd.transaction(
                compare=[], success=[self._tx.get(keys.version(k)) for k in group], failure=[]
            )
            owners = {k: reply[0][0].decode() for k, reply in zip(group, replies, strict=True) if reply}
            owning = list(dict.fromkeys(owners.values()))
            by_key = dict(zip(owning, await self._read_objects(owning, with_data=False), strict=True))
            for k in group:
                record = by_key.get(owners.get(k, ""))
                found[k] = record if record is not None and record.chunk_key == k else None
        return found

    async def get_objects(self, object_keys: list[str], *, fresh: bool = False) -> list[ObjectRecord | None]:
        """Records of committed objects to read (None where a key has none), inline bytes included.

        Served from the record cache where it can be (see :mod:`dynostore.registry.cache`;
        ``fresh``: never), the rest read from etcd in few round trips and cached. The
        records are shared with the cache: do not change them.
        """
        if fresh:
            for key in object_keys:
                self._objects.forget(key)
        found = [self._objects.get(k) for k in object_keys]
        missed = [k for k, record in zip(object_keys, found, strict=True) if record is None]
        if missed:
            read = iter(await self._read_objects(missed, with_data=True, cache=True))
            found = [record or next(read) for record in found]
        return found

    @etcd_errors
    async def _read_objects(
        self, object_keys: list[str], *, with_data: bool, cache: bool = False
    ) -> list[ObjectRecord | None]:
        """Records of committed objects read from etcd (None where a key has none), in few round trips.

        With ``with_data``, inline objects come with their bytes (``record.data``),
        read in the same transaction. With ``cache``, the records found are cached.
        """
        per_key = 2 if with_data else 1
        found: list[ObjectRecord | None] = []
        for start in range(0, len(object_keys), COMMIT_GROUP):
            group = object_keys[start : start + COMMIT_GROUP]
            ops = []
            for k in group:
                ops.append(self._tx.get(keys.obj(k)))
                if with_data:
                    ops.append(self._tx.get(keys.inline_data(k)))
            _, replies = await self.etcd.transaction(compare=[], success=ops, failure=[])
            for key, position in zip(group, range(0, len(replies), per_key), strict=True):
                reply = replies[position]
                record = ObjectRecord.from_json(reply[0][0]) if reply else None
                if record is not None and record.inline and with_data:
                    data_reply = replies[position + 1]
                    record.data = data_reply[0][0] if data_reply else b""
                if record is not None and cache:
                    self._objects.put(key, record, reply[0][1].header.revision)
                found.append(record)
        return found

    @etcd_errors
    async def get_object(self, key: str) -> ObjectRecord:
        """The record of a committed object.

        Raises:
            NotFound: no object has this key.
        """
        found = await self.etcd.get(keys.obj(key))
        if found is None:
            raise NotFound(f"No object has the key {key}.")
        return ObjectRecord.from_json(found.value)

    async def object_records(self) -> AsyncIterator[ObjectRecord]:
        """Every object record, read one shard (1/256 of the key space) at a time."""
        for shard in range(validation.KEY_SHARDS):
            for record in await self.shard_records(shard):
                yield record

    @etcd_errors
    async def shard_records(self, shard: int) -> list[ObjectRecord]:
        """The records of the objects whose keys start with the two hex digits of ``shard``."""
        return [ObjectRecord.from_json(kv.value) for kv in await self.etcd.get_prefix(keys.obj(f"{shard:02x}"))]

    @etcd_errors
    async def get_object_revision(self, key: str) -> tuple[ObjectRecord, int]:
        """The record of a committed object and the etcd revision it was last changed at.

        Raises:
            NotFound: no object has this key.
        """
        found = await self.etcd.get(keys.obj(key))
        if found is None:
            raise NotFound(f"No object has the key {key}.")
        return ObjectRecord.from_json(found.value), found.mod_revision

    @etcd_errors
    async def replace_chunks(self, key: str, revision: int, replacements: dict[int, str]) -> None:
        """Record that chunk ``index`` of an object is now stored on container ``replacements[index]``.

        Raises:
            NotFound: the object is gone.
            FailedPrecondition: the object changed since ``revision``.
        """
        record, current = await self.get_object_revision(key)
        if current != revision:
            raise FailedPrecondition(f"Object {key} changed while it was repaired; repair it again.")
        for index, container_id in replacements.items():
            record.chunks[index] = (container_id, True)
        ok, replies = await self.etcd.transaction(
            compare=[self._tx.mod(keys.obj(key)) == revision],
            success=[self._tx.put(keys.obj(key), record.to_json())],
            failure=[],
        )
        if not ok:
            raise FailedPrecondition(f"Object {key} changed while it was repaired; repair it again.")
        self._objects.changed(key, replies[0].response_put.header.revision)

    @etcd_errors
    async def mark_missing(self, key: str, index: int, container_id: str) -> bool:
        """Record chunk ``index`` of an object as missing if ``container_id`` holds it; whether it did."""
        for _ in range(5):  # a concurrent change to the record: read it again
            owner = (await self._records_by_chunk_key([key]))[key]
            found = await self.etcd.get(keys.obj(owner.key)) if owner is not None else None
            if found is None:
                return False
            record = ObjectRecord.from_json(found.value)
            if record.chunk_key != key or index >= len(record.chunks) or record.chunks[index] != (container_id, True):
                return False
            record.chunks[index] = (container_id, False)
            ok, replies = await self.etcd.transaction(
                compare=[self._tx.mod(keys.obj(record.key)) == found.mod_revision],
                success=[self._tx.put(keys.obj(record.key), record.to_json())],
                failure=[],
            )
            if ok:
                self._objects.changed(record.key, replies[0].response_put.header.revision)
                return True
        raise Unavailable(f"Object {key} kept changing; report the damage again.")

    @etcd_errors
    async def delete_object(self, key: str) -> ObjectRecord | None:
        """Remove an object's record and index entry atomically, out of its owner's usage; return the record."""
        while True:
            found = await self.etcd.get(keys.obj(key))
            if found is None:
                return None
            record = ObjectRecord.from_json(found.value)
            if await self._delete_record(record, found.mod_revision):
                return record

    @etcd_errors
    async def delete_objects(self, object_keys: Sequence[str]) -> list[ObjectRecord | None]:
        """Remove several objects (records, index entries, usage) in few transactions; the records, or None.

        Objects go ``MAX_TXN_OPS // 8`` to a transaction, each of which
        removes all its objects or none, and is tried again when one of
        them or an owner's usage counter changed meanwhile (so concurrent
        evicts of one user do not each fight over that counter).

        Raises:
            Unavailable: the records or usage counters kept changing.
        """
        removed: list[ObjectRecord | None] = []
        step = MAX_TXN_OPS // 8
        for start in range(0, len(object_keys), step):
            removed += await self._delete_group(list(object_keys[start : start + step]))
        return removed

    async def _records_read(self, object_keys: Sequence[str]) -> list[tuple[ObjectRecord, int] | None]:
        """The records (and revisions) of ``object_keys`` read from etcd in one transaction, not the cache."""
        _, replies = await self.etcd.transaction(
            compare=[], success=[self._tx.get(keys.obj(k)) for k in object_keys], failure=[]
        )
        return [(ObjectRecord.from_json(bytes(r[0][0])), r[0][1].mod_revision) if r else None for r in replies]

    async def _delete_group(self, object_keys: list[str]) -> list[ObjectRecord | None]:
        for _ in range(CAS_ATTEMPTS):
            found = await self._records_read(object_keys)
            live = [f for f in found if f is not None]
            if not live:
                return [None] * len(object_keys)
            usage_keys = sorted({keys.usage(record.owner) for record, _ in live})
            if missing := [k for k in usage_keys if k not in self._seen]:
                await self._read_again(missing)
            usages = {record.owner: self._usage_seen(record.owner) for record, _ in live}
            for record, _ in live:
                usages[record.owner] = usages[record.owner].add(-record.size, -1)
            ok, answers = await self.etcd.transaction(
                compare=[
                    *(self._tx.mod(keys.obj(record.key)) == revision for record, revision in live),
                    *(self._unchanged(k) for k in usage_keys),
                ],
                success=[
                    *(self._tx.delete(k) for record, _ in live for k in self._record_keys(record)),
                    *(self._tx.put(keys.usage(owner), usage.to_json()) for owner, usage in usages.items()),
                ],
                failure=[],
            )
            if ok:
                deleted = answers[0].response_delete_range.header.revision
                for owner, usage in usages.items():
                    self._seen[keys.usage(owner)] = (usage.to_json(), deleted)
                for record, _ in live:
                    self._objects.changed(record.key, deleted)
                return [f[0] if f is not None else None for f in found]
            await self._read_again(usage_keys)
        raise Unavailable(f"Objects kept changing while {len(object_keys)} of them were evicted; evict them again.")

    @etcd_errors
    async def expire_object(self, key: str, now: float) -> ObjectRecord | None:
        """Evict an object whose lifetime is over at ``now``; the record, or None if it is gone or not expired.

        Its index entry is first marked expired, then deleted with the
        record, so that the catalog's events call this eviction ``expire``.
        """
        found = await self.etcd.get(keys.obj(key))
        if found is None:
            return None
        record = ObjectRecord.from_json(found.value)
        if not record.expired(now):
            return None
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.mod(keys.obj(key)) == found.mod_revision],
            success=[
                self._tx.put(
                    keys.index_entry(record.owner, record.catalog, key),
                    dumps({**record.index_entry(), "expired": True}),
                )
            ],
            failure=[],
        )
        return record if ok and await self._delete_record(record, found.mod_revision) else None

    async def _delete_record(self, record: ObjectRecord, revision: int) -> bool:
        """Delete ``record`` (last changed at ``revision``) and count it out of its owner's usage.

        Returns False when the record changed since ``revision``.

        Raises:
            Unavailable: the owner's usage counter kept changing.
        """
        usage_key = keys.usage(record.owner)
        if usage_key not in self._seen:
            await self._read_again([usage_key])
        for _ in range(CAS_ATTEMPTS):
            compared = {usage_key: self._seen[usage_key]}
            usage = self._usage_seen(record.owner).add(-record.size, -1)
            ok, replies = await self.etcd.transaction(
                compare=[self._tx.mod(keys.obj(record.key)) == revision, self._unchanged(usage_key)],
                success=[
                    *(self._tx.delete(k) for k in self._record_keys(record)),
                    self._tx.put(usage_key, usage.to_json()),
                ],
                failure=[],
            )
            if ok:
                deleted = replies[0].response_delete_range.header.revision
                self._seen[usage_key] = (usage.to_json(), deleted)
                self._objects.changed(record.key, deleted)
                return True
            if not await self._changed_since(compared):
                return False  # the record changed
        raise Unavailable(f"The usage counter of {record.owner!r} kept changing; evict object {record.key} again.")

    @etcd_errors
    async def list_catalog(
        self, owner: str, catalog: str, live_at: float | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """``(key, {"name", "size", "created", "expires"})`` of every object in a catalog.

        With ``live_at``, objects expired at that time are left out.
        """
        prefix = keys.index_prefix(owner, catalog)
        found = [(kv.key[len(prefix) :].decode(), json.loads(kv.value)) for kv in await self.etcd.get_prefix(prefix)]
        return found if live_at is None else [(k, e) for k, e in found if not entry_expired(e, live_at)]

    @etcd_errors
    async def list_named(
        self, owner: str, catalog: str, name: str, live_at: float | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """:meth:`list_catalog` of the objects called ``name`` only, through the catalog's name entries.

        Catalogs made before name entries existed are searched through their whole index.
        """
        found = await self.etcd.get(keys.catalog(owner, catalog))
        if found is None or not json.loads(found.value).get("names"):
            return [(k, e) for k, e in await self.list_catalog(owner, catalog, live_at) if e["name"] == name]
        prefix = keys.name_prefix(owner, catalog, name)
        named = [kv.key[len(prefix) :].decode() for kv in await self.etcd.get_prefix(prefix, keys_only=True)]
        entries: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(named), MAX_TXN_OPS):
            group = named[start : start + MAX_TXN_OPS]
            _, replies = await self.etcd.transaction(
                compare=[], success=[self._tx.get(keys.index_entry(owner, catalog, k)) for k in group], failure=[]
            )
            entries += [(k, json.loads(r[0][0])) for k, r in zip(group, replies, strict=True) if r]
        return entries if live_at is None else [(k, e) for k, e in entries if not entry_expired(e, live_at)]
