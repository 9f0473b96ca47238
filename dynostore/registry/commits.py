"""Object commits: group commits of new objects, and replacements; what the gateway's CommitPut makes."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from dynostore.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unavailable
from dynostore.registry import keys
from dynostore.registry.base import CAS_ATTEMPTS, COMMIT_GROUP, etcd_errors
from dynostore.registry.objects import ObjectCalls
from dynostore.registry.records import ObjectRecord, User, dumps, expiry
from dynostore.registry.usage import Usage, check_quota

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    """A group of records waiting to be committed with others (see :meth:`CommitCalls.commit`)."""

    group: list[ObjectRecord]
    quota: User | None
    done: asyncio.Future[None]


class CommitCalls(ObjectCalls):
    """Commits of object records, with their index, name and usage entries, one etcd transaction each."""

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
        transaction fails, the records are read: a group whose objects all
        hold this very commit's records landed already (an earlier attempt
        whose answer was lost, e.g. when the etcd leader died: it succeeded),
        a group of which an object holds another record is refused with
        ``AlreadyExists``, and the others are tried again.
        """
        records = [r for group, _ in parts for r in group]
        owners = sorted({r.owner for r in records})
        catalog_keys = {r.key: keys.catalog(r.owner, r.catalog) for r in records}
        watched = [keys.usage(o) for o in owners] + sorted(set(catalog_keys.values()))
        if any(k not in self._seen for k in watched):
            await self._read_again(watched)
        ttl_given = {r.key for r in records if r.expires}
        settled: dict[int, Exception | None] = {}  # groups found committed: None if as this commit
        for _ in range(CAS_ATTEMPTS):
            compared = {k: self._seen[k] for k in watched}
            outcomes: list[Exception | None] = [settled.get(i) for i in range(len(parts))]
            usage = {o: self._usage_seen(o) for o in owners}
            included: list[ObjectRecord] = []
            tried: list[int] = []
            for i, (group, quota) in enumerate(parts):
                if i in settled:
                    continue
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
                tried.append(i)
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
            # Why it failed: objects committed already, or counters and catalogs changed (read them again).
            read, _ = await asyncio.gather(self._records_read([r.key for r in included]), self._changed_since(compared))
            found = dict(zip([r.key for r in included], read, strict=True))
            for i in tried:
                group = parts[i][0]
                held = [found[r.key] for r in group]
                outcome = _found_as(held, group)
                if outcome == "other":
                    settled[i] = AlreadyExists(f"One of objects {[r.key for r in group]} was committed already.")
                elif outcome == "ours":
                    log.info("A commit of %d objects whose answer was lost had landed.", len(group))
                    settled[i] = None
                    for r, (_, at) in zip(group, filter(None, held), strict=True):
                        self._objects.put(r.key, r, at)
        raise Unavailable("The usage counters and catalogs of this commit kept changing; commit it again.")

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
            # Taken before the lookups: a commit of this gateway that lands during them updates _seen, and
            # the transaction must still fail then (it may have added an object of this name).
            seen = {k: self._seen[k] for k in (usage_key, catalog_key)}
            catalog_info, _ = seen[catalog_key]
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
            used = self._usage_seen(record.owner, seen[usage_key])
            usage = used.add(record.size - freed, 1 - len(old))
            if quota is not None:
                check_quota(
                    quota.name,
                    quota.quota_bytes if record.size > freed else 0,
                    quota.quota_objects if len(old) < 1 else 0,
                    used if quota.name == record.owner else self._usage_seen(quota.name),
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
            compare = [self._unchanged(k, seen[k]) for k in (usage_key, catalog_key)]
            compare += [self._tx.mod(keys.obj(o.key)) == revision for o, revision in old]
            if record.version:
                compare += [self._tx.create(keys.obj(planned)) == 0, self._tx.create(keys.version(planned)) == 0]
            else:
                compare.append(self._tx.create(keys.obj(record.key)) == 0)
            ok, replies = await self.etcd.transaction(compare=compare, success=ops, failure=[])
            if ok:
                return self._replaced(record, old, usage, replies[0].response_put.header.revision)
            stored, pointer = await asyncio.gather(
                self.etcd.get(keys.obj(record.key)),
                self.etcd.get(keys.version(planned)) if record.version else _nothing(),
            )
            if stored is not None and _same_version(ObjectRecord.from_json(stored.value), record):
                # This very transaction landed and its answer was lost (e.g. the etcd leader died): done.
                log.info("A replacing commit of %s whose answer was lost had landed.", record.key)
                return self._replaced(record, old, usage, stored.mod_revision)
            if pointer is not None or (stored is not None and not record.version):
                raise AlreadyExists(f"Object {planned} was committed already.")
        raise Unavailable(f"The objects {record.key} replaces kept changing; commit it again.")

    def _replaced(
        self, record: ObjectRecord, old: list[tuple[ObjectRecord, int]], usage: Usage, revision: int
    ) -> list[ObjectRecord]:
        """Note in the caches a replacing commit that landed at ``revision``; the records it replaced."""
        self._seen[keys.usage(record.owner)] = (usage.to_json(), revision)
        for o, _ in old:
            self._objects.changed(o.key, revision)
        self._objects.put(record.key, record, revision)
        return [o for o, _ in old]

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


async def _nothing() -> None:
    """A lookup that is not needed, to gather beside those that are."""


def _new_catalog(record: ObjectRecord) -> bytes:
    """The record of a catalog that ``record``'s commit creates (its objects all have name entries)."""
    return dumps({"owner": record.owner, "name": record.catalog, "created": record.created, "names": True})


def _found_as(found: list[tuple[ObjectRecord, int] | None], group: list[ObjectRecord]) -> str:
    """What the records ``found`` under a group's keys say of its commit.

    ``"ours"``: every key holds the group's own record (its commit landed);
    ``"other"``: some key holds another record; ``"none"``: no key holds any.
    """
    if all(f is None for f in found):
        return "none"
    if all(f is not None and _same_version(f[0], r) for f, r in zip(found, group, strict=True)):
        return "ours"
    return "other"


def _same_version(stored: ObjectRecord, record: ObjectRecord) -> bool:
    """Whether ``stored`` is what committing ``record`` wrote (its TTL aside, which a retry computes again)."""
    return dataclasses.replace(stored, expires=record.expires) == record
