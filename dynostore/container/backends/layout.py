"""Fragment indexes and record parsing shared by the object-store backends (S3, RADOS).

Object stores serve byte ranges, not seekable files, so a chunk stored there
keeps a small index of its fragment lengths next to the records: the payload
offset of fragment *i* is the sum of the lengths before it, and its record
starts ``8 + 8 * i + offset`` bytes into the record stream (``MAGIC`` followed
by the records of ``dynostore.erasure.format``). With the index, a read at an
offset fetches only the byte range of the fragments it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from itertools import accumulate

from dynostore.erasure import format as chunk_format
from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss

_LENGTH = struct.Struct(">I")
_RECORD = struct.Struct(">II")
# A record header with this length marks the end of the records (fragments are far smaller).
END_OF_RECORDS = 0xFFFFFFFF


@dataclass
class FragmentIndex:
    """The lengths of a chunk's fragments, in order."""

    lengths: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        """The lengths as big-endian u32 values."""
        return struct.pack(f">{len(self.lengths)}I", *self.lengths)

    @classmethod
    def decode(cls, raw: bytes, *, name: str = "chunk") -> FragmentIndex:
        """Parse :meth:`encode`'s output.

        Raises:
            DataLoss: the bytes are not a whole number of lengths.
        """
        if len(raw) % _LENGTH.size:
            raise DataLoss(f"{name} has a damaged fragment index.")
        return cls(list(struct.unpack(f">{len(raw) // _LENGTH.size}I", raw)))

    @property
    def payload_bytes(self) -> int:
        """Total fragment bytes."""
        return sum(self.lengths)

    @property
    def stream_bytes(self) -> int:
        """Bytes of ``MAGIC`` plus all records."""
        return len(chunk_format.MAGIC) + len(self.lengths) * chunk_format.RECORD_HEADER_BYTES + self.payload_bytes

    def span(self, offset: int, length: int) -> tuple[int, int, int, int]:
        """The fragments overlapping a payload range and where their records lie.

        Args:
            offset: first payload byte wanted.
            length: payload bytes wanted; 0 means to the end.

        Returns:
            ``(first, count, payload_offset, stream_start)``: the first fragment,
            how many fragments, the payload offset of the first one and the
            stream offset of its record header. ``count`` is 0 when nothing overlaps.
        """
        end = offset + length if length else None
        starts = [0, *accumulate(self.lengths)]
        first = next((i for i, n in enumerate(self.lengths) if starts[i] + n > offset), len(self.lengths))
        last = first
        while last < len(self.lengths) and (end is None or starts[last] < end):
            last += 1
        stream_start = len(chunk_format.MAGIC) + first * chunk_format.RECORD_HEADER_BYTES + starts[first]
        return first, last - first, starts[first], stream_start

    def stream_length(self, first: int, count: int) -> int:
        """Stream bytes taken by the records of fragments ``first .. first + count - 1``."""
        return count * chunk_format.RECORD_HEADER_BYTES + sum(self.lengths[first : first + count])


class BlockReader:
    """Reads exact byte counts from a source that hands out blocks of any size.

    What lies within one block is handed out as a view of it (no copy); only
    a read that straddles blocks joins its own bytes.
    """

    def __init__(self, next_block: Callable[[], Awaitable[bytes]], name: str) -> None:
        """Read from ``next_block`` (returns ``b""`` at the end); ``name`` is used in errors."""
        self._next_block = next_block
        self._name = name
        self._buffer = memoryview(b"")
        self._position = 0

    async def read_exactly(self, n: int) -> bytes | memoryview:
        """The next ``n`` bytes, as a view of a block when they lie within one.

        Raises:
            DataLoss: the source ended first.
        """
        available = len(self._buffer) - self._position
        if available >= n:
            data = self._buffer[self._position : self._position + n]
            self._position += n
            return data
        pieces = [self._buffer[self._position :]] if available else []
        needed = n - available
        while needed:
            block = memoryview(await self._next_block())
            if not block:
                raise DataLoss(f"{self._name} is truncated.")
            taken = min(needed, len(block))
            pieces.append(block[:taken])
            needed -= taken
            self._buffer, self._position = block, taken
        return b"".join(pieces)

    async def records(
        self, payload_offset: int, count: int | None
    ) -> AsyncIterator[tuple[int, bytes | memoryview, int]]:
        """Yield ``(payload_offset, data, crc)`` of the next records.

        Reads ``count`` records, or up to the end-of-records marker when
        ``count`` is None; every CRC is verified before its fragment is yielded.
        ``data`` may be a view of a block.

        Raises:
            DataLoss: a record is truncated or fails its checksum.
        """
        position = payload_offset
        seen = 0
        while count is None or seen < count:
            size, crc = _RECORD.unpack(await self.read_exactly(_RECORD.size))
            if size == END_OF_RECORDS:
                if count is not None or crc != seen:
                    raise DataLoss(f"{self._name} has {seen} fragments but its end marker says {crc}.")
                return
            data = await self.read_exactly(size)
            if checksum(data) != crc:
                raise DataLoss(f"{self._name}: the fragment at offset {position} fails its checksum.")
            yield position, data, crc
            position += size
            seen += 1


class ReadAhead:
    """A block source that fetches the next block while the caller works on this one.

    For sources that must be read one call at a time (an HTTP body). Call
    :meth:`aclose` before releasing the source: it waits for a fetch in flight.
    """

    def __init__(self, next_block: Callable[[], Awaitable[bytes]]) -> None:
        """Prefetch from ``next_block`` (returns ``b""`` at the end)."""
        self._next_block = next_block
        self._pending: asyncio.Future[bytes] | None = None
        self._ended = False

    async def __call__(self) -> bytes:
        """The next block; ``b""`` at the end."""
        if self._ended:
            return b""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._next_block())
        pending, self._pending = self._pending, None
        block = await pending
        if block:
            self._pending = asyncio.ensure_future(self._next_block())
        else:
            self._ended = True
        return block

    async def aclose(self) -> None:
        """Wait for (and drop) a fetch in flight."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)


def end_marker(count: int) -> bytes:
    """The record header that ends the records of a chunk of ``count`` fragments."""
    return _RECORD.pack(END_OF_RECORDS, count)
