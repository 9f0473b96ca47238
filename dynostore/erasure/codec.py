"""Erasure coding of segments with pyeclib (ISA-L, Cauchy Reed-Solomon).

A Cauchy matrix keeps every choice of k fragments decodable (Vandermonde
Reed-Solomon can be singular for some loss patterns).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from functools import lru_cache

from pyeclib.ec_iface import ECDriver

from dynostore import validation
from dynostore.errors import DataLoss

EC_TYPE = "isa_l_rs_cauchy"
# liberasurecode's fragment header: 80 bytes, starting with (little-endian)
# u32 index, u32 payload size, u32 backend metadata size, u64 segment size.
HEADER_BYTES = 80
HEADER_FIELDS = struct.Struct("<IIIQ")
# pyeclib needs m >= 1; with m == 0 a segment is split into k framed pieces.


class Codec:
    """Encode a segment into k + m fragments and decode it from any k of them."""

    def __init__(self, k: int, m: int) -> None:
        """Build a codec for ``k`` data and ``m`` parity fragments per segment."""
        self.k, self.m = validation.ec_params(k, m)
        self._driver = _driver(self.k, self.m) if self.m else None

    @property
    def n(self) -> int:
        """Fragments per segment (k + m)."""
        return self.k + self.m

    def encode(self, segment: bytes | bytearray | memoryview) -> list[bytes]:
        """Return the k + m fragments of ``segment``, each with pyeclib's header."""
        if self._driver is None:
            return _split(memoryview(segment), self.k)
        return self._driver.encode(bytes(segment) if not isinstance(segment, bytes) else segment)

    def decode(self, fragments: Sequence[bytes | memoryview | None]) -> bytes:
        """Rebuild a segment from ``fragments`` (indexed by fragment, None when missing).

        Raises:
            DataLoss: fewer than k fragments are present or they do not decode.
        """
        present = {i: f for i, f in enumerate(fragments) if f is not None}
        if len(present) < self.k:
            raise DataLoss(f"Only {len(present)} of the {self.k} fragments needed to decode are available.")
        if self._driver is None:
            return _join([present[i] for i in range(self.k)])
        # Data fragments alone decode without arithmetic; prefer them.
        chosen = sorted(present, key=lambda i: (i >= self.k, i))[: self.k]
        if chosen[-1] < self.k and _headers_understood(self.k, self.m):
            joined = _join_data([present[i] for i in chosen])
            if joined is not None:
                return joined
        try:
            return self._driver.decode([bytes(present[i]) for i in chosen])
        except Exception as exc:  # pyeclib raises its own hierarchy
            raise DataLoss(f"Fragments did not decode: {exc}") from exc

    def fragment_size(self, segment_size: int) -> int:
        """Bytes of one fragment of a segment of ``segment_size`` bytes."""
        return len(self.encode(bytes(segment_size))[0])


@lru_cache(maxsize=64)
def _driver(k: int, m: int) -> ECDriver:
    return ECDriver(k=k, m=m, ec_type=EC_TYPE)


def _join_data(fragments: Sequence[bytes | memoryview]) -> bytes | None:
    """The segment held by data fragments 0..k-1, joined from their payloads (one copy).

    Returns None when a header does not add up, leaving the decoding to pyeclib.
    """
    payloads = []
    segment_size = -1
    for index, fragment in enumerate(fragments):
        if len(fragment) < HEADER_BYTES:
            return None
        found, size, backend_bytes, total = HEADER_FIELDS.unpack_from(fragment)
        if found != index or backend_bytes or HEADER_BYTES + size > len(fragment) or segment_size not in (-1, total):
            return None
        segment_size = total
        payloads.append(memoryview(fragment)[HEADER_BYTES : HEADER_BYTES + size])
    joined = b"".join(payloads)
    if len(joined) < segment_size:
        return None
    return joined if len(joined) == segment_size else joined[:segment_size]


@lru_cache(maxsize=64)
def _headers_understood(k: int, m: int) -> bool:
    """Whether this pyeclib's fragments parse as :func:`_join_data` expects (checked once per policy)."""
    driver = _driver(k, m)
    for size in (0, 1, 1000, 3 * 4096 + 5):
        segment = os.urandom(size)
        if _join_data(driver.encode(segment)[:k]) != segment:
            return False
    return True


def _split(segment: memoryview, k: int) -> list[bytes]:
    """Without parity: k pieces, each prefixed with the segment length (8 bytes)."""
    size = len(segment)
    piece = -(-size // k) if size else 0
    header = size.to_bytes(8, "big")
    out = []
    for i in range(k):
        part = bytes(segment[i * piece : (i + 1) * piece])
        out.append(header + part + bytes(piece - len(part)))
    return out


def _join(pieces: Sequence[bytes | memoryview]) -> bytes:
    size = int.from_bytes(pieces[0][:8], "big")
    return b"".join(p[8:] for p in pieces)[:size]
