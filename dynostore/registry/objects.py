"""Object records: commit, read, repair, evict and expire them; catalog indexes."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from dynostore import validation
from dynostore.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from dynostore.registry import keys
from dynostore.registry.base import CAS_ATTEMPTS, COMMIT_GROUP, MAX_TXN_OPS, RegistryBase, etcd_errors
from dynostore.registry.records import ObjectRecord, User, dumps, entry_expired, expiry
from dynostore.registry.usage import check_quota


@dataclass
class _Waiting:
    """A group of records waiting to be committed with others (see :meth:`ObjectCalls.commit`)."""

    group: list[ObjectRecord]
    quota: User | None
    done: asyncio.Future[None]


class ObjectCalls(RegistryBase):
    """Object records and the catalog index entries committed with them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As :class:`RegistryBase`; with the queues of commits waiting for their owner's commit in flight."""
        super().__init__(*args, **kwargs)
        self._commit_queues: dict[str, collections.deque[_Waiting]] = {}
        self._committers: dict[str, asyncio.Task[None]] = {}

    @etcd_errors
    async def commit(self, records: list[ObjectRecord], quota: User | None = None) -> None:
        """Make objects visible: each record, index entry (and catalog) in one transaction.

        Objects are committed in groups of ``COMMIT_GROUP``, one transaction
        each, which also adds them to their owners' usage counters. Commits of
        one owner that arrive while another is in flight wait for it and then
        go together, in one transaction of up to ``COMMIT_GROUP`` objects
        (group commit): concurrent commits of one user would otherwise all
        compare and rewrite the same usage counter, and all but one be retried.
        A record with no ``expires`` gets its catalog's default TTL, if it has
        one. With ``quota`` (the committing user), a group that would take that
        user's usage over its quota is refused: the transaction requires the
        counter to be unchanged since it was checked, and the groups of one
        transaction are checked in turn against the usage the earlier ones
        leave, so racing commits cannot exceed the quota together.

        Raises:
            AlreadyExists: an object of the group was committed already (none of the group is).
            ResourceExhausted: the group would exceed ``quota`` (none of it is committed).
        """
        for start in range(0, len(records), COMMIT_GROUP):
            await self._commit_with_others(records[start : start + COMMIT_GROUP], quota)

    async def _commit_with_others(self, group: list[ObjectRecord], quota: User | None) -> None:
        """Queue ``group`` behind its owner's commit in flight, if any, and wait until it is committed or refused."""
        owner = group[0].owner
        waiting = _Waiting(group, quota, asyncio.get_running_loop().create_future())
        self._commit_queues.setdefault(owner, collections.deque()).append(waiting)
        if owner not in self._committers:
            # A task of its own: the caller that started it may be cancelled, the others wait on it.
            self._committers[owner] = asyncio.create_task(self._commit_queued(owner))
        await waiting.done

    async def _commit_queued(self, owner: str) -> None:
        """Commit ``owner``'s queued groups, as many as one transaction takes at a time, until none are left."""
        queue = self._commit_queues[owner]
        try:
            while queue:
                taken: list[_Waiting] = []
                while queue and (not taken or sum(len(w.group) for w in taken) + len(queue[0].group) <= COMMIT_GROUP):
                    waiting = queue.popleft()
                    if not waiting.done.cancelled():  # its put gave up before the commit: it keeps its chunks
                        taken.append(waiting)
                if taken:
                    await self._commit_taken(taken)
        finally:
            del self._committers[owner], self._commit_queues[owner]
            for waiting in queue:  # only if this task was cancelled (the gateway stops)
                if not waiting.done.done():
                    waiting.done.set_exception(Unavailable("The gateway stopped before this commit; commit it again."))

    async def _commit_taken(self, taken: list[_Waiting]) -> None:
        """Commit groups together and tell each waiting commit its outcome."""
        try:
            outcomes = await self._commit_groups([(w.group, w.quota) for w in taken])
        except BaseException as exc:
            for waiting in taken:
                if not waiting.done.done():
                    waiting.done.set_exception(exc if isinstance(exc, Exception) else Unavailable(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for waiting, outcome in zip(taken, outcomes, strict=True):
            if waiting.done.done():
                continue
            if outcome is None:
                waiting.done.set_result(None)
            else:
                waiting.done.set_exception(outcome)

    async def _commit_groups(self, parts: list[tuple[list[ObjectRecord], User | None]]) -> list[Exception | None]:
        """Commit groups of records in one transaction; for each, None or the error that refused it.

        A group that would exceed its quota is refused alone. When the
        transaction fails for an object that exists already, each group is
        committed on its own, so that only the group holding it is refused.
        """
        records = [r for group, _ in parts for r in group]
        owners = sorted({r.owner for r in records})
        catalog_keys = {r.key: keys.catalog(r.owner, r.catalog) for r in records}
        watched = [keys.usage(o) for o in owners] + sorted(set(catalog_keys.values()))
        if any(k not in self._seen for k in watched):
            await self._read_again(watched)
        ttl_given = {r.key for r in records if r.expires}
        for _ in range(CAS_ATTEMPTS):
            compared = {k: self._seen[k] for k in watched}
            outcomes: list[Exception | None] = [None] * len(parts)
            usage = {o: self._usage_seen(o) for o in owners}
            included: list[ObjectRecord] = []
            for i, (group, quota) in enumerate(parts):
                if quota is not None:
                    added = [r for r in group if r.owner == quota.name]
                    try:
                        used = usage[quota.name] if quota.name in usage else self._usage_seen(quota.name)
                        check_quota(
                            quota.name,
                            quota.quota_bytes,
                            quota.quota_objects,
                            used,
                            sum(r.size for r in added),
                            len(added),
                        )
                    except ResourceExhausted as refused:
                        outcomes[i] = refused
                        continue
                for r in group:
                    usage[r.owner] = usage[r.owner].add(r.size, 1)
                included += group
            if not included:
                return outcomes
            ops = []
            catalogs: dict[bytes, bytes] = {}
            for r in included:
                catalog_info, _ = self._seen[catalog_keys[r.key]]
                if r.key not in ttl_given:
                    r.expires = expiry(r.created, 0.0, json.loads(catalog_info) if catalog_info else None)
                ops += self._put_record_ops(r)
                if catalog_info is None:
                    catalogs.setdefault(catalog_keys[r.key], _new_catalog(r))
            ops += [self._tx.put(k, v) for k, v in catalogs.items()]
            ops += [self._tx.put(keys.usage(o), u.to_json()) for o, u in usage.items()]
            ok, replies = await self.etcd.transaction(
                compare=[self._tx.create(keys.obj(r.key)) == 0 for r in included]
                + [self._unchanged(k) for k in watched],
                success=ops,
                failure=[],
            )
            if ok:
                revision = replies[0].response_put.header.revision
                for o, u in usage.items():
                    self._seen[keys.usage(o)] = (u.to_json(), revision)
                for k, v in catalogs.items():
                    self._seen[k] = (v, revision)
                for r in included:
                    self._objects.put(r.key, r, revision)
                return outcomes
            if not await self._changed_since(compared):
                alone = [i for i, outcome in enumerate(outcomes) if outcome is None]
                if len(alone) == 1:
                    keys_of = [r.key for r in parts[alone[0]][0]]
                    outcomes[alone[0]] = AlreadyExists(f"One of objects {keys_of} was committed already.")
                    return outcomes
                for i in alone:  # which group holds the object that exists? each on its own
                    (outcomes[i],) = await self._commit_groups([parts[i]])
                return outcomes
        raise Unavailable("The usage counters and catalogs of this commit kept changing; commit it again.")

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
    async def commit_replacing(
        self, record: ObjectRecord, quota: User | None = None, *, replace_key: str = "", replace_name: bool = False
    ) -> list[ObjectRecord]:
        """Commit ``record``, replacing object ``replace_key`` and/or every other object of its name, atomically.

        By key, ``record.key`` must be the key planned for this version: the
        committed record takes ``replace_key`` as its key and keeps the
        planned one as its ``version``, under which its chunks are. By name,
        the other objects called ``record.name`` in its catalog go in the
        same transaction. Readers see the old versions or this one, never a
        mix. Usage counts this version minus the ones it replaced. By key, a
        record without a name takes the replaced object's.

        Returns the records replaced (their chunks are the caller's to delete).

        Raises:
            NotFound: no object has the key ``replace_key``.
            PermissionDenied: that object belongs to another user.
            InvalidArgument: that object is in another catalog.
            AlreadyExists: this version was committed already.
            ResourceExhausted: the growth would exceed ``quota``.
        """
        planned = record.key
        if replace_key and replace_key != planned:
            record.key, record.version = replace_key, planned
        usage_key, catalog_key = keys.usage(record.owner), keys.catalog(record.owner, record.catalog)
        ttl_given = bool(record.expires)
        for attempt in range(CAS_ATTEMPTS):
            # Counter and catalog as last seen: the transaction compares them, and a retry reads them again.
            if attempt or usage_key not in self._seen or catalog_key not in self._seen:
                await self._read_again([usage_key, catalog_key])
            catalog_info, _ = self._seen[catalog_key]
            catalog = json.loads(catalog_info) if catalog_info else None
            if not ttl_given:
                record.expires = expiry(record.created, 0.0, catalog)
            old: list[tuple[ObjectRecord, int]] = []
            by_key, named = await asyncio.gather(
                self.etcd.get(keys.obj(record.key)) if record.version else _nothing(),
                self._named(record, catalog) if replace_name else _nothing(),
            )
            if record.version:
                found = by_key
                if found is None:
                    raise NotFound(f"No object has the key {record.key} to replace.")
                current = ObjectRecord.from_json(found.value)
                if current.owner != record.owner:
                    raise PermissionDenied(f"Object {record.key} belongs to another user.")
                if current.catalog != record.catalog:
                    raise InvalidArgument(f"Object {record.key} is in catalog {current.catalog!r}; replace it there.")
                record.name = record.name or current.name  # a replacement that gives no name keeps the name
                old.append((current, found.mod_revision))
            if replace_name:
                old += [o for o in named or [] if o[0].key != record.key]
            freed = sum(o.size for o, _ in old)
            usage = self._usage_seen(record.owner).add(record.size - freed, 1 - len(old))
            if quota is not None:
                check_quota(
                    quota.name,
                    quota.quota_bytes if record.size > freed else 0,
                    quota.quota_objects if len(old) < 1 else 0,
                    self._usage_seen(quota.name),
                    record.size - freed,
                    1 - len(old),
                )
            # Kept in the index entry, for the catalog's events (whose watch sees a key replaced by key itself).
            ops = self._put_record_ops(record, [o.key for o, _ in old if o.key != record.key])
            written = set(self._record_keys(record))  # etcd refuses a transaction that changes a key twice
            for o, _ in old:
                ops += [self._tx.delete(k) for k in self._record_keys(o) if k not in written]
            ops.append(self._tx.put(usage_key, usage.to_json()))
            if catalog_info is None:
                ops.append(self._tx.put(catalog_key, _new_catalog(record)))
            compare = [self._unchanged(usage_key), self._unchanged(catalog_key)]
            compare += [self._tx.mod(keys.obj(o.key)) == revision for o, revision in old]
            if record.version:
                compare += [self._tx.create(keys.obj(planned)) == 0, self._tx.create(keys.version(planned)) == 0]
            else:
                compare.append(self._tx.create(keys.obj(record.key)) == 0)
            ok, replies = await self.etcd.transaction(compare=compare, success=ops, failure=[])
            if ok:
                revision = replies[0].response_put.header.revision
                self._seen[usage_key] = (usage.to_json(), revision)
                for o, _ in old:
                    self._objects.changed(o.key, revision)
                self._objects.put(record.key, record, revision)
                return [o for o, _ in old]
            landed = await self.etcd.get(keys.version(planned) if record.version else keys.obj(record.key))
            if landed is not None:
                raise AlreadyExists(f"Object {planned} was committed already.")
        raise Unavailable(f"The objects {record.key} replaces kept changing; commit it again.")

    async def _named(self, record: ObjectRecord, catalog: dict[str, Any] | None) -> list[tuple[ObjectRecord, int]]:
        """Records (and revisions) of the objects called ``record.name`` in its catalog.

        Catalogs made before name entries existed (no ``names`` in their
        record) are searched through their whole index.
        """
        if not record.name:
            raise InvalidArgument("A put that replaces by name needs a name.")
        prefix = keys.name_prefix(record.owner, record.catalog, record.name)
        named = {kv.key[len(prefix) :].decode() for kv in await self.etcd.get_prefix(prefix, keys_only=True)}
        if catalog is not None and not catalog.get("names"):
            entries = await self.list_catalog(record.owner, record.catalog)
            named |= {key for key, entry in entries if entry["name"] == record.name}
        found = []
        for key in sorted(named):
            kv = await self.etcd.get(keys.obj(key))
            if kv is not None:
                found.append((ObjectRecord.from_json(kv.value), kv.mod_revision))
        return found

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

    async def _delete_group(self, object_keys: list[str]) -> list[ObjectRecord | None]:
        for _ in range(CAS_ATTEMPTS):
            _, replies = await self.etcd.transaction(
                compare=[], success=[self._tx.get(keys.obj(k)) for k in object_keys], failure=[]
            )
            found = [(ObjectRecord.from_json(bytes(r[0][0])), r[0][1].mod_revision) if r else None for r in replies]
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


async def _nothing() -> None:
    """A lookup that is not needed, to gather beside those that are."""


def _new_catalog(record: ObjectRecord) -> bytes:
    """The record of a catalog that ``record``'s commit creates (its objects all have name entries)."""
    return dumps({"owner": record.owner, "name": record.catalog, "created": record.created, "names": True})
