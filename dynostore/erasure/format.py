"""On-disk format of a stored chunk (version 1).

A chunk file is the 8-byte magic ``DYNCHK01`` followed by one record per
fragment: ``length`` (u32, big-endian), ``crc32`` (u32, big-endian) and
``length`` bytes of fragment data. The payload offset of a fragment is the sum
of the lengths before it. ``tests/unit/test_format.py`` pins the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from dynostore.erasure.checksum import checksum
from dynostore.errors import DataLoss

MAGIC = b"DYNCHK01"
_RECORD = struct.Struct(">II")
RECORD_HEADER_BYTES = _RECORD.size


def record_header(data_length: int, crc: int) -> bytes:
    """The 8 bytes that precede a fragment of ``data_length`` bytes."""
    return _RECORD.pack(data_length, crc)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """``n`` bytes, fewer only at the end of the file (an unbuffered file may return less per read)."""
    data = f.read(n)
    if 0 < len(data) < n:
        pieces = [data]
        got = len(data)
        while got < n and (more := f.read(n - got)):
            pieces.append(more)
            got += len(more)
        data = b"".join(pieces)
    return data


def read_records(
    f: BinaryIO, offset: int = 0, length: int = 0, *, name: str = "chunk"
) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(payload_offset, data, crc)`` for each fragment overlapping the range.

    ``length`` 0 means to the end. Each fragment's CRC is verified before it
    is yielded.

    Raises:
        DataLoss: the file is not a chunk, is truncated, or a CRC does not match.
    """
    if _read_exact(f, len(MAGIC)) != MAGIC:
        raise DataLoss(f"{name} is not a DynoStore chunk (bad magic or version).")
    end = offset + length if length else None
    position = 0
    while end is None or position < end:
        head = _read_exact(f, RECORD_HEADER_BYTES)
        if not head:
            return
        if len(head) != RECORD_HEADER_BYTES:
            raise DataLoss(f"{name} is truncated.")
        size, crc = _RECORD.unpack(head)
        if position + size <= offset:
            f.seek(size, 1)
            position += size
            continue
        data = _read_exact(f, size)
        if len(data) != size:
            raise DataLoss(f"{name} is truncated.")
        if checksum(data) != crc:
            raise DataLoss(f"{name}: the fragment at offset {position} fails its checksum.")
        yield position, data, crc
        position += size
