"""Object records: commit, read, repair, evict and expire them; catalog indexes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from dynostore import validation
from dynostore.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from dynostore.registry import keys
from dynostore.registry.base import CAS_ATTEMPTS, COMMIT_GROUP, RegistryBase, etcd_errors
from dynostore.registry.records import ObjectRecord, User, dumps, entry_expired, expiry
from dynostore.registry.usage import check_quota


class ObjectCalls(RegistryBase):
    """Object records and the catalog index entries committed with them."""

    @etcd_errors
    async def commit(self, records: list[ObjectRecord], quota: User | None = None) -> None:
        """Make objects visible: each record, index entry (and catalog) in one transaction.

        Objects are committed in groups of ``COMMIT_GROUP``, one transaction
        each, which also adds them to their owners' usage counters. A record
        with no ``expires`` gets its catalog's default TTL, if it has one.
        With ``quota`` (the committing user), a group that would take that
        user's usage over its quota is refused: the transaction requires the
        counter to be unchanged since it was checked, so racing commits
        cannot exceed the quota together.

        Raises:
            AlreadyExists: an object of the group was committed already (none of the group is).
            ResourceExhausted: the group would exceed ``quota`` (none of it is committed).
        """
        for start in range(0, len(records), COMMIT_GROUP):
            await self._commit_group(records[start : start + COMMIT_GROUP], quota)

    async def _commit_group(self, group: list[ObjectRecord], quota: User | None) -> None:
        """Commit one group of records in one transaction (see :meth:`commit`)."""
        owners = sorted({r.owner for r in group})
        catalog_keys = {r.key: keys.catalog(r.owner, r.catalog) for r in group}
        watched = [keys.usage(o) for o in owners] + sorted(set(catalog_keys.values()))
        if any(k not in self._seen for k in watched):
            await self._read_again(watched)
        ttl_given = {r.key for r in group if r.expires}
        for _ in range(CAS_ATTEMPTS):
            compared = {k: self._seen[k] for k in watched}
            ops = []
            catalogs: dict[bytes, bytes] = {}
            usage = {o: self._usage_seen(o) for o in owners}
            for r in group:
                catalog_info, _ = self._seen[catalog_keys[r.key]]
                if r.key not in ttl_given:
                    r.expires = expiry(r.created, 0.0, json.loads(catalog_info) if catalog_info else None)
                usage[r.owner] = usage[r.owner].add(r.size, 1)
                ops.append(self._tx.put(keys.obj(r.key), r.to_json()))
                ops.append(self._tx.put(keys.index_entry(r.owner, r.catalog, r.key), dumps(r.index_entry())))
                if r.inline:
                    ops.append(self._tx.put(keys.inline_data(r.key), r.data))
                if catalog_info is None:
                    info = {"owner": r.owner, "name": r.catalog, "created": r.created}
                    catalogs.setdefault(catalog_keys[r.key], dumps(info))
            if quota is not None:
                added = [r for r in group if r.owner == quota.name]
                check_quota(
                    quota.name,
                    quota.quota_bytes,
                    quota.quota_objects,
                    self._usage_seen(quota.name),
                    sum(r.size for r in added),
                    len(added),
                )
            ops += [self._tx.put(k, v) for k, v in catalogs.items()]
            ops += [self._tx.put(keys.usage(o), u.to_json()) for o, u in usage.items()]
            ok, replies = await self.etcd.transaction(
                compare=[self._tx.create(keys.obj(r.key)) == 0 for r in group] + [self._unchanged(k) for k in watched],
                success=ops,
                failure=[],
            )
            if ok:
                revision = replies[0].response_put.header.revision
                for o, u in usage.items():
                    self._seen[keys.usage(o)] = (u.to_json(), revision)
                for k, v in catalogs.items():
                    self._seen[k] = (v, revision)
                for r in group:
                    self._objects.put(r.key, r, revision)
                return
            if not await self._changed_since(compared):
                raise AlreadyExists(f"One of objects {[r.key for r in group]} was committed already.")
        raise Unavailable("The usage counters and catalogs of this commit kept changing; commit it again.")

    @etcd_errors
    async def referenced(self, chunks: list[tuple[str, int]], container_id: str) -> list[bool]:
        """For each ``(key, index)``: whether that object's record lists the chunk as stored on ``container_id``."""
        wanted = list(dict.fromkeys(key for key, _ in chunks))
        records = dict(zip(wanted, await self._read_objects(wanted, with_data=False), strict=True))
        return [
            (record := records[key]) is not None
            and index < len(record.chunks)
            and record.chunks[index] == (container_id, True)
            for key, index in chunks
        ]

    async def get_objects(self, object_keys: list[str]) -> list[ObjectRecord | None]:
        """Records of committed objects to read (None where a key has none), inline bytes included.

        Served from the record cache where it can be (see :mod:`dynostore.registry.cache`),
        the rest read from etcd in few round trips and cached. The records are
        shared with the cache: do not change them.
        """
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
            found = await self.etcd.get(keys.obj(key))
            if found is None:
                return False
            record = ObjectRecord.from_json(found.value)
            if index >= len(record.chunks) or record.chunks[index] != (container_id, True):
                return False
            record.chunks[index] = (container_id, False)
            ok, replies = await self.etcd.transaction(
                compare=[self._tx.mod(keys.obj(key)) == found.mod_revision],
                success=[self._tx.put(keys.obj(key), record.to_json())],
                failure=[],
            )
            if ok:
                self._objects.changed(key, replies[0].response_put.header.revision)
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
                    self._tx.delete(keys.obj(record.key)),
                    self._tx.delete(keys.index_entry(record.owner, record.catalog, record.key)),
                    *([self._tx.delete(keys.inline_data(record.key))] if record.inline else []),
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
