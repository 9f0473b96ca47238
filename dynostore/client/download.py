"""The get stage: locate, read data chunks (parity where one fails), verify and decode.

``DataLoss`` is raised only when more than m chunks of a segment are really
gone; chunks on containers that are down make a read ``Unavailable``, and a
read that finds its chunks deleted asks the gateway again (``NotFound`` for an
object evicted meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from dynostore import validation
from dynostore._proto import common_pb2, gateway_pb2
from dynostore.client.chunks import ChunkReader, ChunkRef, WholeChunkReader, chunk_key, read_whole_chunks
from dynostore.client.connection import GatewayConnection, Progress
from dynostore.erasure import Codec
from dynostore.erasure.checksum import checksum
from dynostore.errors import (
    DataLoss,
    DeadlineExceeded,
    DynoStoreError,
    FailedPrecondition,
    NotFound,
    Unavailable,
    error_for_code,
)
from dynostore.rpc import auth_metadata, from_rpc_error

log = logging.getLogger(__name__)
Reader = ChunkReader | WholeChunkReader
# Reads of a whole object that start again when a replacement overtakes them.
REPLACED_READS = 3


class ReplacedWhileReadError(FailedPrecondition):
    """The object was replaced (by key) after part of its old version had been handed out; read it again."""


class Downloader(GatewayConnection):
    """Gets objects through one gateway (see :class:`GatewayConnection` for the arguments)."""

    async def get(
        self, key: str, *, token: str, progress: Progress | None = None, start: int = 0
    ) -> AsyncIterator[bytes]:
        """Yield the object's bytes segment by segment, verified and decoded.

        ``start``: yield from this byte on; the segments before it are not
        read at all (through the relay, they are read and dropped).

        Raises:
            NotFound: no object has this key.
            DataLoss: fewer than k chunks can be read for some segment.
        """
        if self.relay:
            async for data in _from_byte(self._relay_get(key, token, progress), start):
                yield data
            return
        location = await self.locate_one(key, token)
        first = 0 if location.inline or not start else start // location.policy.segment_size
        skip = start - first * location.policy.segment_size if first else start
        async for segment in _from_byte(self.read_checked(location, token, progress, first), skip):
            yield segment

    async def read_checked(
        self, location: gateway_pb2.Location, token: str, progress: Progress | None = None, first_segment: int = 0
    ) -> AsyncIterator[bytes]:
        """:meth:`read`, asking the gateway again when chunks turn out lost.

        A get that races an evict finds the chunks deleted: that is ``NotFound``,
        not ``DataLoss``. A record that changed before anything was handed out
        (a repair moved chunks, or a put replaced the object and its old
        chunks went) is read once more: the new locations, or the new version.
        So is one whose read failed ``Unavailable`` (too few chunks read, some
        on containers away): the chunks it did not find may have moved.

        Raises:
            NotFound: the object was evicted while it was read.
            ReplacedWhileReadError: it was replaced after part of the old version was handed out.
            DataLoss: more than m chunks of a segment are really gone.
            Unavailable: too few chunks readable for now, some on containers away.
        """
        key = location.object.key
        yielded = False
        try:
            async for segment in self.read(location, progress, first_segment):
                yielded = True
                yield segment
            return
        except (DataLoss, Unavailable):
            try:
                # Not from the gateway's cache: it may not know yet of a replace or evict another made.
                now = await self.locate_one(key, token, fresh=True)
            except NotFound:
                raise NotFound(f"Object {key} was evicted while it was read.") from None
            replaced = chunk_key(now) != chunk_key(location) or now.inline != location.inline
            if yielded and replaced:
                raise ReplacedWhileReadError(f"Object {key} was replaced while it was read; read it again.") from None
            if yielded or (not replaced and list(now.chunks) == list(location.chunks)):
                raise
        async for segment in self.read(now, progress, first_segment):
            yield segment

    async def _relay_get(self, key: str, token: str, progress: Progress | None) -> AsyncIterator[bytes]:
        """An object's bytes through the gateway; each message must come within ``fragment_timeout``."""
        validation.key(key)
        validation.token(token)
        call = self._gateway().RelayGet(gateway_pb2.RelayGetRequest(key=key), metadata=auth_metadata(token))
        try:
            while True:
                try:
                    reply = await asyncio.wait_for(call.read(), self.fragment_timeout)
                except TimeoutError:
                    raise Unavailable(f"The gateway sent nothing of {key} for {self.fragment_timeout} s.") from None
                if reply is grpc.aio.EOF:  # read() raises for a stream that ended in an error
                    return
                if reply.data:
                    if progress:
                        progress(len(reply.data))
                    yield reply.data
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def get_many(self, keys: Sequence[str], token: str) -> list[list[bytes] | None]:
        """The segments of each object (joined, its bytes), None where no object has the key.

        One Locate call per group of objects; objects of one segment are read
        as whole chunks, batched per container, falling back to the per-object
        path (parity, retries) for any that miss a chunk. Segments are handed
        out unjoined so that the caller joins them in its own thread (see
        :meth:`Client.get`).

        Raises:
            PermissionDenied: an object belongs to another user.
            DataLoss: an object cannot be rebuilt.
        """
        if self.relay:
            return [await self._relay_get_or_none(key, token) for key in keys]
        locations = await self.locate(keys, token)
        results: list[list[bytes] | None] = [None] * len(keys)
        whole: list[int] = []
        for i, location in enumerate(locations):
            if location.code == NotFound.code.value[0]:
                continue
            if location.code:
                raise error_for_code(location.code, location.message)
            if location.inline:
                results[i] = [_inline_bytes(location)]
            elif location.object.size <= location.policy.segment_size:
                whole.append(i)
            else:
                results[i] = await self._read_or_none(location, token)
        for i, data in zip(whole, await self._read_whole([locations[i] for i in whole]), strict=True):
            results[i] = [data] if data is not None else await self._read_or_none(locations[i], token)
        return results

    async def _read_or_none(self, location: gateway_pb2.Location, token: str) -> list[bytes] | None:
        """The segments of one located object (its newest version if it is replaced meanwhile), None if evicted."""
        for attempt in range(REPLACED_READS):
            try:
                return [s async for s in self.read_checked(location, token)]
            except NotFound:
                return None
            except ReplacedWhileReadError:
                if attempt == REPLACED_READS - 1:
                    raise
                try:
                    location = await self.locate_one(location.object.key, token)
                except NotFound:
                    return None
        raise AssertionError("unreachable")

    async def get_whole(self, key: str, token: str) -> list[bytes]:
        """The segments of one object, read again from the start if it is replaced meanwhile.

        Raises:
            NotFound: no object has this key.
            ReplacedWhileReadError: it was replaced during each of ``REPLACED_READS`` reads.
            DataLoss: fewer than k chunks can be read for some segment.
        """
        for attempt in range(REPLACED_READS):
            try:
                return [s async for s in self.get(key, token=token)]
            except ReplacedWhileReadError:
                if attempt == REPLACED_READS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _relay_get_or_none(self, key: str, token: str) -> list[bytes] | None:
        try:
            return [data async for data in self._relay_get(key, token, None)]
        except NotFound:
            return None

    async def _read_whole(self, locations: list[gateway_pb2.Location]) -> list[bytes | None]:
        """One-segment objects from their data chunks, batched; None where one is missing."""
        refs: list[ChunkRef] = []
        wanted: list[list[int]] = []
        for location in locations:
            k = location.policy.k
            usable = sorted(
                (c for c in location.chunks if c.stored and c.address), key=lambda c: (c.index >= k, c.index)
            )
            if self.hedging:
                usable.sort(key=self._ranking(k, location.object.size))
            spare = self.hedging and len(usable) > k and self._spare_pays(usable[:k], location)
            self.hedge_counts.spare_reads += spare
            usable = usable[: k + 1 if spare else k]
            wanted.append([len(refs) + j for j in range(len(usable))])
            refs += [ChunkRef(c.address, chunk_key(location), c.index, ticket=location.chunk_ticket) for c in usable]
        hedge = (self.hedge, self.latency) if self.hedging else None
        needs = [(positions, location.policy.k) for positions, location in zip(wanted, locations, strict=True)]
        fragments = await read_whole_chunks(
            self._stubs([r.address for r in refs]), refs, self.fragment_timeout, hedge, needs
        )
        decoded: list[bytes | None] = []
        for location, positions in zip(locations, wanted, strict=True):
            codec = Codec(location.policy.k, location.policy.m)
            parts: list[bytes | None] = [None] * codec.n
            for position in positions:
                parts[refs[position].index] = fragments[position]
            if sum(p is not None for p in parts) < codec.k:
                decoded.append(None)
            else:
                decoded.append(codec.decode(parts))
        return decoded

    async def read(
        self, location: gateway_pb2.Location, progress: Progress | None = None, first_segment: int = 0
    ) -> AsyncIterator[bytes]:
        """Decode an object segment by segment, switching to parity where chunks fail.

        Data chunks are read first; a chunk that fails, times out or fails its
        checksum is replaced by another from the same segment on. Segments
        before ``first_segment`` are skipped (an inline object comes whole).
        With hedging, chunks are read from the containers expected to answer
        first (data chunks among those about as fast), and a chunk that lags
        past the hedge deadline gets another read beside it: the first k to
        arrive are used, the others closed. A one-segment object whose k
        chosen chunks are expected to take ``HedgePolicy.spare_after`` or more
        gets one spare read beside them from the start.
        """
        if location.inline:
            data = _inline_bytes(location)
            if progress:
                progress(len(data))
            yield data
            return
        key = chunk_key(location)
        policy = location.policy
        codec = Codec(policy.k, policy.m)
        size = location.object.size
        count = max(1, -(-size // policy.segment_size))
        full_fragment = codec.fragment_size(policy.segment_size) if size >= policy.segment_size else 0
        candidates = sorted(
            (c for c in location.chunks if c.stored and c.address), key=lambda c: (c.index >= codec.k, c.index)
        )

        ranking = self._ranking(codec.k, min(size, policy.segment_size))

        def rank(entry: tuple[common_pb2.ChunkLocation, bool]) -> float:
            return ranking(entry[0])

        by_index = {c.index: c for c in candidates}
        # One segment: each chunk is one fragment, read in one unary call.
        reader_type = WholeChunkReader if count == 1 else ChunkReader
        active: list[Reader] = []
        spare = [(loc, False) for loc in candidates]
        if self.hedging:
            spare.sort(key=rank)  # stable: data chunks first among equals
        # Readers to open at first: k, or one more beside them for a one-segment object from far containers.
        opened_first = codec.k
        first_k = [loc for loc, _ in spare[: codec.k]]
        if self.hedging and count == 1 and len(spare) > codec.k and self._spare_pays(first_k, location):
            opened_first += 1
            self.hedge_counts.spare_reads += 1
        unreachable: list[common_pb2.ChunkLocation] = []
        # Why each chunk that was tried could not be read.
        failures: dict[int, DynoStoreError | None] = {}

        def open_reader(loc: common_pb2.ChunkLocation, offset: int, patient: bool) -> Reader:
            reader = reader_type(
                self._container(loc.address),
                key,
                loc.index,
                offset,
                ticket=location.chunk_ticket,
                patient=patient,
                address=loc.address,
            )
            active.append(reader)
            return reader

        try:
            for segment in range(first_segment, count):
                offset = segment * full_fragment
                fragments: list[bytes | memoryview | None] = [None] * codec.n
                while (have := sum(f is not None for f in fragments)) < codec.k:
                    if len(active) < codec.k and not spare and unreachable:
                        # Last chance before giving up: wait for those connections, all at once.
                        spare.extend((loc, True) for loc in unreachable)
                        unreachable.clear()
                    while spare and (len(active) < max(codec.k, opened_first) or spare[0][1]):
                        loc, patient = spare.pop(0)
                        open_reader(loc, offset, patient)
                    waiting = [r for r in active if fragments[r.index] is None]
                    if not waiting:
                        raise _unreadable(location, segment, have, failures)
                    hedges: list[Reader] = []  # readers opened beside lagging ones

                    def hedge(offset: int = offset, hedges: list[Reader] = hedges) -> Reader | None:
                        """Open the next spare reader (not a patient one: those wait for the main loop)."""
                        if not spare or spare[0][1]:
                            return None
                        reader = open_reader(spare.pop(0)[0], offset, False)
                        hedges.append(reader)
                        return reader

                    got = await self._first_fragments(
                        waiting, codec.k - have, hedge if self.hedging else None, full_fragment
                    )
                    for reader in waiting + hedges:
                        if reader not in got:  # cut short: enough others answered first
                            active.remove(reader)
                            await reader.close()
                            spare.insert(0, (by_index[reader.index], False))
                        elif (fragment := got[reader]) is None:
                            log.info("Chunk %d of %s failed, using another: %s", reader.index, key, reader.error)
                            failures[reader.index] = reader.error
                            active.remove(reader)
                            await reader.close()
                            if isinstance(reader.error, Unavailable) and not reader.patient:
                                unreachable.append(by_index[reader.index])
                        else:
                            reader.patient = False
                            fragments[reader.index] = fragment
                    if self.hedging:
                        spare.sort(key=rank)  # those that lagged now rank after the others
                opened_first = codec.k  # a spare only in the first round
                data = codec.decode(fragments)
                if progress:
                    progress(len(data))
                yield data
        finally:
            for reader in active:
                await reader.close()

    async def _first_fragments(
        self,
        readers: list[Reader],
        need: int,
        hedge: Callable[[], Reader | None] | None = None,
        fragment_bytes: int = 0,
    ) -> dict[Reader, bytes | memoryview | None]:
        """Next fragment (or None on failure) of each reader, until ``need`` succeeded.

        Readers still waiting when enough others answered are left out of the
        result (their next() is cancelled). With ``hedge`` (which opens one
        more reader, or gives None when there is none), a reader is opened
        whenever one fails or the wait passes the hedge deadline (see
        :meth:`HedgePolicy.read_deadline`; ``fragment_bytes``: about what each
        read brings, for what it is expected to take), and every answer
        updates the latency estimates.
        """
        tasks: dict[asyncio.Future[bytes | memoryview | None], Reader] = {}
        began: dict[Reader, float] = {}

        def start(reader: Reader) -> asyncio.Future[bytes | memoryview | None]:
            began[reader] = time.monotonic()
            task = asyncio.ensure_future(reader.next(self.retry_timeout if reader.patient else self.fragment_timeout))
            tasks[task] = reader
            return task

        for reader in readers:
            start(reader)
        results: dict[Reader, bytes | memoryview | None] = {}
        pending = set(tasks)
        took: list[float] = []  # seconds each good fragment of this round took
        mark = time.monotonic()  # the round's start, or the last hedge
        deadline = self.hedge.cap
        try:
            while pending and sum(v is not None for v in results.values()) < need:
                timeout = None
                if hedge is not None:
                    expected = self._expected([tasks[t] for t in pending], fragment_bytes)
                    deadline = self.hedge.read_deadline(took, expected)
                    timeout = max(0.0, mark + deadline - time.monotonic())
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                now = time.monotonic()
                if not done and hedge is not None:  # the wait passed the deadline: read one more chunk
                    added = hedge()
                    if added is None:
                        hedge = None  # nothing left to hedge with: wait for those reading
                    else:
                        log.debug("A chunk read lagged %.3f s; reading chunk %d too.", now - mark, added.index)
                        self.hedge_counts.extra_reads += 1
                        pending.add(start(added))
                        mark = now
                for task in done:
                    reader = tasks[task]
                    results[reader] = fragment = task.result()
                    if hedge is None and not self.hedging:
                        continue
                    seconds = now - began[reader]
                    if fragment is not None:
                        took.append(seconds)
                        self.latency.observe(reader.address, seconds, len(fragment), first=reader.received == 1)
                    else:
                        if isinstance(reader.error, Unavailable | DeadlineExceeded):  # not a chunk gone or corrupt
                            self.latency.lagged(reader.address, max(seconds, self.hedge.cap))
                        if hedge is not None and (added := hedge()) is not None:  # replace the failed one at once
                            self.hedge_counts.extra_reads += 1
                            pending.add(start(added))
        finally:
            now = time.monotonic()
            cancelled = []
            for task in pending:
                reader = tasks[task]
                late = now - began[reader] > deadline
                if self.hedging and isinstance(reader, WholeChunkReader) and not late:
                    self._measure_loser(task, reader, began[reader])
                    continue
                task.cancel()
                cancelled.append(task)
                if self.hedging and late:
                    self.latency.lagged(reader.address, now - began[reader])
            await asyncio.gather(*cancelled, return_exceptions=True)
        return results

    def _measure_loser(self, task: asyncio.Future[bytes | memoryview | None], reader: Reader, began: float) -> None:
        """Let a one-chunk read that lost the race (not one that lagged) finish beside the caller, and time it.

        Cancelled because others won, a read would tell only that it was
        slower; a slow container's estimate would then fade (it halves every
        ``half_life``) until it ranked among the fast ones again and were
        chosen, and lost, at every get. Its one unary read (the chunk of a
        one-segment object) runs on instead, for at most ``HedgePolicy.cap``
        more seconds, so the estimate keeps its real time (or at least cap).
        """
        self._measuring.add(task)
        give_up = asyncio.get_running_loop().call_later(self.hedge.cap, task.cancel)

        def measured(done: asyncio.Future[bytes | memoryview | None]) -> None:
            self._measuring.discard(done)
            give_up.cancel()
            seconds = time.monotonic() - began
            fragment = None if done.cancelled() or done.exception() else done.result()
            if fragment is not None:
                self.latency.observe(reader.address, seconds, len(fragment), first=True)
            elif done.cancelled() or isinstance(reader.error, Unavailable | DeadlineExceeded):  # not a chunk gone
                self.latency.lagged(reader.address, seconds)

        task.add_done_callback(measured)

    def _spare_pays(self, chosen: list[common_pb2.ChunkLocation], location: gateway_pb2.Location) -> bool:
        """Whether to read a spare chunk beside ``chosen``: the slowest is expected to take ``spare_after`` or more."""
        fragment_bytes = -(-max(location.object.size, 1) // location.policy.k)
        expected = [self.latency.expected(c.address, fragment_bytes) for c in chosen]
        return max((e for e in expected if e is not None), default=0.0) >= self.hedge.spare_after

    def _ranking(self, k: int, segment_bytes: int) -> Callable[[common_pb2.ChunkLocation], float]:
        """Sort key of chunks to read, by latency estimate (data chunks first among equals; see LatencyTracker.rank)."""
        fragment_bytes = -(-max(segment_bytes, 1) // k)  # about: the coded fragment adds a small header

        def rank(chunk: common_pb2.ChunkLocation) -> float:
            return self.latency.rank(chunk.address, chunk.index >= k, fragment_bytes)

        return rank

    def _expected(self, readers: list[Reader], fragment_bytes: int) -> float | None:
        """Seconds the slowest of ``readers`` is expected to take for its next fragment (None: unknown)."""
        known = [
            e
            for r in readers
            if (e := self.latency.expected(r.address, fragment_bytes, first=r.received == 0)) is not None
        ]
        return max(known) if known else None


def _inline_bytes(location: gateway_pb2.Location) -> bytes:
    """An inline object's bytes, verified against their CRC-32."""
    if len(location.data) != location.object.size or checksum(location.data) != location.crc32:
        raise DataLoss(f"The inline bytes of object {location.object.key} fail their checksum.")
    return location.data


def _unreadable(
    location: gateway_pb2.Location, segment: int, have: int, failures: dict[int, DynoStoreError | None]
) -> DynoStoreError:
    """The error for a segment with fewer than k readable chunks.

    ``DataLoss`` only when more than m chunks are really gone: recorded as
    missing, or answered as absent or corrupt by their container. Chunks on
    containers that are down, unregistered or slow may come back: that is
    ``Unavailable``, which a later try may get past.
    """
    k, key = location.policy.k, location.object.key
    gone = [c.index for c in location.chunks if not c.stored or isinstance(failures.get(c.index), DataLoss | NotFound)]
    away = [c.index for c in location.chunks if c.index not in gone and (not c.address or c.index in failures)]
    if len(location.chunks) - len(gone) >= k:
        return Unavailable(
            f"Object {key}: segment {segment} has only {have} readable chunks now, {k} are needed; "
            f"chunks {_indices(away)} are on containers that are down or unreachable, so try again later."
        )
    return DataLoss(
        f"Object {key}: segment {segment} has only {have} readable chunks, {k} are needed. "
        f"Lost chunks: {_indices(gone)}."
    )


def _indices(indices: list[int]) -> str:
    return ", ".join(map(str, indices)) or "none"


async def _from_byte(segments: AsyncIterator[bytes], skip: int) -> AsyncIterator[bytes]:
    """``segments`` without their first ``skip`` bytes."""
    async for segment in segments:
        if skip >= len(segment):
            skip -= len(segment)
            continue
        yield segment[skip:] if skip else segment
        skip = 0
