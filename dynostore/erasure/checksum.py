"""Fragment checksums: CRC-32, computed by ISA-L when available, else by zlib.

CRC-32 catches the corruption it is for (bit rot, torn writes, bad
transfers); it is not a defence against an attacker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

Buffer = bytes | bytearray | memoryview


class Crc32(Protocol):
    """A CRC-32 of ``data``, continuing ``crc``."""

    def __call__(self, data: Buffer, crc: int = 0, /) -> int: ...


# # zlib's crc32 (Debian's zlib 1.2.13) runs at 1.8-2.6 GB/s on the build
# machine; ISA-L's crc32_gzip_refl computes the same CRC-32 at ~9.5 GB/s. A
# 64 MiB chunk is checked once by the container and once by the client on each
# read and each write, so the difference is ~25 ms of CPU per check. ISA-L
# ships inside pyeclib's wheel (pyeclib.libs/libisal-*.so), or comes from the
# system (libisal2), so no new dependency is needed; without it zlib is used.


class _PyBuffer(ctypes.Structure):
    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    )


_SMALL = 4096  # below this, zlib's call is cheaper than the ctypes round trip


def _zlib_crc32(data: Buffer, crc: int = 0) -> int:
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def _isal_candidates() -> Iterator[str]:
    """Paths of ISA-L: pyeclib's bundled copy first, then the system's (a slower lookup)."""
    spec = importlib.util.find_spec("pyeclib")
    if spec is not None and spec.origin:
        # auditwheel puts the wheel's own libraries beside the package, in pyeclib.libs/.
        yield from sorted(str(p) for p in Path(spec.origin).parent.parent.glob("pyeclib.libs/libisal*.so*"))
    system = ctypes.util.find_library("isal")
    if system:
        yield system


def _buffer_crc32(fn: Callable[[int, int, int], int]) -> Crc32:
    """``fn(init, address, length)`` over any contiguous buffer, without copying it."""
    get_buffer = ctypes.pythonapi.PyObject_GetBuffer
    get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
    get_buffer.restype = ctypes.c_int
    release = ctypes.pythonapi.PyBuffer_Release
    release.argtypes = (ctypes.POINTER(_PyBuffer),)
    release.restype = None

    def crc32(data: Buffer, crc: int = 0) -> int:
        if len(data) < _SMALL:
            return zlib.crc32(data, crc) & 0xFFFFFFFF
        view = _PyBuffer()
        get_buffer(data, ctypes.byref(view), 0)  # PyBUF_SIMPLE: contiguous bytes, or it raises BufferError
        try:
            return int(fn(crc, view.buf, view.len))
        finally:
            release(ctypes.byref(view))

    return crc32


def _load_isal_crc32() -> Crc32 | None:
    """ISA-L's CRC-32, checked against zlib; None when unavailable."""
    probe = bytes(range(256)) * 64 + b"dynostore"
    for name in _isal_candidates():
        try:
            fn = ctypes.CDLL(name).crc32_gzip_refl
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_uint32
        fn.argtypes = (ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint64)
        crc32 = _buffer_crc32(fn)
        same = all(crc32(p) == _zlib_crc32(p) for p in (probe, memoryview(probe)[7:], bytearray(probe[:5000])))
        if same and crc32(probe[5000:], crc32(probe[:5000])) == _zlib_crc32(probe):  # continued, as zlib's
            return crc32
    return None


def _pick_crc32() -> Crc32:
    try:
        return _load_isal_crc32() or _zlib_crc32
    except (OSError, AttributeError, ValueError, TypeError):
        return _zlib_crc32


checksum: Crc32 = _pick_crc32()
checksum.__doc__ = """CRC-32 (zlib's) of a contiguous buffer as an unsigned int, computed by ISA-L when it is available.

``checksum(rest, checksum(start))`` continues a CRC, as ``zlib.crc32`` does."""
