"""Drain, decommission and rebalance: the gateway's RPCs and the mover that does the work.

``DrainContainer`` sets a container's drain flag in etcd: from then on no
gateway offers the container for new chunks (PlanPut, PlanRepair), and a
gateway's :class:`Mover` moves every chunk records place there to other
containers through the client pipeline (:mod:`dynostore.client.moves`: copy
or rebuild, commit with a compare-and-swap, only then delete the old copy).
``Rebalance`` asks a mover to move chunks from the fullest containers (by
used share of capacity, counted from the records) to the emptiest until used
space is even. Both are resumable: the flag or request stays in etcd, an
etcd lock keeps two gateways from working on the same one, and every
gateway's mover looks for unfinished work every few seconds (a drain that
found nothing left is checked again now and then, for chunks of puts planned
before the flag was set). ``RemoveContainer`` forgets a drained container.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aetcd
import grpc

from dynostore import validation
from dynostore._proto import gateway_pb2
from dynostore.client.moves import Bandwidth, MoveOutcome, chunk_size, move_chunks
from dynostore.client.pipeline import Pipeline
from dynostore.erasure import Codec
from dynostore.errors import DynoStoreError, FailedPrecondition, NotFound
from dynostore.gateway.base import GatewayCalls, _token_from
from dynostore.registry import ObjectRecord, Registry, keys
from dynostore.registry.moves import STUCK_KEYS_KEPT, MoveProgress

log = logging.getLogger(__name__)

# Seconds between two publications of a running job's progress (and refreshes of its lock).
PUBLISH_SECONDS = 2.0
# A job whose progress was not published for this long is not running (its gateway died).
STALE_SECONDS = 10.0
# Seconds an etcd lock on a job outlives a gateway that died holding it.
LOCK_TTL = 10
# Seconds between two looks for work; after a pass that could move nothing, and after a drain ended.
CHECK_SECONDS = 2.0
RETRY_SECONDS = 30.0
RECHECK_DONE_SECONDS = 60.0
# Objects a drain moves at once (each its own chunks, to whichever containers suit it).
PARALLEL_MOVES = 4


@functools.lru_cache(maxsize=64)
def _codec(k: int, m: int) -> Codec:
    return Codec(k, m)


def chunk_bytes(record: ObjectRecord) -> int:
    """The size of one chunk of an erasure-coded object."""
    return chunk_size(_codec(record.k, record.m), record.segment_size, record.size)


def move_status(progress: MoveProgress, active: bool, now: float | None = None) -> gateway_pb2.MoveStatus:
    """The wire form of a job's progress; ``running`` only while its gateway keeps publishing."""
    now = time.time() if now is None else now
    fresh = progress.running and now - progress.updated < STALE_SECONDS
    return gateway_pb2.MoveStatus(
        container_id=progress.container_id,
        active=active,
        running=fresh,
        done=progress.done,
        gateway=progress.gateway,
        started=progress.started,
        finished=progress.finished,
        updated=progress.updated,
        objects_moved=progress.objects_moved,
        chunks_moved=progress.chunks_moved,
        bytes_moved=progress.bytes_moved,
        chunks_left=progress.chunks_left,
        bytes_left=progress.bytes_left,
        stuck_objects=progress.stuck_objects,
        stuck_keys=progress.stuck_keys,
        bandwidth=progress.bandwidth,
        error=progress.error,
    )


@dataclass
class _Job:
    """One drain (or the rebalance) this gateway runs or ran."""

    task: asyncio.Task[None] | None = None
    ended: float = 0.0  # monotonic time the last run ended
    done: bool = False


class Mover:
    """Runs the fabric's drains and rebalances that no other gateway is running."""

    def __init__(
        self,
        registry: Registry,
        pipeline: Pipeline,
        token: str = "",
        *,
        gateway: str = "",
        rebalance_every: float = 0.0,
        check_every: float = CHECK_SECONDS,
    ) -> None:
        """Move chunks through ``pipeline`` (a client of this gateway) with an admin ``token``.

        Without one (a gateway started without an admin token), jobs run only
        when an admin asks this gateway, with the asker's token, for as long
        as this gateway runs. With ``rebalance_every``, it asks for a
        rebalance every that many seconds (none is asked while one is wanted).
        """
        self.rebalance_every = rebalance_every
        # Seconds between two looks for unfinished jobs (0: none; jobs then run only when asked here).
        self.check_every = check_every
        self._asked = time.monotonic()
        self.registry = registry
        self.pipeline = pipeline
        self.token = token
        self.gateway = gateway
        self._jobs: dict[str, _Job] = {}  # container id ("" for the rebalance) -> job

    async def run(self) -> None:
        """Look for unfinished drains and rebalances every few seconds until cancelled."""
        try:
            if self.check_every <= 0:
                await asyncio.Event().wait()  # jobs run only when an admin asks this gateway
            while True:
                try:
                    await self.check()
                except (DynoStoreError, aetcd.ClientError) as exc:
                    log.warning("Could not look for drains and rebalances to resume: %s", exc)
                await asyncio.sleep(self.check_every)
        finally:
            tasks = [j.task for j in self._jobs.values() if j.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def check(self) -> None:
        """Start the jobs that are wanted, not running here, and due."""
        if not self.token:
            return
        now = time.monotonic()
        for container_id in await self.registry.drains():
            job = self._jobs.get(container_id)
            wait = RECHECK_DONE_SECONDS if job is not None and job.done else RETRY_SECONDS
            if job is None or (job.task is None and now - job.ended >= wait):
                self.start(container_id, self.token)
        wanted = await self.registry.rebalance_request() is not None
        asked = False
        if self.rebalance_every > 0 and not wanted and now - self._asked >= self.rebalance_every:
            self._asked = now
            await self.registry.set_rebalance(0, time.time())
            wanted = asked = True
        if wanted:
            job = self._jobs.get("")
            if job is None or (job.task is None and (asked or now - job.ended >= RETRY_SECONDS)):
                self.start("", self.token)

    def start(self, container_id: str, token: str) -> None:
        """Run the drain of ``container_id`` ("": the rebalance) now, unless it runs here already."""
        job = self._jobs.setdefault(container_id, _Job())
        if job.task is not None:
            return
        work = self._drain(container_id, token) if container_id else self._rebalance(token)
        job.task = asyncio.create_task(self._guarded(job, work, container_id))

    async def _guarded(self, job: _Job, work: Awaitable[bool | None], name: str) -> None:
        busy = False
        try:
            result = await work
            busy, job.done = result is None, bool(result)
        except (DynoStoreError, aetcd.ClientError) as exc:
            log.warning("The %s stopped (%s); it resumes later.", _name(name), exc)
        except Exception:
            log.exception("The %s failed; it resumes later.", _name(name))
        finally:
            job.task = None
            # Busy elsewhere: look again at the next check (that gateway may have died holding the lock).
            job.ended = 0.0 if busy else time.monotonic()

    # running one job under its lock, publishing its progress ---------------------

    async def _locked(
        self,
        lock_key: bytes,
        progress: MoveProgress,
        publish: Callable[[MoveProgress], Awaitable[None]],
        body: Callable[[], Awaitable[None]],
    ) -> bool | None:
        """Run ``body`` holding ``lock_key``, publishing ``progress`` meanwhile; None if another gateway holds it."""
        if await self.registry.etcd.get(lock_key) is not None:
            return None  # another gateway runs it (or died running it: its lock lapses within LOCK_TTL)
        lock = self.registry.etcd.lock(lock_key, ttl=LOCK_TTL)
        if not await lock.acquire(timeout=0):
            return None

        async def ticker() -> None:
            while True:
                await asyncio.sleep(PUBLISH_SECONDS)
                progress.updated = time.time()
                with contextlib.suppress(DynoStoreError, aetcd.ClientError):
                    await publish(progress)
                    await lock.refresh()

        ticking = asyncio.create_task(ticker())
        try:
            progress.running, progress.updated, progress.error = True, time.time(), ""
            await publish(progress)
            try:
                await body()
            except DynoStoreError as exc:
                progress.error = str(exc)
                raise
            finally:
                progress.running, progress.updated = False, time.time()
                with contextlib.suppress(DynoStoreError):
                    await publish(progress)
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
            with contextlib.suppress(DynoStoreError, aetcd.ClientError):
                await lock.release()
        return True

    # drains -------------------------------------------------------------------

    async def _drain(self, container_id: str, token: str) -> bool | None:
        """Move every chunk off ``container_id``; True once no record names it, None if another gateway drains it."""
        flag = (await self.registry.drains()).get(container_id)
        if flag is None:
            return True
        progress = MoveProgress(
            container_id=container_id, gateway=self.gateway, started=flag["started"], bandwidth=flag["bandwidth"]
        )
        old = (await self.registry.drain_progresses()).get(container_id)
        if old is not None and old.started == flag["started"]:  # resumed: keep counting
            progress.objects_moved, progress.chunks_moved = old.objects_moved, old.chunks_moved
            progress.bytes_moved = old.bytes_moved
        pace = Bandwidth(flag["bandwidth"])

        async def body() -> None:
            while True:
                todo = await self._holding(container_id)
                progress.chunks_left = sum(n for _, n, _ in todo)
                progress.bytes_left = sum(b for _, _, b in todo)
                with contextlib.suppress(DynoStoreError):
                    await self.registry.write_drain_progress(progress)  # what is left, before the first move
                if not todo:
                    progress.done, progress.finished = True, time.time()
                    progress.stuck_objects, progress.stuck_keys = 0, []
                    log.info("Drain of container %s done: no record names it.", container_id)
                    return
                progress.done = False
                stuck: list[str] = []
                moved = 0
                for start in range(0, len(todo), PARALLEL_MOVES):
                    if container_id not in await self.registry.drains():
                        log.info("Drain of container %s stopped.", container_id)
                        return
                    window = [key for key, _, _ in todo[start : start + PARALLEL_MOVES]]
                    outcomes = await asyncio.gather(*(self._move(k, token, container_id, pace) for k in window))
                    for key, outcome in zip(window, outcomes, strict=True):
                        if outcome is None:
                            continue
                        moved += outcome.chunks
                        self._count(progress, outcome)
                        if outcome.stuck:
                            stuck.append(key)
                progress.stuck_objects, progress.stuck_keys = len(stuck), stuck[:STUCK_KEYS_KEPT]
                if not moved:  # nothing more can move now; the mover tries again later
                    if stuck:
                        log.warning(
                            "Drain of container %s: %d object(s) have a chunk no other container can take; "
                            "they keep it there (e.g. %s).",
                            container_id,
                            len(stuck),
                            ", ".join(stuck[:3]),
                        )
                    return

        ran = await self._locked(keys.drain_lock(container_id), progress, self.registry.write_drain_progress, body)
        return None if ran is None else progress.done

    async def _holding(self, container_id: str) -> list[tuple[str, int, int]]:
        """``(key, chunks, bytes)`` of every object whose record names ``container_id`` for a chunk."""
        found = []
        async for record in self.registry.object_records():
            if record.inline:
                continue
            n = sum(1 for cid, _ in record.chunks if cid == container_id)
            if n:
                found.append((record.key, n, n * chunk_bytes(record)))
        return found

    async def _move(
        self, key: str, token: str, source: str, pace: Bandwidth, allowed: list[str] | None = None
    ) -> MoveOutcome | None:
        """Move one object's chunks off ``source`` (with ``allowed``: one, as a rebalance); None if not now."""
        rebalance = allowed is not None
        try:
            return await move_chunks(
                self.pipeline,
                key,
                token,
                source,
                bandwidth=pace,
                allowed=allowed,
                keep_sites=rebalance,
                limit=1 if rebalance else 0,
            )
        except NotFound:
            return None  # evicted meanwhile
        except FailedPrecondition:
            return None  # changed meanwhile: the next pass takes it again
        except DynoStoreError as exc:
            log.warning("Could not move the chunks of %s off container %s: %s", key, source, exc)
            return None

    @staticmethod
    def _count(progress: MoveProgress, outcome: MoveOutcome) -> None:
        if outcome.chunks:
            progress.objects_moved += 1
            progress.chunks_moved += outcome.chunks
            progress.bytes_moved += outcome.bytes
            progress.chunks_left = max(progress.chunks_left - outcome.chunks, 0)
            progress.bytes_left = max(progress.bytes_left - outcome.bytes, 0)

    # rebalance ----------------------------------------------------------------

    async def _rebalance(self, token: str) -> bool | None:
        """Move chunks from the fullest containers to the emptiest until used space is even; True when done.

        None if another gateway runs it.
        """
        request = await self.registry.rebalance_request()
        if request is None:
            return True
        progress = MoveProgress(gateway=self.gateway, started=request["started"], bandwidth=request["bandwidth"])
        old = await self.registry.rebalance_progress()
        if old.started == request["started"]:
            progress.objects_moved, progress.chunks_moved = old.objects_moved, old.chunks_moved
            progress.bytes_moved = old.bytes_moved
        pace = Bandwidth(request["bandwidth"])

        async def body() -> None:
            while True:
                moved = await self._rebalance_pass(token, progress, pace)
                if moved is None:
                    return  # stopped
                if not moved:
                    progress.done, progress.finished = True, time.time()
                    await self.registry.clear_rebalance()
                    log.info("Rebalance done: %d chunk(s) moved.", progress.chunks_moved)
                    return

        ran = await self._locked(keys.rebalance_lock(), progress, self.registry.write_rebalance_progress, body)
        return None if ran is None else progress.done

    async def _rebalance_pass(self, token: str, progress: MoveProgress, pace: Bandwidth) -> int | None:
        """One pass over the records; the chunks it moved (None if the rebalance was stopped).

        Moves are chosen one by one as if each before succeeded (a failed one
        is given back), and run ``PARALLEL_MOVES`` at a time.
        """
        drained = set(await self.registry.drains())
        containers = {
            c["id"]: c
            for c in await self.registry.containers()
            if c["id"] not in drained and int(c.get("capacity_bytes", 0)) > 0
        }
        capacity = {cid: int(c["capacity_bytes"]) for cid, c in containers.items()}
        site = {cid: str(c.get("site", "")) for cid, c in containers.items()}
        used = dict.fromkeys(capacity, 0)
        objects: list[tuple[str, list[str], int]] = []
        async for record in self.registry.object_records():
            if record.inline:
                continue
            size = chunk_bytes(record)
            holders = [cid for cid, stored in record.chunks if stored]
            for cid in holders:
                if cid in used:
                    used[cid] += size
            objects.append((record.key, [cid for cid, _ in record.chunks], size))
        if len(capacity) < 2:
            return 0
        share = sum(used.values()) / sum(capacity.values())
        # Bytes a container holds beyond (positive) or below (negative) the fabric's mean share.
        excess = {cid: used[cid] - share * capacity[cid] for cid in capacity}
        progress.bytes_left = int(sum(e for e in excess.values() if e > 0))

        def pick(holders: list[str], size: int) -> tuple[str, str] | None:
            """The fullest source holding a chunk, and the emptiest target that may take it, or None."""
            sources = sorted((c for c in holders if excess.get(c, 0) > size / 2), key=lambda c: -excess[c])
            if not sources:
                return None
            per_site = Counter(site[c] for c in holders if c in site)
            source = sources[0]
            targets = [
                c
                for c in capacity
                if c not in holders
                and excess[c] + size <= size / 2
                and (site[c] == site[source] or per_site[site[c]] + 1 <= per_site[site[source]])
            ]
            return (source, min(targets, key=lambda c: excess[c])) if targets else None

        moved = 0
        window: list[tuple[str, str, str, int]] = []  # key, source, target, chunk bytes

        async def run() -> None:
            nonlocal moved
            outcomes = await asyncio.gather(*(self._move(k, token, s, pace, [t]) for k, s, t, _ in window))
            for (_, source, target, size), outcome in zip(window, outcomes, strict=True):
                if outcome is None or not outcome.chunks:
                    excess[source] += size  # not moved: give it back
                    excess[target] -= size
                    continue
                moved += outcome.chunks
                self._count(progress, outcome)
            progress.bytes_left = int(sum(e for e in excess.values() if e > 0))
            window.clear()

        for key, holders, size in objects:
            chosen = pick(holders, size)
            if chosen is None:
                continue
            source, target = chosen
            excess[source] -= size
            excess[target] += size
            window.append((key, source, target, size))
            if len(window) == PARALLEL_MOVES:
                if await self.registry.rebalance_request() is None:
                    return None
                await run()
        if window:
            await run()
        return moved


def _name(container_id: str) -> str:
    return f"drain of container {container_id}" if container_id else "rebalance"


class MoveCalls(GatewayCalls):
    """DrainContainer, RemoveContainer and Rebalance (admin only)."""

    # Set by the server once it serves (the mover runs the client pipeline against this gateway).
    mover: Mover | None = None

    async def _known_container(self, container_id: str) -> tuple[str, bool]:
        """A validated container id the fabric knows, and whether it is registered now.

        Raises:
            NotFound: no container of that id ever registered (or it was removed).
        """
        validation.container_id(container_id)
        live = {c["id"] for c in await self.registry.containers()}
        if container_id not in live and container_id not in await self.registry.known_containers():
            raise NotFound(f"No container {container_id} is known to the fabric.")
        return container_id, container_id in live

    async def DrainContainer(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.DrainContainerRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.MoveStatus:
        await self._admin(context)
        container_id, _ = await self._known_container(request.container_id)
        Bandwidth(request.bandwidth)  # validates it
        if request.stop:
            await self.registry.clear_drain(container_id)
        else:
            await self.registry.set_drain(container_id, request.bandwidth, time.time())
        self._drained_read = 0.0  # this gateway honours the flag at once
        progress = (await self.registry.drain_progresses()).get(container_id)
        flag = (await self.registry.drains()).get(container_id)
        if flag is not None and (progress is None or progress.started != flag["started"]):
            progress = MoveProgress(container_id=container_id, started=flag["started"], bandwidth=flag["bandwidth"])
        if flag is not None and self.mover is not None:
            self.mover.start(container_id, self.mover.token or _token_from(context))
        return move_status(progress or MoveProgress(container_id=container_id), active=flag is not None)

    async def RemoveContainer(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RemoveContainerRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RemoveContainerResponse:
        await self._admin(context)
        container_id, up = await self._known_container(request.container_id)
        named = objects = 0
        async for record in self.registry.object_records():
            n = sum(1 for cid, _ in record.chunks if cid == container_id)
            named, objects = named + n, objects + bool(n)
        if named and not request.force:
            raise FailedPrecondition(
                f"{named} chunk(s) of {objects} object(s) are still recorded on container {container_id}: "
                f"drain it first (dynostore container drain {container_id}), or force the removal "
                "(those chunks then count as lost, and repair rebuilds them from the others)."
            )
        if up:
            raise FailedPrecondition(
                f"Container {container_id} is registered: stop its daemon first (its registration lapses "
                f"within {self.policy.container_ttl} s), then remove it; a running container registers again."
            )
        await self.registry.forget_container(container_id)
        log.info("Container %s forgotten (%d chunk(s) still recorded on it).", container_id, named)
        return gateway_pb2.RemoveContainerResponse(chunks_named=named)

    async def Rebalance(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RebalanceRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.MoveStatus:
        await self._admin(context)
        Bandwidth(request.bandwidth)  # validates it
        if request.stop:
            await self.registry.clear_rebalance()
            return move_status(await self.registry.rebalance_progress(), active=False)
        wanted = await self.registry.set_rebalance(request.bandwidth, time.time())
        progress = await self.registry.rebalance_progress()
        if progress.started != wanted["started"]:
            progress = MoveProgress(started=wanted["started"], bandwidth=wanted["bandwidth"])
        if self.mover is not None:
            self.mover.start("", self.mover.token or _token_from(context))
        return move_status(progress, active=True)
