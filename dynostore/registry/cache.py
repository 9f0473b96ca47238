"""Caches of etcd values that an etcd watch keeps coherent.

Each entry remembers the etcd revision it was read (or written) at. The
watch reports every change under the cached prefix with its revision; a
change newer than an entry drops it. An entry is taken only while the watch
runs, and only if the watch has reported nothing newer than the entry's
revision: otherwise a change between the read and the insertion might have
been missed. While the watch is down nothing is cached, so a gateway never
serves a value its watch could not vouch for.

What remains is the watch's own delay: for a few milliseconds after another
gateway changes a value, this one may still serve the old one (the process
that makes a change reports it to its own cache at once).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class WatchedCache(Generic[V]):
    """Up to ``max_entries`` values by key, least recently used dropped first.

    Attributes:
        name: what the cache holds, for logs and metrics (e.g. ``objects``).
        watching: whether the watch runs (otherwise the cache is empty and takes nothing).
        hits: lookups that found a value.
        misses: lookups that found none.
    """

    def __init__(self, max_entries: int, name: str = "cache") -> None:
        """An empty cache, taking nothing until :meth:`start` (``max_entries`` 0: never takes anything)."""
        self.max_entries = max_entries
        self.name = name
        self.hits = self.misses = 0
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        # The newest revision the watch has reported (or started after).
        self._seen = 0
        self.watching = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        """The cached value of ``key``, or None."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, value: V, revision: int) -> None:
        """Keep ``value``, read or written at ``revision``, if the watch can vouch for it."""
        if not self.watching or revision < self._seen or not self.max_entries:
            return
        self._entries[key] = (value, revision)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def changed(self, key: str | None, revision: int) -> None:
        """``key`` (None: anything) changed at ``revision``: drop older entries.

        The watch reports every change; the process that made one reports it
        at once too, so that it never serves the old value itself.
        """
        self._seen = max(self._seen, revision)
        if key is None:
            self._entries.clear()
            return
        entry = self._entries.get(key)
        if entry is not None and entry[1] < revision:
            del self._entries[key]

    def forget(self, key: str) -> None:
        """Drop ``key``'s entry, if any (it is read again next time)."""
        self._entries.pop(key, None)

    def start(self, revision: int) -> None:
        """The watch runs and reports every change after ``revision``."""
        self._entries.clear()
        self._seen = revision
        self.watching = True

    def stop(self) -> None:
        """The watch is down: forget everything and take nothing until it restarts."""
        self.watching = False
        self._entries.clear()
