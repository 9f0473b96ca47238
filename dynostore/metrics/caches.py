"""The gateway's watched caches as metrics, read from the caches at each scrape.

The caches keep plain counts (:class:`~dynostore.registry.cache.WatchedCache`
``hits`` and ``misses``), so a lookup costs no more with metrics on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dynostore.metrics import CACHE_METRICS, REGISTRY
from dynostore.registry.cache import WatchedCache


class CacheCollector(Collector):
    """``dynostore_cache_watching``, ``dynostore_cache_entries`` and ``dynostore_cache_lookups_total`` by cache."""

    def __init__(self, caches: Sequence[WatchedCache[Any]]) -> None:
        """Report ``caches`` (by their names)."""
        self._caches = caches

    def collect(self) -> Iterator[Metric]:
        watching = GaugeMetricFamily(
            "dynostore_cache_watching", CACHE_METRICS["dynostore_cache_watching"], labels=["cache"]
        )
        entries = GaugeMetricFamily(
            "dynostore_cache_entries", CACHE_METRICS["dynostore_cache_entries"], labels=["cache"]
        )
        lookups = CounterMetricFamily(
            "dynostore_cache_lookups", CACHE_METRICS["dynostore_cache_lookups_total"], labels=["cache", "result"]
        )
        for cache in self._caches:
            watching.add_metric([cache.name], 1 if cache.watching else 0)
            entries.add_metric([cache.name], len(cache))
            lookups.add_metric([cache.name, "hit"], cache.hits)
            lookups.add_metric([cache.name, "miss"], cache.misses)
        yield from (watching, entries, lookups)


def export_caches(caches: Iterable[WatchedCache[Any]]) -> CacheCollector:
    """Report ``caches`` in :data:`~dynostore.metrics.REGISTRY` from now on; return the collector."""
    collector = CacheCollector(list(caches))
    REGISTRY.register(collector)
    return collector
