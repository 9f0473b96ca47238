import io
import zlib

import pytest

from dynostore.erasure import format as chunk_format
from dynostore.errors import DataLoss

# A chunk of two fragments, b"abc" and b"de", pinned byte for byte (version 1).
VECTOR = (
    b"DYNCHK01"
    + b"\x00\x00\x00\x03" + zlib.crc32(b"abc").to_bytes(4, "big") + b"abc"
    + b"\x00\x00\x00\x02" + zlib.crc32(b"de").to_bytes(4, "big") + b"de"
)  # fmt: skip


def test_pinned_vector() -> None:
    built = (
        chunk_format.MAGIC
        + chunk_format.record_header(3, zlib.crc32(b"abc"))
        + b"abc"
        + chunk_format.record_header(2, zlib.crc32(b"de"))
        + b"de"
    )
    assert built == VECTOR
    records = list(chunk_format.read_records(io.BytesIO(VECTOR)))
    assert [(o, d) for o, d, _ in records] == [(0, b"abc"), (3, b"de")]


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [(0, 0, [0, 3]), (3, 0, [3]), (2, 1, [0]), (2, 2, [0, 3]), (4, 1, [3]), (5, 0, [])],
)
def test_ranges_select_overlapping_fragments(offset: int, length: int, expected: list[int]) -> None:
    records = chunk_format.read_records(io.BytesIO(VECTOR), offset, length)
    assert [o for o, _, _ in records] == expected


def test_bit_flip_is_detected() -> None:
    damaged = bytearray(VECTOR)
    damaged[-1] ^= 0x01
    with pytest.raises(DataLoss, match="checksum"):
        list(chunk_format.read_records(io.BytesIO(bytes(damaged))))


def test_truncation_is_detected() -> None:
    with pytest.raises(DataLoss, match="truncated"):
        list(chunk_format.read_records(io.BytesIO(VECTOR[:-1])))


def test_wrong_magic_is_detected() -> None:
    with pytest.raises(DataLoss, match="magic"):
        list(chunk_format.read_records(io.BytesIO(b"DYNCHK02" + VECTOR[8:])))
