"""Inline objects: gateway limits, record serialization, client-side verification."""

from __future__ import annotations

import json
import zlib

import pytest

from dynostore._proto import common_pb2, gateway_pb2
from dynostore.client.pipeline import _inline_bytes
from dynostore.errors import DataLoss, InvalidArgument
from dynostore.gateway.servicer import MAX_INLINE_BYTES, GatewayPolicy
from dynostore.registry import ObjectRecord


@pytest.mark.parametrize("limit", [-1, MAX_INLINE_BYTES + 1])
def test_gateway_refuses_inline_limits_etcd_cannot_hold(limit: int) -> None:
    with pytest.raises(InvalidArgument, match="inline_max_bytes"):
        GatewayPolicy(inline_max_bytes=limit)


def test_record_json_leaves_the_bytes_out() -> None:
    record = ObjectRecord("a" * 32, "u", "c", "n", 3, 0, 0, 0, inline=True, crc32=7, data=b"abc")
    fields = json.loads(record.to_json())
    assert "data" not in fields
    assert fields["inline"] is True
    assert fields["crc32"] == 7
    again = ObjectRecord.from_json(record.to_json())
    assert again.inline
    assert again.crc32 == 7
    assert again.data == b""


def test_records_written_before_inline_objects_still_parse() -> None:
    old = {"key": "b" * 32, "owner": "u", "catalog": "c", "name": "", "size": 1, "k": 3, "m": 2}
    record = ObjectRecord.from_json(json.dumps({**old, "segment_size": 3, "chunks": [], "created": 1.0}).encode())
    assert not record.inline
    assert record.crc32 == 0


def location(data: bytes, size: int, crc: int) -> gateway_pb2.Location:
    info = common_pb2.ObjectInfo(key="c" * 32, size=size)
    return gateway_pb2.Location(object=info, inline=True, data=data, crc32=crc)


def test_client_verifies_inline_bytes() -> None:
    assert _inline_bytes(location(b"hello", 5, zlib.crc32(b"hello"))) == b"hello"
    with pytest.raises(DataLoss):
        _inline_bytes(location(b"hellp", 5, zlib.crc32(b"hello")))
    with pytest.raises(DataLoss):
        _inline_bytes(location(b"hello", 6, zlib.crc32(b"hello")))
