"""Shared fixtures: every test must leave no child process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Pids of servers that session fixtures start for the whole run (moto, ...):
# a test that happens to start one first has not leaked it.
SESSION_PIDS: set[int] = set()


def child_pids() -> set[int]:
    """Pids of this process's live (non-zombie) children."""
    me = os.getpid()
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.fixture(autouse=True)
def _no_leaked_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose child processes outlive it (module fixtures excepted)."""
    before = child_pids()
    yield
    deadline = time.monotonic() + 5
    while (leaked := child_pids() - before - SESSION_PIDS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"{request.node.nodeid} left child processes running: {sorted(leaked)}"
