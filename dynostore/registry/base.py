"""What the registry's parts share: the etcd connection, caches, and the usage and catalog records commits compare.

:class:`RegistryBase` holds the state; :mod:`.users`, :mod:`.objects`,
:mod:`.catalogs` and :mod:`.containers` add the operations on one record kind
each, and :class:`~dynostore.registry.Registry` joins them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import aetcd

from dynostore.errors import Unavailable
from dynostore.metrics import ETCD_DURATION, ETCD_ERRORS, WATCH_FAILURES
from dynostore.registry import keys
from dynostore.registry.cache import WatchedCache
from dynostore.registry.etcd import CALL_TIMEOUT, EtcdClient
from dynostore.registry.records import ObjectRecord, User
from dynostore.registry.usage import Usage
from dynostore.rpc.tls import Tls

log = logging.getLogger(__name__)
P = ParamSpec("P")
# Operations etcd takes in one transaction (its default --max-txn-ops).
MAX_TXN_OPS = 128
# Objects per etcd transaction: up to 4 operations each (record, index entry, name
# entry, inline bytes), a catalog each at most, and the usage counter.
COMMIT_GROUP = (MAX_TXN_OPS - 1) // 5
# Tokens whose users a gateway keeps in memory.
AUTH_CACHE_ENTRIES = 10_000
# Usage counters and catalog records a gateway remembers (value and revision) to commit against.
SEEN_ENTRIES = 10_000
# Attempts at a commit or evict whose usage counter or catalog others keep changing.
CAS_ATTEMPTS = 100
T = TypeVar("T")


def etcd_errors(f: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Report etcd connection failures as Unavailable; time each call and count those failures (by method name)."""
    duration = ETCD_DURATION.labels(f.__name__)

    @functools.wraps(f)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return await f(*args, **kwargs)
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
            ETCD_ERRORS.labels(f.__name__).inc()
            raise Unavailable(f"The registry (etcd) is unreachable: {exc}") from exc
        finally:
            duration.observe(time.perf_counter() - started)

    return wrapped


class RegistryBase:
    """The etcd connection and the caches every part of the registry uses."""

    def __init__(
        self,
        address: str | Sequence[str],
        object_cache_entries: int = 0,
        tls: Tls | None = None,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        """Connect (lazily) to etcd at ``host:port``, over TLS when ``tls`` is given.

        ``address`` may name several members of a cluster (a list, or
        comma-separated): calls then go to any member that is up.

        Tokens (always) and up to ``object_cache_entries`` object records,
        inline bytes included, are cached in memory while :meth:`watch` runs.
        Each etcd call takes at most ``call_timeout`` seconds on one member
        before it goes to the next (see :class:`EtcdClient`), 10 s in all.
        """
        self.etcd = EtcdClient(address, tls, call_timeout=call_timeout, timeout=10)
        self._tx = self.etcd.transactions
        self._auth_cache: WatchedCache[User] = WatchedCache(AUTH_CACHE_ENTRIES, "tokens")
        # Container id -> owning user, as last read (owners change only when a user is removed).
        self._container_owners: dict[str, str] = {}
        self._objects: WatchedCache[ObjectRecord] = WatchedCache(object_cache_entries, "objects")
        # Key -> (value or None, mod revision; 0: absent) of usage counters and catalog records
        # as last read or written: commits compare against these and read again when they changed.
        self._seen: dict[bytes, tuple[bytes | None, int]] = {}

    @property
    def caches(self) -> list[WatchedCache[Any]]:
        """The caches an etcd watch keeps coherent while :meth:`watch` runs."""
        return [self._auth_cache, self._objects]

    async def close(self) -> None:
        """Close the etcd connection."""
        await self.etcd.close()

    def _usage_seen(self, name: str, seen: tuple[bytes | None, int] | None = None) -> Usage:
        """The usage counter of ``name`` as ``seen``, by default as last read or written (see :meth:`_read_again`)."""
        value, _ = seen or self._seen[keys.usage(name)]
        return Usage.from_json(value) if value else Usage()

    async def _read_again(self, wanted: list[bytes]) -> None:
        """Read usage counters and catalog records into ``_seen``.

        A usage counter that was never written (a user from before counters
        existed) is counted once from the user's catalog indexes and kept with
        revision 0: the commit or evict that writes it first requires it to be
        still absent.
        """
        _, replies = await self.etcd.transaction(compare=[], success=[self._tx.get(k) for k in wanted], failure=[])
        if len(self._seen) > SEEN_ENTRIES:
            self._seen.clear()
        for key, reply in zip(wanted, replies, strict=True):
            if reply:
                fresh: tuple[bytes | None, int] = (bytes(reply[0][0]), reply[0][1].mod_revision)
            elif key.startswith(keys.usage("")):
                fresh = (await self._count_usage(key[len(keys.usage("")) :].decode()), 0)
            else:
                fresh = (None, 0)
            self._seen[key] = fresh

    async def _changed_since(self, compared: dict[bytes, tuple[bytes | None, int]]) -> bool:
        """Read the keys of ``compared`` again; whether any is not as it was (a failed transaction's cause)."""
        await self._read_again(list(compared))
        return any(self._seen[k] != seen for k, seen in compared.items())

    async def _count_usage(self, owner: str) -> bytes | None:
        """Usage of ``owner`` counted from its catalog indexes (None: it has no objects)."""
        prefix = keys.owner_events(owner)
        total = Usage()
        for kv in await self.etcd.get_prefix(prefix):
            if kv.key[len(prefix) :].split(b"/")[1:2] == [b"objects"]:
                total = total.add(json.loads(kv.value)["size"], 1)
        return total.to_json() if total.objects else None

    def _unchanged(self, key: bytes, seen: tuple[bytes | None, int] | None = None) -> Any:
        """An etcd comparison: ``key`` is as ``seen``, by default as last read or written (absent, if it was)."""
        _, revision = seen or self._seen[key]
        return self._tx.mod(key) == revision if revision else self._tx.create(key) == 0

    async def _shared_with(self, reader: str) -> list[tuple[str, str]]:
        """``(owner, catalog)`` of every catalog shared with ``reader``."""
        prefix = keys.shared_with(reader)
        return [tuple(kv.key[len(prefix) :].decode().split("/", 1)) for kv in await self.etcd.get_prefix(prefix)]

    async def watch(self) -> None:
        """Keep the caches coherent: runs until cancelled.

        Any change to users or tokens empties the token cache; a change to an
        object record drops that record. With no room for records, their
        changes are not watched.
        """
        watches = [self._keep_coherent(keys.auth_prefix(), self._auth_cache, whole=True)]
        if self._objects.max_entries:
            watches.append(self._keep_coherent(keys.objects_prefix(), self._objects, whole=False))
        await asyncio.gather(*watches)

    async def _keep_coherent(self, prefix: bytes, cache: WatchedCache[Any], *, whole: bool) -> None:
        """Report every change under ``prefix`` to ``cache`` (``whole``: as a change to everything)."""
        while True:
            try:
                # Watch from just after a revision read first, so no change is missed in between.
                started = (await self.etcd.get_prefix(keys.unused(), keys_only=True)).header.revision
                watch = await self.etcd.watch_prefix(prefix, start_revision=started + 1)
                cache.start(started)
                async for event in watch:
                    cache.changed(None if whole else event.kv.key[len(prefix) :].decode(), event.kv.mod_revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                WATCH_FAILURES.labels(cache.name).inc()
                log.warning("Watch of %s failed (%s); retrying.", prefix.decode(), exc)
            cache.stop()
            await asyncio.sleep(1)
