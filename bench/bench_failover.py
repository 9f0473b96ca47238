"""Failover time: from SIGKILL of a gateway or an etcd member, or SIGSTOP of one, to the first put+get that succeeds.

Usage: python -m bench.bench_failover [--trials 5] [--timeout 2]
       [--kinds gateway,follower,leader,frozen-follower,frozen-leader]

A ``LocalFabric`` on 127.0.0.1: 3 etcd members, 2 gateways, 5 containers
(k=3, m=2). The client is a ``Client`` of both gateways with ``--timeout``
seconds per call; after the fault it puts 1 KiB and gets it back, again and
again (a failed try is followed at once by the next), and the figure is the
time from the signal to the end of the first put+get that succeeds. Between
trials the killed process is started again (the frozen one gets SIGCONT)
and the fabric is left to settle: a put+get must succeed and, for etcd, a
leader must be known. ``gateway`` kills the two gateways in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dynostore.client import Client
from dynostore.errors import DynoStoreError
from dynostore.local import EtcdHandle, LocalFabric, PinnedHandle

KINDS = ["gateway", "follower", "leader", "frozen-follower", "frozen-leader"]


def _is_leader(member: EtcdHandle) -> bool:
    """Whether ``member`` says it leads (False if it does not answer)."""
    request = urllib.request.Request(f"{member.client_url}/v3/maintenance/status", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            status = json.loads(reply.read())
    except OSError:
        return False
    return bool(status["header"]["member_id"] == status["leader"])


def _leader(fabric: LocalFabric) -> EtcdHandle:
    """The etcd leader, once one is elected."""
    while True:
        for member in fabric.etcd_members:
            if _is_leader(member):
                return member
        time.sleep(0.1)


def _put_get(client: Client, token: str, data: bytes) -> bool:
    try:
        key = client.put(data, catalog="failover", token_user=token)
        return client.get(key=key, token_user=token) == data
    except DynoStoreError:
        return False


def _settle(fabric: LocalFabric, client: Client, token: str) -> None:
    """Wait until a leader is known and a put+get succeeds."""
    _leader(fabric)
    while not _put_get(client, token, b"settled"):
        time.sleep(0.1)


def one_trial(fabric: LocalFabric, client: Client, token: str, kind: str, trial: int) -> float:
    """Seconds from the fault ``kind`` to the end of the first put+get that succeeds; the fault is then undone."""
    _settle(fabric, client, token)
    victim: PinnedHandle
    if kind == "gateway":
        victim = fabric.gateways[trial % len(fabric.gateways)]
    else:
        leader = _leader(fabric)
        wants_leader = kind.endswith("leader")
        victim = leader if wants_leader else next(m for m in fabric.etcd_members if m is not leader)
    assert victim.pid is not None
    pid = victim.pid
    data = os.urandom(1024)
    undo: Callable[[], None]
    started = time.monotonic()
    if kind.startswith("frozen"):
        os.kill(pid, signal.SIGSTOP)
        undo = lambda: os.kill(pid, signal.SIGCONT)  # noqa: E731
    else:
        victim.kill()
        undo = victim.start
    try:
        while not _put_get(client, token, data):
            pass
        return time.monotonic() - started
    finally:
        undo()


def main() -> None:
    """Run the trials and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=2.0, help="the client's call timeout, seconds")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {sorted(unknown)}")
    times: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory() as root,
        LocalFabric(containers=5, root=Path(root), etcd_members=3, gateways=2) as fabric,
    ):
        token = fabric.create_user("bench")
        with Client(fabric.gateway_addresses, timeout=args.timeout) as client:
            for kind in kinds:
                for trial in range(args.trials):
                    times.setdefault(kind, []).append(one_trial(fabric, client, token, kind, trial))
                    print(f"{kind} trial {trial}: {times[kind][-1]:.2f} s", flush=True)
    print(f"\nclient timeout {args.timeout} s, {args.trials} trials each\n")
    print("| fault | trials | until a put+get succeeds: median / max s |")
    print("|---|---|---|")
    for kind, seconds in times.items():
        print(f"| {kind} | {len(seconds)} | {statistics.median(seconds):.2f} / {max(seconds):.2f} |")


if __name__ == "__main__":
    main()
