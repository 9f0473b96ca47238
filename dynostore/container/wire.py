"""Hand-rolled protobuf wire format of the messages that carry chunk data.

Besides the two streaming messages below, :func:`encode_write_chunks`
encodes the ``WriteChunksRequest`` of whole chunks (the write of objects of
one segment) and :func:`encode_read_chunks` the ``ReadChunksResponse`` (their
read) with one copy of the data; the other side parses those with the
protobuf runtime, which is quick at that.

``PutChunkRequest{fragment}`` and ``GetChunkResponse{fragment}`` carry ~1 MiB
each. Building them through the protobuf runtime copies the data three times
(into the ``Fragment``, into the outer message, into the serialized bytes),
and parsing them copies it twice more (the parse, then ``.data``). Here a
message is encoded with one copy (a ``bytes`` join) and decoded with none:
the fragment's data is a ``memoryview`` of the received message.

The decoders take only the shape the encoders write (and that the protobuf
runtime writes): one fragment field holding ``data`` / ``crc32`` / ``offset``
each at most once. Anything else (a header, unknown fields, repeated
fields...) is handed to the protobuf runtime, so their meaning is always the
protobuf meaning. ``tests/unit/test_wire.py`` checks both directions against
the runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from dynostore._proto import container_pb2 as pb

_LEN = 2
_VARINT = 0
# Outer fields: GetChunkResponse.fragment = 1, PutChunkRequest.fragment = 2 (both length-delimited).
_GET_FRAGMENT_TAG = b"\x0a"
_PUT_FRAGMENT_TAG = b"\x12"
_UINT32_MAX = 0xFFFFFFFF
_UINT64_MAX = 0xFFFFFFFFFFFFFFFF


class WireFragment(NamedTuple):
    """A fragment decoded without copying: ``data`` is a view of the received message."""

    data: memoryview
    crc32: int
    offset: int


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(raw: bytes, position: int, end: int) -> tuple[int, int]:
    """``(value, next position)``; ``(-1, position)`` when malformed or longer than 10 bytes."""
    value = shift = 0
    while position < end and shift < 70:
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    return -1, position


def _field(tag: bytes, pieces: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
    """The pieces of a length-delimited field ``tag`` holding ``pieces`` (nothing is copied)."""
    return [tag, _varint(sum(len(p) for p in pieces)), *pieces]


def _fragment_pieces(tag: bytes, data: bytes | memoryview, crc: int, offset: int) -> list[bytes | memoryview]:
    """The pieces of a ``tag``-field ``Fragment`` (joined, they are its encoding; ``data`` is not copied)."""
    tail = b""
    if crc:
        tail += b"\x10" + _varint(crc)
    if offset:
        tail += b"\x18" + _varint(offset)
    head = b"\x0a" + _varint(len(data)) if len(data) else b""
    return _field(tag, [head, data, tail])


def _encode(tag: bytes, data: bytes | memoryview, crc: int, offset: int) -> bytes:
    return b"".join(_fragment_pieces(tag, data, crc, offset))


def encode_write_chunks(chunks: Sequence[tuple[pb.ChunkHeader, bytes | memoryview, int]]) -> bytes:
    """The serialized ``WriteChunksRequest`` of whole chunks of one fragment each (one copy of the data).

    Each chunk is ``(header, data, crc32)``. Building the request through
    the protobuf runtime copies every fragment twice more (into the
    ``Fragment``, then into the serialized bytes).
    """
    pieces: list[bytes | memoryview] = []
    for header, data, crc in chunks:
        # WriteChunksRequest.chunks = 1 of WholeChunk{header = 1, fragments = 2}
        whole = [*_field(b"\x0a", [header.SerializeToString()]), *_fragment_pieces(b"\x12", data, crc, 0)]
        pieces += _field(b"\x0a", whole)
    return b"".join(pieces)


def encode_read_chunks(results: Sequence[pb.ChunkStatus | Sequence[tuple[int, bytes | memoryview, int]]]) -> bytes:
    """The serialized ``ReadChunksResponse`` (one copy of the data).

    Each result is a chunk's failure (a ``ChunkStatus``) or its fragments
    as ``(offset, data, crc32)``. The protobuf runtime took about 0.9 ms of
    CPU to build and serialize the reply of one 350 KB chunk here; this
    takes about 15 us.
    """
    pieces: list[bytes | memoryview] = []
    for result in results:
        # ReadChunksResponse.results = 1 of ReadChunkResult{status = 1, fragments = 2}
        if isinstance(result, pb.ChunkStatus):
            inner = _field(b"\x0a", [result.SerializeToString()])
        else:
            inner = [piece for offset, data, crc in result for piece in _fragment_pieces(b"\x12", data, crc, offset)]
        pieces += _field(b"\x0a", inner)
    return b"".join(pieces)


def encode_get_reply(offset: int, data: bytes | memoryview, crc: int) -> bytes:
    """The serialized ``GetChunkResponse`` of one fragment (one copy of ``data``)."""
    return _encode(_GET_FRAGMENT_TAG, data, crc, offset)


def encode_put_fragment(data: bytes | memoryview, crc: int) -> bytes:
    """The serialized ``PutChunkRequest`` of one fragment (one copy of ``data``)."""
    return _encode(_PUT_FRAGMENT_TAG, data, crc, 0)


def _decode_fragment(raw: bytes, tag: bytes) -> WireFragment | None:
    """The fragment of a message that is exactly ``tag``-field fragment, else None."""
    end = len(raw)
    if end < 2 or raw[0] != tag[0]:
        return None
    size, position = _read_varint(raw, 1, end)
    if size != end - position:
        return None
    data: memoryview | None = None
    crc = offset = -1
    while position < end:
        key, position = _read_varint(raw, position, end)
        if key == (1 << 3) | _LEN and data is None:
            length, position = _read_varint(raw, position, end)
            if length < 0 or position + length > end:
                return None
            data = memoryview(raw)[position : position + length]
            position += length
        elif key == (2 << 3) | _VARINT and crc < 0:
            crc, position = _read_varint(raw, position, end)
            if not 0 <= crc <= _UINT32_MAX:
                return None
        elif key == (3 << 3) | _VARINT and offset < 0:
            offset, position = _read_varint(raw, position, end)
            if not 0 <= offset <= _UINT64_MAX:
                return None
        else:
            return None
    return WireFragment(data if data is not None else memoryview(b""), max(crc, 0), max(offset, 0))


def decode_get_reply(raw: bytes) -> WireFragment | pb.GetChunkResponse:
    """A ``GetChunkResponse``: a :class:`WireFragment` when it is the usual one fragment."""
    return _decode_fragment(raw, _GET_FRAGMENT_TAG) or pb.GetChunkResponse.FromString(raw)


def decode_put_request(raw: bytes) -> WireFragment | pb.PutChunkRequest:
    """A ``PutChunkRequest``: a :class:`WireFragment` for a plain fragment, else the parsed message."""
    return _decode_fragment(raw, _PUT_FRAGMENT_TAG) or pb.PutChunkRequest.FromString(raw)


def serialize(message: bytes | pb.PutChunkRequest | pb.GetChunkResponse | pb.WriteChunksRequest) -> bytes:
    """A serializer that passes encoded messages through and serializes the others."""
    return message if isinstance(message, bytes) else message.SerializeToString()
