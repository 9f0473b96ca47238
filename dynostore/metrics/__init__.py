"""Prometheus metrics of DynoStore's processes, served over HTTP at ``/metrics``.

Every metric of a gateway or a container is declared here, once, in
:data:`REGISTRY` (the process's own registry, with the standard ``process_``
and ``python_`` collectors beside DynoStore's). The code that measures
imports the metric it updates; :mod:`dynostore.metrics.endpoint` serves them,
:mod:`dynostore.metrics.rpc` counts and times every RPC,
:mod:`dynostore.metrics.backend` times a container's backend and reports its
usage, and :mod:`dynostore.metrics.caches` reports the gateway's caches.

Names follow Prometheus' conventions (``dynostore_`` prefix, ``_total`` for
counters, base units). Labels take few values: method and status-code names,
operation names, never object keys, user names or tokens. A container or
gateway is told apart by the ``instance`` label Prometheus adds to what it
scrapes; ``dynostore_container_info`` maps a container's instance to its id
and site. ``docs/operations.md`` lists every metric.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from dynostore.errors import DynoStoreError

# No ``_created`` series beside every counter and histogram: they double what a scrape carries.
disable_created_metrics()
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
ROLES = ("gateway", "container")
# The metrics of each role ("both": of every role), registered in REGISTRY by register_role.
_METRICS: dict[str, list[Counter | Gauge | Histogram]] = {"both": [], "gateway": [], "container": []}
M = TypeVar("M", Counter, Gauge, Histogram)


def _add(role: str, metric: M) -> M:
    _METRICS[role].append(metric)
    return metric


# Seconds: from a fraction of a millisecond (a cached call on one host) to a minute (a large stream).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Both roles: RPCs (dynostore.metrics.rpc) ------------------------------------

RPC_REQUESTS = _add(
    "both",
    Counter(
        "dynostore_rpc_requests",
        "RPCs served, by service, method and final status code (streams count once, when they end).",
        ["service", "method", "code"],
        registry=None,
    ),
)
RPC_DURATION = _add(
    "both",
    Histogram(
        "dynostore_rpc_duration_seconds",
        "Time from the start of an RPC to its end (a stream's last message), by service, method and code.",
        ["service", "method", "code"],
        buckets=LATENCY_BUCKETS,
        registry=None,
    ),
)

# Containers: chunks (dynostore.container.servicer) ------------------------------

CONTAINER_INFO = _add(
    "container",
    Gauge(
        "dynostore_container_info",
        "Always 1: the id, site and backend of the container serving these metrics.",
        ["container_id", "site", "backend"],
        registry=None,
    ),
)
CHUNK_WRITES = _add(
    "container",
    Counter(
        "dynostore_chunk_writes",
        "Chunk writes (PutChunk, each chunk of WriteChunks), by outcome (OK or the error's status code).",
        ["code"],
        registry=None,
    ),
)
CHUNK_READS = _add(
    "container",
    Counter(
        "dynostore_chunk_reads",
        "Chunk reads (GetChunk, each chunk of ReadChunks), by outcome (OK or the error's status code).",
        ["code"],
        registry=None,
    ),
)
CHUNK_BYTES_WRITTEN = _add(
    "container",
    Counter(
        "dynostore_chunk_written_bytes",
        "Payload bytes of the chunks stored (fragments verified and committed).",
        registry=None,
    ),
)
CHUNK_BYTES_READ = _add(
    "container",
    Counter(
        "dynostore_chunk_read_bytes",
        "Payload bytes of chunks sent to readers.",
        registry=None,
    ),
)
CHECKSUM_FAILURES = _add(
    "container",
    Counter(
        "dynostore_checksum_failures",
        "Fragments that failed their CRC-32: on arrival (a write), on a read, or during a scrub.",
        ["source"],
        registry=None,
    ),
)
TICKET_REJECTIONS = _add(
    "container",
    Counter(
        "dynostore_ticket_rejections",
        "Chunk calls refused for their ticket, by reason.",
        ["reason"],
        registry=None,
    ),
)

# Containers: backend (dynostore.metrics.backend) -------------------------------

BACKEND_DURATION = _add(
    "container",
    Histogram(
        "dynostore_backend_duration_seconds",
        "Time spent in the storage backend per chunk: write (fragments and commit), read (all fragments), delete.",
        ["operation"],
        buckets=LATENCY_BUCKETS,
        registry=None,
    ),
)
BACKEND_ERRORS = _add(
    "container",
    Counter(
        "dynostore_backend_errors",
        "Backend calls that raised, by operation (a read of a chunk that is not stored does not count).",
        ["operation"],
        registry=None,
    ),
)
CAPACITY = _add(
    "container",
    Gauge(
        "dynostore_container_capacity_bytes",
        "Capacity of the container's storage, as its backend reports it (refreshed at every heartbeat).",
        registry=None,
    ),
)
FREE = _add(
    "container",
    Gauge(
        "dynostore_container_free_bytes",
        "Free space of the container's storage, as its backend reports it (refreshed at every heartbeat).",
        registry=None,
    ),
)
CHUNKS_STORED = _add(
    "container",
    Gauge(
        "dynostore_container_chunks",
        "Chunks the container stores, as its backend reports it (refreshed at every heartbeat).",
        registry=None,
    ),
)

# Containers: scrubs, GC and damage reports (dynostore.container.scrubber) -----

SCRUB_CHUNKS_CHECKED = _add(
    "container",
    Counter(
        "dynostore_scrub_checked_chunks",
        "Chunks a scrub has read in full and verified (grows during a scrub: its progress).",
        registry=None,
    ),
)
SCRUBS = _add(
    "container",
    Counter(
        "dynostore_scrubs",
        "Scrubs finished, by result (ok, failed).",
        ["result"],
        registry=None,
    ),
)
SCRUB_LAST_COMPLETION = _add(
    "container",
    Gauge(
        "dynostore_scrub_last_completion_timestamp_seconds",
        "Unix time at which the last successful scrub finished (0: none yet).",
        registry=None,
    ),
)
GC_DELETED = _add(
    "container",
    Counter(
        "dynostore_gc_deleted_chunks",
        "Chunks a scrub deleted because no object record relied on them for gc_grace.",
        registry=None,
    ),
)
DAMAGE_REPORTED = _add(
    "container",
    Counter(
        "dynostore_damage_reported_chunks",
        "Chunks reported to the gateway as damaged or gone, by who found them (read, scrub).",
        ["source"],
        registry=None,
    ),
)

# Gateways: objects (dynostore.gateway.objects) ---------------------------------

OBJECTS_COMMITTED = _add(
    "gateway",
    Counter(
        "dynostore_objects_committed",
        "Objects committed (made visible) by CommitPut, by layout (inline, chunked).",
        ["layout"],
        registry=None,
    ),
)
OBJECT_BYTES_COMMITTED = _add(
    "gateway",
    Counter(
        "dynostore_object_committed_bytes",
        "Bytes of the objects committed by CommitPut (object sizes, before erasure coding).",
        registry=None,
    ),
)
RELAY_BYTES = _add(
    "gateway",
    Counter(
        "dynostore_relay_bytes",
        "Object bytes streamed through the gateway's relay, by direction (in: RelayPut, out: RelayGet).",
        ["direction"],
        registry=None,
    ),
)

# Gateways: repair sweeps (dynostore.gateway.repairer) --------------------------

REPAIR_SWEEPS = _add(
    "gateway",
    Counter(
        "dynostore_repair_sweeps",
        "Repair sweeps run by this gateway, by result (ok, failed, skipped: another gateway held the lock).",
        ["result"],
        registry=None,
    ),
)
REPAIR_OBJECTS_CHECKED = _add(
    "gateway",
    Counter(
        "dynostore_repair_checked_objects",
        "Object records the repair sweeps have checked (grows during a sweep: its progress).",
        registry=None,
    ),
)
REPAIR_OBJECTS = _add(
    "gateway",
    Counter(
        "dynostore_repair_objects",
        "Objects the repair sweeps tried to repair, by result (ok, failed).",
        ["result"],
        registry=None,
    ),
)
REPAIR_CHUNKS_REBUILT = _add(
    "gateway",
    Counter(
        "dynostore_repair_rebuilt_chunks",
        "Chunks the repair sweeps rebuilt.",
        registry=None,
    ),
)
DEGRADED_OBJECTS = _add(
    "gateway",
    Gauge(
        "dynostore_degraded_objects",
        "Objects the last finished sweep found needing repair (chunks missing, on gone containers, or sharing one).",
        registry=None,
    ),
)
UNREPAIRED_OBJECTS = _add(
    "gateway",
    Gauge(
        "dynostore_unrepaired_objects",
        "Objects the last finished sweep could not repair (they wait for the next sweep).",
        registry=None,
    ),
)
REPAIR_LAST_SWEEP = _add(
    "gateway",
    Gauge(
        "dynostore_repair_last_sweep_timestamp_seconds",
        "Unix time at which this gateway's last repair sweep finished (0: none yet).",
        registry=None,
    ),
)

CATALOG_OBJECTS = _add(
    "gateway",
    Gauge(
        "dynostore_catalog_objects",
        "Objects in each catalog (expired ones left out), read from etcd every catalog_metrics_interval seconds.",
        ["owner", "catalog"],
        registry=None,
    ),
)
CATALOG_BYTES = _add(
    "gateway",
    Gauge(
        "dynostore_catalog_bytes",
        "Bytes of the objects in each catalog (object sizes), read with dynostore_catalog_objects.",
        ["owner", "catalog"],
        registry=None,
    ),
)

# Gateways: etcd and caches (dynostore.registry) --------------------------------

ETCD_DURATION = _add(
    "gateway",
    Histogram(
        "dynostore_etcd_request_duration_seconds",
        "Time of each registry operation on etcd (one or a few etcd calls), by operation.",
        ["operation"],
        buckets=LATENCY_BUCKETS,
        registry=None,
    ),
)
ETCD_ERRORS = _add(
    "gateway",
    Counter(
        "dynostore_etcd_errors",
        "Registry operations that failed because etcd was unreachable or timed out, by operation.",
        ["operation"],
        registry=None,
    ),
)
WATCH_FAILURES = _add(
    "gateway",
    Counter(
        "dynostore_cache_watch_failures",
        "Times the etcd watch behind a cache failed (the cache empties and the watch restarts), by cache.",
        ["cache"],
        registry=None,
    ),
)
# Read at each scrape from the caches themselves (dynostore.metrics.caches).
CACHE_METRICS = {
    "dynostore_cache_watching": "1 while the etcd watch that keeps the cache coherent runs, else 0 (nothing cached).",
    "dynostore_cache_entries": "Entries in the cache.",
    "dynostore_cache_lookups_total": "Cache lookups, by result (hit, miss).",
}


def register_role(role: str) -> None:
    """Serve the metrics of ``role`` (``gateway`` or ``container``) from :data:`REGISTRY`, once per process.

    The others are still updated where their code runs, but not shown.

    Raises:
        ValueError: ``role`` is not one of :data:`ROLES`.
    """
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    for metric in [*_METRICS["both"], *_METRICS[role]]:
        with contextlib.suppress(ValueError):  # registered already (a second server in this process)
            REGISTRY.register(metric)


def exported_names(role: str | None = None) -> set[str]:
    """The names of DynoStore's own metrics (of one role, else all), as a scrape shows them.

    Counters are named with their ``_total``; histograms by their base name
    (a scrape shows ``_bucket``, ``_sum`` and ``_count`` series of it).
    """
    names = set(CACHE_METRICS) if role in (None, "gateway") else set()
    for group, metrics in _METRICS.items():
        if role is None or group in ("both", role):
            for metric in metrics:
                for family in metric.describe():
                    names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def code_name(exc: BaseException) -> str:
    """The status-code name an operation that raised ``exc`` ends with (as its caller would be told)."""
    if isinstance(exc, DynoStoreError):
        return str(exc.code.name)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL"


@contextlib.contextmanager
def outcome(counter: Counter) -> Iterator[None]:
    """Count what the block does in ``counter`` (labelled by ``code``): ``OK``, or the code of what it raised."""
    try:
        yield
    except BaseException as exc:
        counter.labels(code_name(exc)).inc()
        raise
    counter.labels("OK").inc()
