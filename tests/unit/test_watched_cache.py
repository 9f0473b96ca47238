"""The watched cache takes only what its watch can vouch for, and drops what changed."""

from __future__ import annotations

from dynostore.registry.cache import WatchedCache


def started(entries: int = 10, revision: int = 100) -> WatchedCache[str]:
    cache: WatchedCache[str] = WatchedCache(entries)
    cache.start(revision)
    return cache


def test_takes_nothing_until_the_watch_starts_and_after_it_stops() -> None:
    cache: WatchedCache[str] = WatchedCache(10)
    cache.put("a", "A", 5)
    assert cache.get("a") is None
    cache.start(5)
    cache.put("a", "A", 5)
    assert cache.get("a") == "A"
    cache.stop()
    assert cache.get("a") is None
    cache.put("a", "A", 6)
    assert cache.get("a") is None


def test_a_read_older_than_the_watch_start_is_refused() -> None:
    cache = started(revision=100)
    cache.put("a", "A", 99)  # read before the watch began: a change in between could be missed
    assert cache.get("a") is None


def test_a_later_change_drops_the_entry_an_earlier_one_does_not() -> None:
    cache = started()
    cache.put("a", "A", 120)
    cache.changed("a", 120)  # the watch reports the write the entry came from
    assert cache.get("a") == "A"
    cache.changed("a", 121)
    assert cache.get("a") is None


def test_a_read_overtaken_by_a_reported_change_is_refused() -> None:
    cache = started()
    cache.changed("b", 130)  # any change the watch reported after the read
    cache.put("a", "A", 125)
    assert cache.get("a") is None
    cache.put("a", "A", 130)
    assert cache.get("a") == "A"


def test_a_change_to_anything_empties_it() -> None:
    cache = started()
    cache.put("a", "A", 101)
    cache.put("b", "B", 101)
    cache.changed(None, 102)
    assert (cache.get("a"), cache.get("b")) == (None, None)


def test_least_recently_used_entries_go_first() -> None:
    cache = started(entries=2)
    cache.put("a", "A", 101)
    cache.put("b", "B", 101)
    assert cache.get("a") == "A"  # now b is the least recently used
    cache.put("c", "C", 101)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    assert len(cache) == 2


def test_zero_entries_caches_nothing() -> None:
    cache = started(entries=0)
    cache.put("a", "A", 101)
    assert cache.get("a") is None
