"""The hand-rolled wire format of the chunk streams agrees with the protobuf runtime."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynostore._proto import container_pb2 as pb
from dynostore.container import wire
from dynostore.erasure.checksum import checksum

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)


@given(data=st.binary(max_size=3000), crc=U32, offset=U64)
def test_get_reply_round_trips_with_protobuf(data: bytes, crc: int, offset: int) -> None:
    encoded = wire.encode_get_reply(offset, data, crc)
    message = pb.GetChunkResponse(fragment=pb.Fragment(data=data, crc32=crc, offset=offset))
    assert encoded == message.SerializeToString()
    assert pb.GetChunkResponse.FromString(encoded) == message
    decoded = wire.decode_get_reply(message.SerializeToString())
    assert isinstance(decoded, wire.WireFragment)
    assert (bytes(decoded.data), decoded.crc32, decoded.offset) == (data, crc, offset)


@given(data=st.binary(max_size=3000), crc=U32)
def test_put_fragment_round_trips_with_protobuf(data: bytes, crc: int) -> None:
    encoded = wire.encode_put_fragment(data, crc)
    message = pb.PutChunkRequest(fragment=pb.Fragment(data=data, crc32=crc))
    assert encoded == message.SerializeToString()
    decoded = wire.decode_put_request(encoded)
    assert isinstance(decoded, wire.WireFragment)
    assert (bytes(decoded.data), decoded.crc32, decoded.offset) == (data, crc, 0)


HEADERS = st.builds(
    pb.ChunkHeader,
    key=st.text(max_size=60),
    index=st.integers(0, 300),
    container_id=st.text(max_size=40),
    ticket=st.text(max_size=200),
    replace=st.booleans(),
)


@given(chunks=st.lists(st.tuples(HEADERS, st.binary(max_size=3000), U32), max_size=5))
def test_write_chunks_request_is_what_protobuf_writes(chunks: list[tuple[pb.ChunkHeader, bytes, int]]) -> None:
    encoded = wire.encode_write_chunks(chunks)
    message = pb.WriteChunksRequest(
        chunks=[pb.WholeChunk(header=h, fragments=[pb.Fragment(data=d, crc32=c)]) for h, d, c in chunks]
    )
    assert encoded == message.SerializeToString()
    assert pb.WriteChunksRequest.FromString(encoded) == message


FRAGMENTS = st.lists(st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=3000), U32), max_size=4)
STATUSES = st.builds(pb.ChunkStatus, code=st.integers(-(2**31), 2**31 - 1), message=st.text(max_size=80))


@given(results=st.lists(st.one_of(STATUSES, FRAGMENTS), max_size=5))
def test_read_chunks_response_is_what_protobuf_writes(
    results: list[pb.ChunkStatus | list[tuple[int, bytes, int]]],
) -> None:
    encoded = wire.encode_read_chunks(results)
    message = pb.ReadChunksResponse(
        results=[
            pb.ReadChunkResult(status=r)
            if isinstance(r, pb.ChunkStatus)
            else pb.ReadChunkResult(fragments=[pb.Fragment(data=d, crc32=c, offset=o) for o, d, c in r])
            for r in results
        ]
    )
    assert pb.ReadChunksResponse.FromString(encoded) == message
    # Byte for byte too (an empty status included: a present field of no bytes, both ways).
    assert encoded == message.SerializeToString()


def test_large_fragment_is_a_view_not_a_copy() -> None:
    data = os.urandom(1 << 20)
    encoded = wire.encode_put_fragment(memoryview(data), 7)
    decoded = wire.decode_put_request(encoded)
    assert isinstance(decoded, wire.WireFragment)
    assert decoded.data.obj is encoded
    assert decoded.data == data


@pytest.mark.parametrize(
    "message",
    [
        pb.PutChunkRequest(header=pb.ChunkHeader(key="k", index=3, ticket="t")),
        pb.PutChunkRequest(),
        pb.PutChunkRequest(fragment=pb.Fragment(data=b"x", crc32=1, offset=9)),
    ],
)
def test_other_put_requests_go_to_protobuf(message: pb.PutChunkRequest) -> None:
    decoded = wire.decode_put_request(message.SerializeToString())
    if isinstance(decoded, wire.WireFragment):
        assert message.WhichOneof("part") == "fragment"
        assert (bytes(decoded.data), decoded.crc32, decoded.offset) == (b"x", 1, 9)
    else:
        assert decoded == message


@pytest.mark.parametrize(
    "raw",
    [
        b"\x12\x05\x0a\x01x\x10\x01" + b"\x20\x05",  # unknown field 4 in the fragment (length is wrong too)
        b"\x12\x07\x0a\x01x\x10\x01\x20\x05",  # unknown field 4 in the fragment
        b"\x12\x03\x0a\x01x\x12\x03\x0a\x01y",  # the fragment field twice: protobuf merges them
        b"\x12\x06\x0a\x01x\x0a\x01y",  # data twice: the last wins
        b"\x12\x04\x0a\x05xy",  # data runs past the end
        b"\x12\x05\x10\xff\xff\xff\xff\x1f",  # crc32 beyond 32 bits
        b"\x0a\x00",  # a header
    ],
)
def test_unusual_shapes_get_protobuf_meaning(raw: bytes) -> None:
    try:
        expected: pb.PutChunkRequest | None = pb.PutChunkRequest.FromString(raw)
    except Exception:
        expected = None
    try:
        decoded = wire.decode_put_request(raw)
    except Exception:
        assert expected is None
        return
    assert not isinstance(decoded, wire.WireFragment)
    assert decoded == expected


def test_serialize_passes_bytes_through() -> None:
    message = pb.GetChunkResponse(fragment=pb.Fragment(data=b"abc", crc32=5))
    assert wire.serialize(b"already") == b"already"
    assert wire.serialize(message) == message.SerializeToString()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 5000, 1 << 20])
def test_fast_crc32_matches_zlib(size: int) -> None:
    data = os.urandom(size)
    assert checksum(data) == zlib.crc32(data)
    assert checksum(bytearray(data)) == zlib.crc32(data)
    assert checksum(memoryview(data)[size // 3 :]) == zlib.crc32(data[size // 3 :])
    # Continued over pieces of either size, as zlib's is (the S3 door's x-amz-checksum-crc32).
    assert checksum(data[size // 3 :], checksum(data[: size // 3])) == zlib.crc32(data)


def test_fast_crc32_refuses_strided_views() -> None:
    with pytest.raises((BufferError, ValueError)):
        checksum(memoryview(os.urandom(10000))[::2])
