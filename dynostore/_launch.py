"""Exec a program that dies with its parent: ``python -m dynostore._launch PPID PROG ARGS...``.

LocalFabric starts every child through this, so that no child outlives a test
or script that crashed. Doing it here rather than in ``preexec_fn`` keeps the
parent's fork fast and clear of gRPC's fork handlers (which can break the
child of a process with live gRPC threads).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    """Set the parent-death signal, check the parent is still there, exec."""
    parent, program, *args = argv
    # Not on Linux: no parent-death signal, but the fabric still stops its children on exit.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit("The parent exited before the child started.")
    os.execvp(program, [program, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
