"""Shared fixtures: every test must leave no child process behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

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


def dependencies_required() -> bool:
    """Whether a missing test dependency fails the run instead of skipping.

    ``scripts/test.sh`` sets ``DYNOSTORE_REQUIRE_ALL=1`` when it ran as root and
    installed every package, as CI does; ``CI=true`` asks for the same.
    """
    return os.environ.get("DYNOSTORE_REQUIRE_ALL") == "1" or os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip for ``reason`` (a missing dependency), or fail where every dependency must be present."""
    if dependencies_required():
        pytest.fail(f"A test dependency is missing where all are required (DYNOSTORE_REQUIRE_ALL/CI): {reason}")
    pytest.skip(reason)


def _process_table() -> dict[int, tuple[int, str]]:
    """Pid -> (parent pid, state) of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), fields[0])
    return table


def descendant_pids(root: int | None = None) -> set[int]:
    """Pids of the live (non-zombie) processes below ``root`` (default: this process), at any depth."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [os.getpid() if root is None else root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return {pid for pid in found if table[pid][1] != "Z"}


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (zombies count as gone)."""
    table = _process_table()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


@pytest.fixture(autouse=True)
def _no_leaked_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose child processes outlive it (module fixtures excepted)."""
    before = child_pids()
    yield
    deadline = time.monotonic() + 5
    while (leaked := child_pids() - before - SESSION_PIDS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"{request.node.nodeid} left child processes running: {sorted(leaked)}"
