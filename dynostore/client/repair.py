"""Repair: rebuild an object's missing or damaged chunks from the ones that remain.

The object is read through the get pipeline (parity where needed), re-encoded,
and the lost fragments are streamed to live containers; the gateway records
them with ``CommitRepair``. The gateway's repair sweeps and ``dynostore
repair`` both come here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from dynostore import validation
from dynostore._proto import common_pb2, gateway_pb2
from dynostore.client.chunks import ChunkReader, ChunkWriter, WholeChunkReader
from dynostore.erasure import Codec
from dynostore.errors import DataLoss, FailedPrecondition, NotFound, Unavailable

if TYPE_CHECKING:
    from dynostore.client.pipeline import Pipeline, Progress


async def repair(
    pipeline: Pipeline, key: str, token: str, progress: Progress | None = None, *, verify: bool = False
) -> int:
    """Rebuild the chunks of an object that are missing or on containers no longer live.

    With ``verify``, every chunk on a live container is read in full first,
    and those that are gone or fail a checksum are rebuilt too (their
    damaged copies are then deleted). The object is read (through parity
    where needed) and re-encoded; the missing fragments go to live
    containers, preferably ones holding no chunk of it, and the gateway
    records them. Returns how many chunks were rebuilt (0 when nothing was
    missing, or the object is inline).

    Raises:
        DataLoss: fewer than k chunks are readable.
        Unavailable: some replacement chunks could not be written (the others are recorded).
        FailedPrecondition: a chunk it rebuilt was moved meanwhile (by another repair).
    """
    validation.key(key)
    validation.token(token)
    plan = await pipeline.call(pipeline.gateway_stub().PlanRepair, gateway_pb2.PlanRepairRequest(key=key), token)
    location = plan.location
    if location.inline:
        return 0
    damaged = await _damaged_chunks(pipeline, location) if verify else {}
    missing = [c.index for c in location.chunks if not c.address or c.index in damaged]
    if not missing:
        return 0
    holders = {c.container_id for c in location.chunks}
    fresh = [c for c in plan.containers if c.id not in holders]
    codec = Codec(location.policy.k, location.policy.m)
    chunk_bytes = codec.fragment_size(location.policy.segment_size) * max(
        1, -(-location.object.size // location.policy.segment_size)
    )
    targets = pipeline.placement.place(fresh or plan.containers, len(missing), chunk_bytes)
    writers = [
        ChunkWriter(pipeline.container_stub(t.address), key, index, pipeline.queue_depth, t.id, plan.write_ticket)
        for index, t in zip(missing, targets, strict=True)
    ]
    replacements = [(index, t.address) for index, t in zip(missing, targets, strict=True)]
    for w in writers:
        w.start()
    try:
        async for segment in pipeline.read(location, progress):
            fragments = codec.encode(segment)
            await asyncio.gather(*(w.send(fragments[w.index], pipeline.fragment_timeout) for w in writers))
        await asyncio.gather(*(w.finish(pipeline.fragment_timeout) for w in writers))
    except BaseException:
        await asyncio.gather(*(w.cancel() for w in writers))
        await pipeline.delete_chunks(key, plan.write_ticket, replacements)
        raise
    rebuilt = [
        common_pb2.ChunkLocation(index=w.index, container_id=t.id, stored=True)
        for w, t in zip(writers, targets, strict=True)
        if w.error is None
    ]
    if rebuilt:
        try:
            await _commit_repair(pipeline, plan, rebuilt, token)
        except BaseException:
            await pipeline.delete_chunks(key, plan.write_ticket, replacements)
            raise
    await pipeline.delete_chunks(
        key, plan.write_ticket, [(c.index, damaged[c.index]) for c in rebuilt if c.index in damaged]
    )
    failed = [f"chunk {w.index}: {w.error}" for w in writers if w.error is not None]
    if failed:
        raise Unavailable(f"Rebuilt {len(rebuilt)} of {len(writers)} chunks of {key}; " + "; ".join(failed))
    return len(rebuilt)


async def _commit_repair(
    pipeline: Pipeline, plan: gateway_pb2.PlanRepairResponse, rebuilt: list[common_pb2.ChunkLocation], token: str
) -> None:
    """Record the rebuilt chunks at the revision the repair was planned at.

    If the record changed meanwhile, but every rebuilt chunk is still
    recorded on the container it was planned on (a container reporting the
    damage this repair found only marks it missing), commit again at the
    new revision. Any other change raises FailedPrecondition.
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
            holders = {c.index: c.container_id for c in now.location.chunks}
            if any(holders.get(c.index) != planned[c.index] for c in rebuilt):
                raise
            revision = now.revision
    raise FailedPrecondition(f"Object {key} kept changing while it was repaired; repair it again.")


async def _damaged_chunks(pipeline: Pipeline, location: gateway_pb2.Location) -> dict[int, str]:
    """Chunks on live containers that are gone or fail a checksum: index -> their container's address.

    Every fragment of every such chunk is read. A container that cannot be
    reached now is not taken as proof of damage.
    """
    count = max(1, -(-location.object.size // location.policy.segment_size))
    reader_type = WholeChunkReader if count == 1 else ChunkReader

    async def damaged(chunk: common_pb2.ChunkLocation) -> bool:
        stub = pipeline.container_stub(chunk.address)
        reader = reader_type(stub, location.object.key, chunk.index, 0, ticket=location.chunk_ticket)
        try:
            for _ in range(count):
                if await reader.next(pipeline.fragment_timeout) is None:
                    return isinstance(reader.error, DataLoss | NotFound)
            return False
        finally:
            await reader.close()

    live = [c for c in location.chunks if c.address]
    verdicts = await asyncio.gather(*(damaged(c) for c in live))
    return {c.index: c.address for c, bad in zip(live, verdicts, strict=True) if bad}
