"""Catalogs, their shares and their events."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aetcd

from dynostore.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from dynostore.registry import keys
from dynostore.registry.base import etcd_errors
from dynostore.registry.commits import CommitCalls
from dynostore.registry.records import CatalogEvent, ObjectRecord, dumps


class CatalogCalls(CommitCalls):
    """Catalogs: create, describe, delete (with their objects), share, and watch for events."""

    @etcd_errors
    async def create_catalog(self, owner: str, name: str, k: int = 0, m: int = 0, ttl: float = 0.0) -> None:
        """Create an empty catalog, with the erasure-coding policy of its puts if ``k`` is not 0.

        ``ttl``: the lifetime in seconds of puts into it that give none (0: forever).

        Raises:
            AlreadyExists: the owner has a catalog of that name.
        """
        # "names": every object of it has a name entry (see keys.name_entry).
        info: dict[str, Any] = {"owner": owner, "name": name, "created": time.time(), "names": True}
        if k:
            info |= {"k": k, "m": m}
        if ttl:
            info["ttl"] = ttl
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.catalog(owner, name)) == 0],
            success=[self._tx.put(keys.catalog(owner, name), dumps(info))],
            failure=[],
        )
        if not ok:
            raise AlreadyExists(f"Catalog {name!r} exists already.")

    @etcd_errors
    async def catalogs(self, user: str) -> list[dict[str, Any]]:
        """Records of the user's catalogs, then of catalogs shared with the user."""
        own = [json.loads(kv.value) for kv in await self.etcd.get_prefix(keys.catalogs_of(user))]
        shared = []
        for owner, name in await self._shared_with(user):
            found = await self.etcd.get(keys.catalog(owner, name))
            if found is not None:
                shared.append(json.loads(found.value))
        return own + shared

    @etcd_errors
    async def catalog_exists(self, owner: str, name: str) -> bool:
        """Whether ``owner`` has a catalog named ``name``."""
        return await self.etcd.get(keys.catalog(owner, name)) is not None

    @etcd_errors
    async def shared_named(self, reader: str, name: str) -> list[str]:
        """``owner/name`` of every catalog called ``name`` that is shared with ``reader``."""
        return sorted(f"{owner}/{catalog}" for owner, catalog in await self._shared_with(reader) if catalog == name)

    @etcd_errors
    async def catalog_policy(self, owner: str, name: str) -> tuple[int, int] | None:
        """``(k, m)`` the catalog was created with; None if it has none or does not exist."""
        found = await self.etcd.get(keys.catalog(owner, name))
        if found is None:
            return None
        info = json.loads(found.value)
        return (info["k"], info["m"]) if info.get("k") else None

    @etcd_errors
    async def describe_catalog(self, owner: str, name: str) -> dict[str, Any]:
        """A catalog's record with its object count, bytes and readers.

        Raises:
            NotFound: there is no such catalog.
        """
        found = await self.etcd.get(keys.catalog(owner, name))
        if found is None:
            raise NotFound(f"There is no catalog {owner}/{name}.")
        entries = await self.list_catalog(owner, name, live_at=time.time())
        return {
            **json.loads(found.value),
            "objects": len(entries),
            "bytes": sum(e["size"] for _, e in entries),
            "shared_with": await self.shares(owner, name),
        }

    @etcd_errors
    async def delete_catalog(self, owner: str, name: str, force: bool) -> list[ObjectRecord]:
        """Delete a catalog, its shares and (with ``force``) its objects; return the evicted records.

        Raises:
            NotFound: there is no such catalog.
            FailedPrecondition: the catalog holds objects and ``force`` is false.
        """
        if await self.etcd.get(keys.catalog(owner, name)) is None:
            raise NotFound(f"There is no catalog {owner}/{name}.")
        entries = await self.list_catalog(owner, name)
        if entries and not force:
            raise FailedPrecondition(
                f"Catalog {name!r} holds {len(entries)} objects; delete it with force to evict them too."
            )
        evicted = [r for key, _ in entries if (r := await self.delete_object(key)) is not None]
        readers = await self.shares(owner, name)
        await self.etcd.transaction(
            compare=[],
            success=[
                self._tx.delete(keys.catalog(owner, name)),
                *(self._tx.delete(keys.share(owner, name, r)) for r in readers),
                *(self._tx.delete(keys.shared_with(r, owner, name)) for r in readers),
            ],
            failure=[],
        )
        return evicted

    @etcd_errors
    async def share(self, owner: str, name: str, reader: str) -> None:
        """Let ``reader`` read and list the catalog.

        Raises:
            NotFound: the catalog or the reader does not exist.
        """
        info = dumps({"created": time.time()})
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.catalog(owner, name)) > 0, self._tx.create(keys.user(reader)) > 0],
            success=[
                self._tx.put(keys.share(owner, name, reader), info),
                self._tx.put(keys.shared_with(reader, owner, name), info),
            ],
            failure=[],
        )
        if not ok:
            raise NotFound(f"Catalog {name!r} or user {reader!r} does not exist.")

    @etcd_errors
    async def unshare(self, owner: str, name: str, reader: str) -> bool:
        """Take ``reader``'s read access away; return whether it had any."""
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.share(owner, name, reader)) > 0],
            success=[
                self._tx.delete(keys.share(owner, name, reader)),
                self._tx.delete(keys.shared_with(reader, owner, name)),
            ],
            failure=[],
        )
        return bool(ok)

    @etcd_errors
    async def shares(self, owner: str, name: str) -> list[str]:
        """Users the catalog is shared with."""
        prefix = keys.shares_prefix(owner, name)
        return [kv.key[len(prefix) :].decode() for kv in await self.etcd.get_prefix(prefix)]

    @etcd_errors
    async def can_read(self, owner: str, name: str, user: str) -> bool:
        """Whether ``user`` owns the catalog or it is shared with them."""
        return owner == user or await self.etcd.get(keys.share(owner, name, user)) is not None

    async def catalog_events(self, owner: str, name: str, start_revision: int = 0) -> AsyncIterator[CatalogEvent]:
        """Puts, replaces, evicts and shares of a catalog as they happen, from ``start_revision`` on if given.

        The first event is of kind ``ready`` and carries the revision the watch
        starts from, so that a subscriber can resume from there without loss.

        Raises:
            FailedPrecondition: events from ``start_revision`` were compacted away.
            Unavailable: the registry is unreachable.
        """
        prefix = keys.catalog_events(owner, name)
        objects, shares = keys.index_prefix(owner, name), keys.shares_prefix(owner, name)
        try:
            if not start_revision:
                start_revision = (await self.etcd.get_prefix(keys.catalog(owner, name))).header.revision + 1
            watch = await self.etcd.watch_prefix(prefix, start_revision=start_revision, prev_kv=True)
            yield CatalogEvent(kind="ready", revision=start_revision)
            # Keys replaced by name at a revision: their deletion is part of that replace event.
            replaced_at: tuple[int, set[str]] = (0, set())
            async for event in watch:
                kv = event.kv if event.kind == "PUT" else (event.prev_kv or event.kv)
                if kv.key.startswith(objects):
                    key = kv.key[len(objects) :].decode()
                    entry = json.loads(kv.value) if kv.value else {}
                    if event.kind == "PUT" and entry.get("expired"):
                        continue  # marked before its eviction, which is the event
                    if event.kind != "PUT" and replaced_at[0] == event.kv.mod_revision and key in replaced_at[1]:
                        continue
                    kind = "expire" if entry.get("expired") else "evict"
                    replaced: list[str] = []
                    if event.kind == "PUT":
                        replaced = list(entry.get("replaces", []))
                        replaced_at = (event.kv.mod_revision, set(replaced))
                        if event.prev_kv is not None and event.prev_kv.value:
                            replaced.insert(0, key)  # replaced by key: the same key, a new version
                        kind = "replace" if replaced else "put"
                    yield CatalogEvent(
                        kind=kind,
                        key=key,
                        name=entry.get("name", ""),
                        size=entry.get("size", 0),
                        time=entry.get("created", 0.0) if event.kind == "PUT" else time.time(),
                        revision=event.kv.mod_revision,
                        replaced=tuple(replaced),
                    )
                elif kv.key.startswith(shares):
                    shared = json.loads(kv.value) if kv.value and event.kind == "PUT" else {}
                    yield CatalogEvent(
                        kind="share" if event.kind == "PUT" else "unshare",
                        user=kv.key[len(shares) :].decode(),
                        time=shared.get("created", time.time()),
                        revision=event.kv.mod_revision,
                    )
        except aetcd.RevisionCompactedError as exc:
            raise FailedPrecondition(
                f"Events from revision {start_revision} were compacted; subscribe without a start revision."
            ) from exc
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
            raise Unavailable(f"The registry (etcd) is unreachable: {exc}") from exc
