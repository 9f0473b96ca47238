"""The gateway's repair sweeps: rebuild chunks that are missing or on containers long gone.

A sweep reads every object record; an object with a chunk recorded as missing
(at put time, or reported damaged), or on a container that has not been
registered for ``grace`` seconds, is repaired through the client pipeline (the
same code as ``dynostore repair``), calling this gateway with the admin token.
So is an under-spread object (two chunks on one container, left by a repair
that found no other container) once a live container holds none of its
chunks: the repair moves one there. The same sweep evicts objects whose
lifetime (TTL) is over, which their catalog's events report as ``expire``;
until then the gateway already answers for them as for absent objects. An
etcd lock keeps the gateways of a fabric from sweeping at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import aetcd

from dynostore.client.pipeline import Pipeline
from dynostore.errors import DynoStoreError
from dynostore.metrics import (
    DEGRADED_OBJECTS,
    REPAIR_CHUNKS_REBUILT,
    REPAIR_LAST_SWEEP,
    REPAIR_OBJECTS,
    REPAIR_OBJECTS_CHECKED,
    REPAIR_SWEEPS,
    UNREPAIRED_OBJECTS,
)
from dynostore.registry import ObjectRecord, Registry, keys
from dynostore.registry.fabric import RepairProgress

log = logging.getLogger(__name__)

# Seconds between two publications of a running sweep's progress.
PROGRESS_INTERVAL = 2.0


class Repairer:
    """Sweeps the registry every ``interval`` seconds and repairs what needs it."""

    def __init__(
        self,
        registry: Registry,
        pipeline: Pipeline,
        admin_token: str,
        *,
        interval: float,
        grace: float,
        delete_chunks: Callable[[ObjectRecord], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        gateway: str = "",
    ) -> None:
        """Repair with ``pipeline`` (a client of this gateway) and ``admin_token``.

        Objects expired at ``clock()`` (seconds since the epoch) are evicted,
        and their chunks handed to ``delete_chunks`` (without it, left to the
        containers' garbage collection). Each sweep's progress is published
        (as done by ``gateway``) for ``dynostore status``.
        """
        self.registry = registry
        self.delete_chunks = delete_chunks
        self.clock = clock
        self.admin_token = admin_token
        self.interval = interval
        self.grace = grace
        self.pipeline = pipeline
        self.gateway = gateway
        self._started = time.monotonic()
        # Container id -> when a sweep last saw it registered.
        self._last_seen: dict[str, float] = {}

    async def run(self) -> None:
        """Sweep until cancelled; a failed sweep is logged and retried at the next interval."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except (DynoStoreError, aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
                # etcd or the fabric unavailable: expected while they restart, so one line
                REPAIR_SWEEPS.labels("failed").inc()
                log.warning("Repair sweep failed (%s); the next one is in %.0f s.", exc, self.interval)
            except Exception:
                REPAIR_SWEEPS.labels("failed").inc()
                log.exception("Repair sweep failed; the next one is in %.0f s.", self.interval)

    async def sweep(self) -> tuple[int, int]:
        """One sweep unless another gateway is sweeping: ``(objects checked, chunks rebuilt)``."""
        lock = self.registry.etcd.lock(keys.repair_lock(), ttl=max(60, int(self.interval)))
        if not await lock.acquire(timeout=1):
            REPAIR_SWEEPS.labels("skipped").inc()
            return 0, 0
        try:
            now = time.monotonic()
            live = {c["id"] for c in await self.registry.containers()}
            self._last_seen.update(dict.fromkeys(live, now))

            def gone_long(container_id: str) -> bool:
                gone_since = self._last_seen.get(container_id, self._started)
                return container_id not in live and now - gone_since >= self.grace

            def needs_repair(container_id: str, stored: bool) -> bool:
                return not stored or gone_long(container_id)

            def spreadable(chunks: list[tuple[str, bool]]) -> bool:
                """Two chunks on one live container, a live container holding none, and none may come back soon."""
                shared = any(n > 1 for cid, n in Counter(c for c, stored in chunks if stored).items() if cid in live)
                waiting = any(cid not in live and not gone_long(cid) for cid, _ in chunks)
                return shared and not waiting and bool(live - {cid for cid, _ in chunks})

            checked = rebuilt = degraded = failed = expired = 0
            progress = RepairProgress(self.gateway, started=time.time(), objects_total=await self._objects_total())
            await self._publish(progress)
            published = time.monotonic()
            async for record in self.registry.object_records():
                checked += 1
                REPAIR_OBJECTS_CHECKED.inc()
                if time.monotonic() - published >= PROGRESS_INTERVAL:
                    progress.objects_checked = checked
                    progress.degraded_objects, progress.chunks_rebuilt = degraded, rebuilt
                    progress.unrepaired_objects = failed
                    await self._publish(progress)
                    published = time.monotonic()
                if record.expired(self.clock()):
                    expired += await self._expire(record)
                    continue
                due = any(needs_repair(cid, stored) for cid, stored in record.chunks)
                if record.inline or not (due or spreadable(record.chunks)):
                    continue
                degraded += 1
                try:
                    count = await self.pipeline.repair(record.key, self.admin_token)
                except DynoStoreError as exc:
                    failed += 1
                    REPAIR_OBJECTS.labels("failed").inc()
                    log.warning("Could not repair object %s: %s", record.key, exc)
                    continue
                rebuilt += count
                progress.bytes_repaired += record.size
                REPAIR_OBJECTS.labels("ok").inc()
                REPAIR_CHUNKS_REBUILT.inc(count)
                log.info("Repaired object %s: %d chunk(s) rebuilt", record.key, count)
            progress.objects_checked, progress.degraded_objects = checked, degraded
            progress.chunks_rebuilt, progress.unrepaired_objects = rebuilt, failed
            progress.finished = time.time()
            await self._publish(progress)
            REPAIR_SWEEPS.labels("ok").inc()
            DEGRADED_OBJECTS.set(degraded)
            UNREPAIRED_OBJECTS.set(failed)
            REPAIR_LAST_SWEEP.set_to_current_time()
            log.info(
                "Repair sweep: %d object(s) checked, %d chunk(s) rebuilt, %d expired object(s) evicted",
                checked,
                rebuilt,
                expired,
            )
            return checked, rebuilt
        finally:
            await lock.release()

    async def _objects_total(self) -> int:
        """How many objects the fabric holds (for the progress of a sweep), from the users' usage counters."""
        users = [u.name for u in await self.registry.list_users() if not u.container]
        return sum(u.objects for u in await self.registry.usages(users))

    async def _publish(self, progress: RepairProgress) -> None:
        """Publish a sweep's progress; failing to only costs the status view its freshness."""
        try:
            await self.registry.write_repair_progress(progress)
        except DynoStoreError as exc:
            log.warning("Could not publish the repair sweep's progress: %s", exc)

    async def _expire(self, record: ObjectRecord) -> int:
        """Evict an object whose lifetime is over, and its chunks; 1 if this sweep evicted it, else 0."""
        try:
            gone = await self.registry.expire_object(record.key, self.clock())
            if gone is None:
                return 0  # changed or evicted meanwhile
            if self.delete_chunks is not None:
                await self.delete_chunks(gone)
        except DynoStoreError as exc:
            log.warning("Could not evict expired object %s: %s", record.key, exc)
            return 0
        log.info("Object %s expired: evicted", record.key)
        return 1
