"""Scrubbing and damage reports: a container re-reads its chunks, reports damage, drops orphans.

Every ``interval`` seconds the scrubber reads every stored chunk in full (the
backend verifies each fragment's CRC-32). Chunks that fail are reported to the
gateway (``ReportDamage``), which records them as missing so that repair
rebuilds them; once reported, the damaged copies are deleted (each chunk is
read again before it is reported and before it is deleted: a copy a repair
rewrote in place meanwhile is kept). The same pass asks the gateway which chunks an object's record
relies on (``CheckChunks``): a chunk that no record has relied on for
``gc_grace`` seconds, across passes, is garbage (a failed put, an evicted
object, a copy replaced by repair) and is deleted. Last, it asks the gateway
which chunks the records say it stores (``ListRecordedChunks``) and reports
those its backend no longer has, so a chunk that vanished is rebuilt too.
Reads go one chunk at a time, so a scrub yields to serving.

Clients' reads find damage too: a chunk asked for with a valid read ticket
that is gone or fails its checksum is noted by the :class:`DamageReporter`,
which reports what it noted every ``REPORT_DELAY`` seconds in one call; what
a report could not deliver (the gateway down or restarting) waits for the
next round, and a gateway that cannot be reached is one warning line. The
gateway records a chunk as missing only if the object's record says this
container holds it, so a reader cannot make it forget a good chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

import grpc

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.container.backends import Backend
from dynostore.errors import DataLoss, DynoStoreError, NotFound
from dynostore.metrics import (
    CHECKSUM_FAILURES,
    DAMAGE_REPORTED,
    GC_DELETED,
    SCRUB_CHUNKS_CHECKED,
    SCRUB_LAST_COMPLETION,
    SCRUBS,
)
from dynostore.rpc import auth_metadata, open_channel
from dynostore.rpc.tls import Tls
from dynostore.validation import KEY_SHARDS

log = logging.getLogger(__name__)
# Chunks are reported and checked this many at a time.
BATCH = 500
# Damage that reads find is reported this often (seconds), all at once.
REPORT_DELAY = 1.0
# Damage noted but not yet reported is capped (a flood of bad reads costs no memory).
MAX_NOTED = 10_000


class DamageReporter:
    """Tells the gateway which chunks are damaged or gone, then deletes the damaged copies."""

    def __init__(self, backend: Backend, container_id: str, gateway: str, token: str, tls: Tls | None) -> None:
        """Report for container ``container_id`` (on ``backend``) to ``gateway`` with ``token``."""
        self.backend = backend
        self.container_id = container_id
        self.gateway = gateway
        self.token = token
        self.tls = tls
        self._noted: set[tuple[str, int]] = set()

    def note(self, key: str, index: int) -> None:
        """A read found chunk ``index`` of ``key`` gone or damaged: report it soon."""
        if len(self._noted) < MAX_NOTED:
            self._noted.add((key, index))

    async def run(self) -> None:
        """Report what reads noted every ``REPORT_DELAY`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(REPORT_DELAY)
            if not self._noted:
                continue
            noted, self._noted = sorted(self._noted), set()
            reported = 0
            try:
                async with open_channel(self.gateway, self.tls) as channel:
                    stub = gateway_pb2_grpc.GatewayStub(channel)
                    for start in range(0, len(noted), BATCH):
                        await self.report(stub, noted[start : start + BATCH])
                        reported = start + BATCH
            except Exception as exc:
                unreported = noted[reported:]
                for chunk in unreported:  # kept for the next round (a gateway restarting, say)
                    self.note(*chunk)
                if isinstance(exc, grpc.aio.AioRpcError):
                    log.warning(
                        "Reporting %d damaged chunk(s) to %s failed (%s: %s); trying again in %.0f s.",
                        len(unreported),
                        self.gateway,
                        exc.code().name,
                        exc.details(),
                        REPORT_DELAY,
                    )
                else:
                    log.exception("Reporting %d damaged chunk(s) failed; trying again.", len(unreported))

    async def report(
        self, stub: gateway_pb2_grpc.GatewayStub, found: list[tuple[str, int]], source: str = "read"
    ) -> None:
        """Tell the gateway of the chunks still damaged or gone, then delete the damaged copies.

        Each chunk is checked again first, and each damaged copy again before
        it is deleted: a repair may have rewritten it in place since it was
        found damaged (a scrub reports at the end of its pass), and that copy
        is whole and kept. ``source`` says who found them (``read`` or
        ``scrub``), for the metrics.
        """
        damaged = [chunk for chunk in found if await self._state(*chunk) != "whole"]
        if len(damaged) < len(found):
            log.info(
                "%d chunk(s) found damaged or gone read whole now (a repair rewrote them); kept.",
                len(found) - len(damaged),
            )
        if not damaged:
            return
        request = gateway_pb2.ReportDamageRequest(
            container_id=self.container_id, chunks=[gateway_pb2.ChunkId(key=k, index=i) for k, i in damaged]
        )
        reply = await stub.ReportDamage(request, metadata=auth_metadata(self.token), timeout=30)
        DAMAGE_REPORTED.labels(source).inc(len(damaged))
        log.info("Reported %d damaged chunk(s); %d recorded as missing.", len(damaged), reply.marked)
        for key, index in damaged:
            if await self._state(key, index) == "damaged":  # worthless, and rebuilt elsewhere
                await self.backend.delete(key, index)

    async def _state(self, key: str, index: int) -> Literal["whole", "damaged", "gone", "unreadable"]:
        """Chunk ``index`` of ``key`` as it reads now, in full (``unreadable``: the backend failed otherwise)."""
        try:
            async for _ in self.backend.read(key, index):
                pass
        except DataLoss:
            return "damaged"
        except NotFound:
            return "gone"
        except (DynoStoreError, OSError):
            return "unreadable"
        return "whole"


class Scrubber:
    """Re-verifies a backend's chunks every ``interval`` seconds and collects its garbage."""

    def __init__(self, reporter: DamageReporter, *, interval: float, gc_grace: float) -> None:
        """Scrub the backend of ``reporter``'s container, reporting through it.

        ``gc_grace`` 0 keeps every chunk (no garbage collection).
        """
        self.reporter = reporter
        self.backend = reporter.backend
        self.container_id = reporter.container_id
        self.interval = interval
        self.gc_grace = gc_grace
        # Chunks no record relied on at the last passes -> when that was first seen.
        self._unreferenced_since: dict[tuple[str, int], float] = {}
        # When the last pass finished (seconds since the epoch; 0: none yet), sent with heartbeats.
        self.last_completed = 0.0

    async def run(self) -> None:
        """Scrub until cancelled; a failed scrub is logged and tried again at the next interval."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.scrub()
            except grpc.aio.AioRpcError as exc:  # the gateway down or restarting: no traceback for that
                SCRUBS.labels("failed").inc()
                log.warning(
                    "Scrub stopped: gateway %s answered %s (%s); the next one is in %.0f s.",
                    self.reporter.gateway,
                    exc.code().name,
                    exc.details(),
                    self.interval,
                )
            except Exception:
                SCRUBS.labels("failed").inc()
                log.exception("Scrub failed; the next one is in %.0f s.", self.interval)

    async def scrub(self) -> tuple[int, int, int]:
        """One pass over every chunk: ``(chunks checked, damaged or vanished chunks reported, garbage deleted)``."""
        checked = deleted = 0
        damaged: list[tuple[str, int]] = []
        batch: list[tuple[str, int]] = []
        still_unreferenced: dict[tuple[str, int], float] = {}
        async with open_channel(self.reporter.gateway, self.reporter.tls) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            async for key, index in self.backend.list_chunks():
                checked += 1
                try:
                    async for _ in self.backend.read(key, index):
                        pass
                except DataLoss as exc:
                    CHECKSUM_FAILURES.labels("scrub").inc()
                    SCRUB_CHUNKS_CHECKED.inc()
                    log.warning("Chunk %d of %s is damaged: %s", index, key, exc)
                    damaged.append((key, index))
                    continue
                except NotFound:
                    continue  # deleted since it was listed
                SCRUB_CHUNKS_CHECKED.inc()
                batch.append((key, index))
                if len(batch) == BATCH:
                    deleted += await self._collect(stub, batch, still_unreferenced)
                    batch = []
            if batch:
                deleted += await self._collect(stub, batch, still_unreferenced)
            self._unreferenced_since = still_unreferenced
            vanished = await self._vanished(stub)
            damaged += vanished
            for start in range(0, len(damaged), BATCH):
                await self.reporter.report(stub, damaged[start : start + BATCH], source="scrub")
        SCRUBS.labels("ok").inc()
        SCRUB_LAST_COMPLETION.set_to_current_time()
        self.last_completed = time.time()
        log.info(
            "Scrub: %d chunk(s) checked, %d damaged, %d vanished, %d garbage deleted",
            checked,
            len(damaged) - len(vanished),
            len(vanished),
            deleted,
        )
        return checked, len(damaged), deleted

    async def _vanished(self, stub: gateway_pb2_grpc.GatewayStub) -> list[tuple[str, int]]:
        """Chunks that object records say this container stores but its backend does not have."""
        vanished = []
        metadata = auth_metadata(self.reporter.token)
        for shard in range(KEY_SHARDS):
            request = gateway_pb2.ListRecordedChunksRequest(container_id=self.container_id, shard=shard)
            reply = await stub.ListRecordedChunks(request, metadata=metadata, timeout=60)
            for chunk in reply.chunks:
                if not await self.backend.exists(chunk.key, chunk.index):
                    log.warning("Chunk %d of %s is gone from this container.", chunk.index, chunk.key)
                    vanished.append((chunk.key, chunk.index))
        return vanished

    async def _collect(
        self,
        stub: gateway_pb2_grpc.GatewayStub,
        chunks: list[tuple[str, int]],
        still_unreferenced: dict[tuple[str, int], float],
    ) -> int:
        """Delete the chunks no record has relied on for ``gc_grace`` seconds; return how many."""
        if not self.gc_grace:
            return 0
        request = gateway_pb2.CheckChunksRequest(
            container_id=self.container_id, chunks=[gateway_pb2.ChunkId(key=k, index=i) for k, i in chunks]
        )
        reply = await stub.CheckChunks(request, metadata=auth_metadata(self.reporter.token), timeout=30)
        now = time.monotonic()
        deleted = 0
        for chunk, referenced in zip(chunks, reply.referenced, strict=True):
            if referenced:
                continue
            since = self._unreferenced_since.get(chunk, now)
            if now - since >= self.gc_grace:
                await self.backend.delete(*chunk)
                GC_DELETED.inc()
                log.info("Deleted chunk %d of %s: no object relies on it.", chunk[1], chunk[0])
                deleted += 1
            else:
                still_unreferenced[chunk] = since
        return deleted
