"""Moving chunks between containers without ever making an object less redundant (drain, rebalance).

One object at a time, for the chunks it has on a source container:

1. ``PlanRepair`` gives the chunk locations, the containers that may take a
   chunk (draining ones are left out) and the record's revision;
2. each chunk gets a target holding no chunk of the object, on the site
   holding the fewest of them (for a rebalance, never a site that would then
   hold more of them than the source's site did);
3. the chunk is copied fragment by fragment (each fragment's CRC verified),
   or, when the copy cannot be read, rebuilt from the other chunks;
4. the new places are committed with ``CommitRepair`` at the planned revision
   (a compare-and-swap on the record);
5. only then is the old copy deleted.

A failure before the commit deletes the new copies (those no record relies
on) and leaves the object as it was. A chunk that no container can take stays
where it is and the object is reported as stuck.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from dynostore._proto import common_pb2, container_pb2, gateway_pb2
from dynostore.client.chunks import ChunkWriter, chunk_key, verified_data, whole_fragment
from dynostore.client.repair import _commit_repair, _discard, _Target
from dynostore.erasure import Codec
from dynostore.errors import DataLoss, InvalidArgument, Unavailable
from dynostore.rpc import from_rpc_error

if TYPE_CHECKING:
    from dynostore.client.pipeline import Pipeline

# The lowest bandwidth limit accepted (bytes per second): below it a drain would never end.
MIN_BANDWIDTH = 4096


def chunk_size(codec: Codec, segment_size: int, size: int) -> int:
    """The bytes of one chunk of an object of ``size`` bytes: one fragment per segment, the last one shorter."""
    full, rest = divmod(size, segment_size)
    return full * codec.fragment_size(segment_size) + (codec.fragment_size(rest) if rest or not full else 0)


class Bandwidth:
    """Paces the bytes moved to at most ``rate`` per second on average (0: no limit)."""

    def __init__(self, rate: int = 0) -> None:
        """Allow ``rate`` bytes per second (0: unlimited).

        Raises:
            InvalidArgument: ``rate`` is negative or below :data:`MIN_BANDWIDTH`.
        """
        if rate < 0 or 0 < rate < MIN_BANDWIDTH:
            raise InvalidArgument(f"A bandwidth limit must be 0 (none) or at least {MIN_BANDWIDTH} B/s, not {rate}.")
        self.rate = rate
        self._free_at = time.monotonic()

    async def take(self, size: int) -> None:
        """Wait until ``size`` more bytes may be sent."""
        if not self.rate:
            return
        now = time.monotonic()
        start = max(now, self._free_at)
        self._free_at = start + size / self.rate
        if start > now:
            await asyncio.sleep(start - now)


@dataclass
class MoveOutcome:
    """What moving one object's chunks off a container did."""

    chunks: int = 0
    bytes: int = 0
    # Chunks that stayed (no container could take them), by index.
    stuck: list[int] = field(default_factory=list)
    # Chunks rebuilt from the others because their copy could not be read.
    rebuilt: int = 0
    # The containers that took the moved chunks, in order.
    targets: list[str] = field(default_factory=list)


async def move_chunks(
    pipeline: Pipeline,
    key: str,
    token: str,
    source: str,
    *,
    bandwidth: Bandwidth | None = None,
    allowed: Collection[str] | None = None,
    keep_sites: bool = False,
    limit: int = 0,
) -> MoveOutcome:
    """Move the chunks of object ``key`` recorded on container ``source`` to other containers.

    ``allowed`` restricts the targets (default: every container that may take
    chunks); ``keep_sites`` refuses a target whose site would then hold more
    chunks of the object than the source's site held (a rebalance must not
    concentrate an object); ``limit`` moves at most that many chunks (0: all).
    Returns what moved and which chunks had nowhere to go.

    Raises:
        FailedPrecondition: the object changed meanwhile (nothing was committed; try again).
        NotFound: the object is gone.
        DataLoss: a chunk could not be copied, and fewer than k others are readable.
        Unavailable: a new copy could not be written (nothing was committed).
    """
    plan = await pipeline.call(pipeline.gateway_stub().PlanRepair, gateway_pb2.PlanRepairRequest(key=key), token)
    location = plan.location
    if location.inline:
        return MoveOutcome()
    leaving = [c for c in sorted(location.chunks, key=lambda c: c.index) if c.container_id == source]
    if limit:
        leaving = leaving[:limit]
    if not leaving:
        return MoveOutcome()
    codec = Codec(location.policy.k, location.policy.m)
    segments = max(1, -(-location.object.size // location.policy.segment_size))
    chunk_bytes = chunk_size(codec, location.policy.segment_size, location.object.size)
    targets, stuck = _targets(pipeline, plan, leaving, chunk_bytes, allowed, keep_sites)
    outcome = MoveOutcome(stuck=stuck)
    if not targets:
        return outcome
    pace = bandwidth or Bandwidth()
    written: list[_Target] = []
    try:
        for target, chunk in targets:
            rebuilt = await _copy_or_rebuild(pipeline, plan, chunk, target, segments, codec, pace)
            written.append(target)
            outcome.rebuilt += rebuilt
        moved = [common_pb2.ChunkLocation(index=t.index, container_id=t.container.id, stored=True) for t in written]
        await _commit_repair(pipeline, plan, moved, token)
    except BaseException:
        await _discard(pipeline, plan, written, token)
        raise
    # Committed: only now may the old copies go (a container that is down keeps them for its GC).
    await pipeline.delete_chunks(
        chunk_key(plan.location), plan.write_ticket, [(c.index, c.address) for _, c in targets if c.address]
    )
    outcome.chunks = len(written)
    outcome.bytes = chunk_bytes * len(written)
    outcome.targets = [t.container.id for t in written]
    return outcome


def _targets(
    pipeline: Pipeline,
    plan: gateway_pb2.PlanRepairResponse,
    leaving: list[common_pb2.ChunkLocation],
    chunk_bytes: int,
    allowed: Collection[str] | None,
    keep_sites: bool,
) -> tuple[list[tuple[_Target, common_pb2.ChunkLocation]], list[int]]:
    """A target container for each leaving chunk, and the indexes of those that have none."""
    sites = {c.id: c.site for c in [*plan.containers, *plan.draining]}
    holders = {c.container_id for c in plan.location.chunks}
    per_site = Counter(sites[c.container_id] for c in plan.location.chunks if c.container_id in sites)
    chosen: list[tuple[_Target, common_pb2.ChunkLocation]] = []
    stuck: list[int] = []
    for chunk in leaving:
        home_site = sites.get(chunk.container_id)
        before = per_site[home_site] if home_site is not None else len(plan.location.chunks)
        if home_site is not None:
            per_site[home_site] -= 1  # as if it had left, for the choice of site
        candidates = [
            c
            for c in plan.containers
            if c.id not in holders
            and (allowed is None or c.id in allowed)
            and (c.capacity_bytes == 0 or c.free_bytes >= chunk_bytes)
            and (not keep_sites or per_site[c.site] + 1 <= before)
        ]
        if not candidates:
            if home_site is not None:
                per_site[home_site] += 1
            stuck.append(chunk.index)
            continue
        fewest = min(per_site[c.site] for c in candidates)
        pool = [c for c in candidates if per_site[c.site] == fewest]
        target = pipeline.placement.place(pool, 1, chunk_bytes)[0]
        holders.add(target.id)
        per_site[target.site] += 1
        chosen.append((_Target(chunk.index, target, in_place=False), chunk))
    return chosen, stuck


async def _copy_or_rebuild(
    pipeline: Pipeline,
    plan: gateway_pb2.PlanRepairResponse,
    chunk: common_pb2.ChunkLocation,
    target: _Target,
    segments: int,
    codec: Codec,
    pace: Bandwidth,
) -> int:
    """Write ``chunk`` to ``target``: copied from its container, else rebuilt; 1 if rebuilt, else 0.

    Raises:
        DataLoss: the copy is unreadable and so are too many of the others.
        Unavailable: the target did not take the chunk.
    """
    if chunk.stored and chunk.address:
        try:
            await _write(pipeline, plan, target, _copied(pipeline, plan, chunk, segments), pace)
            return 0
        except _UnreadableError:
            pass  # rebuild it from the others
    await _write(pipeline, plan, target, _rebuilt(pipeline, plan.location, chunk.index, codec), pace)
    return 1


class _UnreadableError(Exception):
    """The chunk being copied could not be read (gone, damaged, its container down)."""


async def _write(
    pipeline: Pipeline,
    plan: gateway_pb2.PlanRepairResponse,
    target: _Target,
    fragments: AsyncIterator[bytes],
    pace: Bandwidth,
) -> None:
    """Stream ``fragments`` to the target as chunk ``target.index`` (replacing any stray copy there)."""
    key = chunk_key(plan.location)  # a version replaced by key keeps its chunks under its own key
    writer = ChunkWriter(
        pipeline.container_stub(target.container.address),
        key,
        target.index,
        pipeline.queue_depth,
        target.container.id,
        plan.write_ticket,
        replace=True,  # a copy there is garbage no record relies on (a failed earlier move)
    )
    writer.start()
    try:
        async for fragment in fragments:
            await pace.take(len(fragment))
            await writer.send(fragment, pipeline.fragment_timeout)
        await writer.finish(pipeline.fragment_timeout)
    except BaseException:
        await writer.cancel()
        raise
    if writer.error is not None:
        raise Unavailable(f"Container {target.container.id} did not take chunk {target.index} of {key}: {writer.error}")


async def _copied(
    pipeline: Pipeline, plan: gateway_pb2.PlanRepairResponse, chunk: common_pb2.ChunkLocation, segments: int
) -> AsyncIterator[bytes]:
    """The fragments of ``chunk`` read from its container, each verified (quietly: no damage report).

    Raises:
        _UnreadableError: a fragment is missing, fails its checksum, or does not come.
    """
    key = chunk_key(plan.location)  # a version replaced by key keeps its chunks under its own key
    ticket = plan.location.chunk_ticket
    stub = pipeline.container_stub(chunk.address)
    timeout = pipeline.fragment_timeout
    if segments == 1:
        header = container_pb2.ChunkHeader(key=key, index=chunk.index, ticket=ticket, quiet=True)
        try:
            reply = await stub.ReadChunks(container_pb2.ReadChunksRequest(chunks=[header]), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _UnreadableError(str(from_rpc_error(exc))) from None
        data, error = whole_fragment(reply.results[0])
        if data is None:
            raise _UnreadableError(str(error))
        yield data
        return
    request = container_pb2.GetChunkRequest(key=key, index=chunk.index, ticket=ticket, quiet=True)
    call = stub.GetChunk(request)
    stream = aiter(call)
    try:
        for _ in range(segments):
            try:
                reply = await asyncio.wait_for(anext(stream), timeout)
                data = bytes(verified_data(reply))
            except (StopAsyncIteration, DataLoss, TimeoutError) as exc:
                raise _UnreadableError(repr(exc)) from None
            except grpc.aio.AioRpcError as exc:
                raise _UnreadableError(str(from_rpc_error(exc))) from None
            yield data
    finally:
        call.cancel()


async def _rebuilt(
    pipeline: Pipeline, location: gateway_pb2.Location, index: int, codec: Codec
) -> AsyncIterator[bytes]:
    """Fragment ``index`` of every segment, re-encoded from the object read without that chunk.

    Raises:
        DataLoss: fewer than k other chunks are readable.
    """
    others = gateway_pb2.Location()
    others.CopyFrom(location)
    for c in others.chunks:
        if c.index == index:
            c.address = ""
    async for segment in pipeline.read(others):
        yield codec.encode(segment)[index]
