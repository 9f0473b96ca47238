"""Repair: rebuild an object's missing or damaged chunks from the ones that remain.

The object is read through the get pipeline (parity where needed) and
re-encoded; the lost fragments are streamed to live containers and the
gateway records them with ``CommitRepair``. The gateway's repair sweeps and
``dynostore repair`` both come here.

Where a rebuilt chunk goes keeps the object spread, one chunk per container:

* a chunk lost on a container that is live (damaged, vanished, or never
  written at put time) is rewritten on that container, in place of the
  damaged copy (the write asks the container to ``replace``: the new copy is
  made durable, then takes the old one's place);
* a chunk whose container is gone goes to a live container holding no chunk
  of the object, on the site holding the fewest;
* where no such container is left, durability comes first: the chunk goes to
  the live container holding the fewest chunks of it, and the repair logs
  that the object is under-spread. A later repair (the sweeps do it by
  themselves) moves a chunk off a shared container as soon as a container
  holding none is live, returned or new;
* a container being drained takes no chunk (not even in place); the chunks
  it holds count as held until the drain moves them (:mod:`.moves`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from dynostore import validation
from dynostore._proto import common_pb2, container_pb2, gateway_pb2
from dynostore.client.chunks import ChunkWriter, chunk_key, verified_data, whole_fragment
from dynostore.client.upload import COMMIT_REFUSALS
from dynostore.erasure import Codec
from dynostore.errors import DataLoss, FailedPrecondition, NotFound, ResourceExhausted, Unavailable
from dynostore.rpc import from_rpc_error
from dynostore.rpc.requests import request_metadata

if TYPE_CHECKING:
    from dynostore.client.pipeline import Pipeline, Progress
    from dynostore.client.placement import PlacementPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Target:
    """Where one chunk is rewritten."""

    index: int
    container: common_pb2.ContainerInfo
    # The container the record names for this chunk: the new copy replaces the old one there.
    in_place: bool
    # A copy to delete once the new one is recorded (a damaged one, or one leaving a shared container).
    old_address: str = ""


@dataclass
class _Layout:
    """The plan of a repair: which chunks go where, and which containers still hold several."""

    targets: list[_Target]
    # Container id -> the chunk indexes it holds, for containers that hold more than one.
    shared: dict[str, list[int]]


async def repair(
    pipeline: Pipeline, key: str, token: str, progress: Progress | None = None, *, verify: bool = False
) -> int:
    """Rebuild the chunks of an object that are missing or on containers no longer live.

    With ``verify``, every chunk on a live container is read in full first,
    and those that are gone or fail a checksum are rebuilt too. A chunk lost
    on a live container is rewritten there, replacing the damaged copy; one
    on a container that is gone goes to a live container holding no chunk of
    the object. Where none is left, the chunk goes to a container holding
    another one (the object is then under-spread, which is logged as a
    warning), and a chunk sharing a container is moved to a container
    holding none once there is one. The gateway records the new places.
    Returns how many chunks were written (0 when nothing was to do, or the
    object is inline).

    Raises:
        DataLoss: fewer than k chunks are readable.
        NotFound: the object was evicted meanwhile.
        Unavailable: some replacement chunks could not be written (the others are recorded).
        FailedPrecondition: the object's chunks were moved meanwhile (by another repair), or it was replaced.
        ResourceExhausted: no live container has room for a chunk.
    """
    validation.key(key)
    validation.token(token)
    plan = await pipeline.call(pipeline.gateway_stub().PlanRepair, gateway_pb2.PlanRepairRequest(key=key), token)
    location = plan.location
    if location.inline:
        return 0
    damaged = await _damaged_chunks(pipeline, location) if verify else {}
    codec = Codec(location.policy.k, location.policy.m)
    chunk_bytes = codec.fragment_size(location.policy.segment_size) * max(
        1, -(-location.object.size // location.policy.segment_size)
    )
    layout = _layout(pipeline.placement, location, plan.containers, damaged, chunk_bytes, plan.draining)
    _warn_if_shared(key, layout.shared, len(plan.containers))
    targets = layout.targets
    if not targets:
        return 0
    writers = [
        ChunkWriter(
            pipeline.container_stub(t.container.address),
            chunk_key(location),
            t.index,
            pipeline.queue_depth,
            t.container.id,
            plan.write_ticket,
            replace=True,  # a copy there is damaged, or garbage no record relies on
        )
        for t in targets
    ]
    # Copies to drop if the repair fails: never one written in place, which stands for the record's own.
    written_elsewhere = [t for t in targets if not t.in_place]
    for w in writers:
        w.start()
    try:
        try:
            async for segment in pipeline.read(_readable(location, set(damaged)), progress):
                fragments = codec.encode(segment)
                await asyncio.gather(*(w.send(fragments[w.index], pipeline.fragment_timeout) for w in writers))
        except DataLoss:
            await _changed_meanwhile(pipeline, key, location, token)
            raise
        await asyncio.gather(*(w.finish(pipeline.fragment_timeout) for w in writers))
    except BaseException:
        await asyncio.gather(*(w.cancel() for w in writers))
        await _discard(pipeline, plan, written_elsewhere, token)
        raise
    done = [t for w, t in zip(writers, targets, strict=True) if w.error is None]
    rebuilt = [common_pb2.ChunkLocation(index=t.index, container_id=t.container.id, stored=True) for t in done]
    if rebuilt:
        try:
            await _commit_repair(pipeline, plan, rebuilt, token)
        except COMMIT_REFUSALS:
            await _discard(pipeline, plan, written_elsewhere, token)
            raise
        except BaseException as exc:
            # Unavailable, timed out, cancelled: the commit may still land and name these copies.
            if written_elsewhere:
                log.warning(
                    "The commit of a repair of %s ended in %s, which leaves open whether it landed; "
                    "its %d new copies are left to the containers' garbage collection, which checks first.",
                    key,
                    type(exc).__name__,
                    len(written_elsewhere),
                )
            raise
    await pipeline.delete_chunks(
        chunk_key(location), plan.write_ticket, [(t.index, t.old_address) for t in done if t.old_address]
    )
    failed = [f"chunk {w.index} (to container {w.container_id}): {w.error}" for w in writers if w.error]
    if failed:
        raise Unavailable(f"Rebuilt {len(rebuilt)} of {len(writers)} chunks of {key}; " + "; ".join(failed))
    return len(rebuilt)


async def _changed_meanwhile(pipeline: Pipeline, key: str, location: gateway_pb2.Location, token: str) -> None:
    """After a repair's read found chunks gone: raise what happened if the object was evicted or changed.

    Raises:
        NotFound: it was evicted meanwhile (its chunks went with it).
        FailedPrecondition: it was replaced, or its chunks moved.
    """
    try:
        now = await pipeline.locate_one(key, token, fresh=True)
    except NotFound:
        raise NotFound(f"Object {key} was evicted while it was repaired.") from None
    if chunk_key(now) != chunk_key(location) or list(now.chunks) != list(location.chunks):
        raise FailedPrecondition(
            f"Object {key} changed while it was repaired (replaced, or its chunks moved); repair it again."
        ) from None


def _layout(
    placement: PlacementPolicy,
    location: gateway_pb2.Location,
    containers: Sequence[common_pb2.ContainerInfo],
    damaged: dict[int, str],
    chunk_bytes: int,
    draining: Sequence[common_pb2.ContainerInfo] = (),
) -> _Layout:
    """Decide where each lost chunk is rewritten and which chunks leave a shared container.

    Chunks on ``draining`` containers are good (they stay until the drain
    moves them), but nothing is written there, not even in place.

    Raises:
        ResourceExhausted: a chunk has nowhere to go (no live container has room).
    """
    live = {c.id: c for c in containers}
    readable = {**{c.id: c for c in draining}, **live}
    chunks = sorted(location.chunks, key=lambda c: c.index)
    good = {
        c.index: c for c in chunks if c.stored and c.address and c.container_id in readable and c.index not in damaged
    }
    # Where each chunk of the object will be: container id -> indexes.
    held: dict[str, list[int]] = {}
    for c in good.values():
        held.setdefault(c.container_id, []).append(c.index)
    per_site = Counter(readable[cid].site for cid in held for _ in held[cid])
    targets: list[_Target] = []

    def room(c: common_pb2.ContainerInfo) -> bool:
        return c.capacity_bytes == 0 or c.free_bytes >= chunk_bytes

    def assign(index: int, container: common_pb2.ContainerInfo, recorded: str, old_address: str = "") -> None:
        in_place = container.id == recorded
        targets.append(_Target(index, container, in_place, "" if in_place else old_address))
        held.setdefault(container.id, []).append(index)
        per_site[container.site] += 1

    def choose(candidates: Sequence[common_pb2.ContainerInfo]) -> common_pb2.ContainerInfo | None:
        """The candidate holding the fewest chunks of the object, on the site holding the fewest, drawn by placement."""
        usable = [c for c in candidates if room(c)]
        if not usable:
            return None
        rank = min((len(held.get(c.id, ())), per_site[c.site]) for c in usable)
        pool = [c for c in usable if (len(held.get(c.id, ())), per_site[c.site]) == rank]
        return placement.place(pool, 1, chunk_bytes)[0]

    lost = [c for c in chunks if c.index not in good]
    homeless = []
    for c in lost:  # lost on a live container holding no other chunk of it: rewrite it there
        home = live.get(c.container_id)
        if home is not None and not held.get(home.id) and room(home):
            assign(c.index, home, c.container_id)
        else:
            homeless.append(c)
    for c in homeless:  # elsewhere: a container holding none, else (durability first) the fewest
        home = live.get(c.container_id)
        fresh = [x for x in containers if not held.get(x.id)]
        target = choose(fresh) or (home if home is not None and room(home) else None) or choose(containers)
        if target is None:
            raise ResourceExhausted(
                f"No live container has room for chunk {c.index} of {location.object.key} "
                f"({chunk_bytes} bytes; {len(containers)} containers live)."
            )
        assign(c.index, target, c.container_id, damaged.get(c.index, ""))
    # Chunks sharing a container move to containers holding none, while there are some.
    for cid, indexes in list(held.items()):
        for index in [i for i in indexes if i in good][: len(indexes) - 1]:
            per_site[readable[cid].site] -= 1  # as if it had left, for the choice of site
            target = choose([x for x in containers if not held.get(x.id)])
            if target is None:
                per_site[readable[cid].site] += 1
                break
            indexes.remove(index)
            assign(index, target, cid, readable[cid].address)
    return _Layout(targets, {cid: sorted(i) for cid, i in held.items() if len(i) > 1})


async def _discard(
    pipeline: Pipeline, plan: gateway_pb2.PlanRepairResponse, copies: Sequence[_Target], token: str
) -> None:
    """Delete the copies a failed repair wrote, except those the object's record relies on now.

    A concurrent repair may have recorded the same chunk on the same
    container (its bytes are the same); when the record cannot be read, the
    copies stay for the containers' garbage collection, which checks first.
    """
    if not copies:
        return
    key = plan.location.object.key
    try:
        now = await pipeline.call(pipeline.gateway_stub().PlanRepair, gateway_pb2.PlanRepairRequest(key=key), token)
        relied = {(c.index, c.container_id) for c in now.location.chunks if c.stored}
        if now.location.object.version != plan.location.object.version:
            relied = set()  # replaced meanwhile: the copies were of the old version
    except NotFound:
        relied = set()  # evicted meanwhile: every copy is garbage
    except Exception:
        return
    doomed = [(t.index, t.container.address) for t in copies if (t.index, t.container.id) not in relied]
    await pipeline.delete_chunks(chunk_key(plan.location), plan.write_ticket, doomed)


def _warn_if_shared(key: str, shared: dict[str, list[int]], live: int) -> None:
    """Log that an object has chunks sharing a container (it then survives fewer container losses)."""
    if not shared:
        return
    where = "; ".join(f"chunks {', '.join(map(str, i))} on container {cid}" for cid, i in shared.items())
    log.warning(
        "Object %s is under-spread: %s. No other of the %d live containers can take one (each holds a chunk "
        "of it or lacks room), so the object survives fewer container losses until a container joins or "
        "returns; a repair (the gateway's sweeps do it) then moves them apart.",
        key,
        where,
        live,
    )


def _readable(location: gateway_pb2.Location, damaged: set[int]) -> gateway_pb2.Location:
    """``location`` without the damaged chunks (no address), so that the read skips them, if k others remain.

    A read of a damaged chunk would fail, after the container took note of
    it (and it would then delete the copy, which may be the rebuilt one by
    then). With fewer than k others, the damaged ones are read too: each may
    still be good for some segments.
    """
    others = sum(1 for c in location.chunks if c.stored and c.address and c.index not in damaged)
    if not damaged or others < location.policy.k:
        return location
    copy = gateway_pb2.Location()
    copy.CopyFrom(location)
    for chunk in copy.chunks:
        if chunk.index in damaged:
            chunk.address = ""
    return copy


async def _commit_repair(
    pipeline: Pipeline, plan: gateway_pb2.PlanRepairResponse, rebuilt: list[common_pb2.ChunkLocation], token: str
) -> None:
    """Record the rebuilt chunks at the revision the repair was planned at.

    If the record changed meanwhile, but every chunk is still recorded on the
    container it was planned on (a container reporting damage only marks a
    chunk missing), commit again at the new revision. Any other change (a
    chunk moved, by another repair) raises FailedPrecondition: committing
    then could put two chunks on one container.
    """
    key = plan.location.object.key
    planned = {c.index: c.container_id for c in plan.location.chunks}
    revision = plan.revision
    for _ in range(5):
        request = gateway_pb2.CommitRepairRequest(key=key, revision=revision, chunks=rebuilt)
        try:
            await pipeline.call(pipeline.gateway_stub().CommitRepair, request, token)
            return
        except FailedPrecondition:
            now = await pipeline.call(pipeline.gateway_stub().PlanRepair, gateway_pb2.PlanRepairRequest(key=key), token)
            moved = {c.index: c.container_id for c in now.location.chunks} != planned
            if moved or now.location.object.version != plan.location.object.version:
                raise  # moved by another repair, or replaced by a new version
            revision = now.revision
    raise FailedPrecondition(f"Object {key} kept changing while it was repaired; repair it again.")


async def _damaged_chunks(pipeline: Pipeline, location: gateway_pb2.Location) -> dict[int, str]:
    """Chunks on live containers that are gone or fail a checksum: index -> their container's address.

    Every fragment of every such chunk is read, quietly: the containers do
    not report what this finds (the repair rebuilds it, and a container
    deletes a copy it reported, which could be the rebuilt one by then). A
    container that cannot be reached now is not taken as proof of damage.
    """
    key = chunk_key(location)
    count = max(1, -(-location.object.size // location.policy.segment_size))
    timeout = pipeline.fragment_timeout

    def bad(error: Exception | None) -> bool:
        return isinstance(error, DataLoss | NotFound)

    async def whole(chunk: common_pb2.ChunkLocation) -> bool:
        header = container_pb2.ChunkHeader(key=key, index=chunk.index, ticket=location.chunk_ticket, quiet=True)
        request = container_pb2.ReadChunksRequest(chunks=[header])
        try:
            reply = await pipeline.container_stub(chunk.address).ReadChunks(
                request, timeout=timeout, metadata=request_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            return bad(from_rpc_error(exc))
        return bad(whole_fragment(reply.results[0])[1])

    async def streamed(chunk: common_pb2.ChunkLocation) -> bool:
        request = container_pb2.GetChunkRequest(key=key, index=chunk.index, ticket=location.chunk_ticket, quiet=True)
        call = pipeline.container_stub(chunk.address).GetChunk(request, metadata=request_metadata())
        stream = aiter(call)
        try:
            for _ in range(count):
                verified_data(await asyncio.wait_for(anext(stream), timeout))
        except (StopAsyncIteration, DataLoss):
            return True  # ended early, or a fragment failed its checksum
        except TimeoutError:
            return False
        except grpc.aio.AioRpcError as exc:
            return bad(from_rpc_error(exc))
        finally:
            call.cancel()
        return False

    live = [c for c in location.chunks if c.stored and c.address]
    verdicts = await asyncio.gather(*((whole if count == 1 else streamed)(c) for c in live))
    return {c.index: c.address for c, damaged in zip(live, verdicts, strict=True) if damaged}
