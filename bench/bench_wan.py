"""Get latency across a simulated WAN, with one site slow or lossy, and failover time after a SIGKILL.

Usage: python -m bench.bench_wan [--sizes 1M,64M] [--count 20] [--large-count 5]
       [--conditions healthy,slow,lossy] [--hedging off,on] [--failover 3]

Five sites at 1, 5, 20, 50 and 100 ms round trip (:mod:`dynostore.wan`),
one container each, k=3 m=2; a 3-member etcd cluster and two gateways in the
core namespace; the client on this machine. ``slow`` adds 200 ms to the
round trip of ``--slow-site`` (default site0, the fastest: the one a
latency-aware client leans on most), ``lossy`` gives it 5% loss. Each
condition puts ``--objects`` objects per size and reads them in turn, ``--count``
gets each (``--large-count`` for objects of 16 MiB and more); p99 of a few
dozen gets is close to their maximum. After each change of condition,
``--warmup`` untimed gets of a 1 MiB object let the client's latency
estimates learn it (the first get after a change goes by the old estimates
and may wait for one round trip of the changed site). ``--hedging on`` needs a Client that
takes ``hedging=``; without one the rows say so. Failover: SIGKILL of the
gateway the client is connected to, of the etcd leader and of an etcd
follower, then the time until the first 1 KiB put succeeds, ``--failover``
times each. Needs root.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import label, parse_size
from dynostore.client import Client
from dynostore.errors import DynoStoreError
from dynostore.local import LocalFabric, PinnedHandle
from dynostore.rpc.tuning import tune_malloc
from dynostore.wan import FIVE_SITES, Wan, unavailable

SLOW_MS = 200.0
LOSS = 0.05
LARGE = 16 << 20


def hedging_supported() -> bool:
    """Whether this build's Client takes ``hedging=`` (issue 15, item 5)."""
    return "hedging" in inspect.signature(Client).parameters


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


@dataclass
class Row:
    """Gets of one size under one condition and hedging setting."""

    hedging: str
    condition: str
    size: int
    seconds: list[float]
    note: str = ""
    # Objects with a data chunk (read without hedging) at the slow or lossy site, of all objects.
    at_site: tuple[int, int] = (0, 0)

    def cells(self, healthy: Row | None) -> str:
        if not self.seconds:
            return f"| {self.hedging} | {self.condition} | {label(self.size)} | - | - | - | - | - | {self.note} |"
        p50, p99 = statistics.median(self.seconds), percentile(self.seconds, 0.99)
        mbps = self.size / statistics.mean(self.seconds) / 1e6
        ratio = f"{p99 / percentile(healthy.seconds, 0.99):.2f}x" if healthy and healthy.seconds else "-"
        share = f"{mbps / (self.size / statistics.mean(healthy.seconds) / 1e6):.2f}x" if healthy else "-"
        return (
            f"| {self.hedging} | {self.condition} | {label(self.size)} | {p50 * 1000:,.0f} | {p99 * 1000:,.0f} "
            f"| {mbps:,.1f} | {ratio} / {share} | {self.at_site[0]} of {self.at_site[1]} | {self.note} |"
        )


def get_latencies(
    client: Client, token: str, size: int, objects: int, count: int, site_container: str
) -> tuple[list[float], int]:
    """Put ``objects`` objects of ``size`` bytes, then time ``count`` gets of each; every read is checked.

    Also how many of the objects have a data chunk (index below k) on ``site_container``.
    """
    datas = [os.urandom(size) for _ in range(objects)]
    keys = [client.put(data, catalog="bench", token_user=token) for data in datas]
    stats = [client.stat(key=key, token_user=token) for key in keys]
    at_site = sum(any(c.index < s.k and c.container_id == site_container for c in s.chunks) for s in stats)
    seconds = []
    for _ in range(count):
        for key, data in zip(keys, datas, strict=True):
            started = time.perf_counter()
            got = client.get(key=key, token_user=token)
            seconds.append(time.perf_counter() - started)
            if got != data:
                raise SystemExit(f"A get of {label(size)} returned other bytes.")
    for key in keys:
        client.evict(key=key, token_user=token)
    return seconds, at_site


def connected_gateway(fabric: LocalFabric) -> PinnedHandle | None:
    """The gateway this process has an established TCP connection to (None: none, or more than one).

    gRPC's sockets may be IPv6 ones with IPv4-mapped addresses: both tables are read.
    """
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01":
                established.add(fields[2][-13:])  # the IPv4 address (last 32 bits) and the port
    found = []
    for gateway in fabric.gateways:
        host, port = gateway.address.rsplit(":", 1)
        if "".join(f"{b:02X}" for b in reversed(socket.inet_aton(host))) + f":{int(port):04X}" in established:
            found.append(gateway)
    return found[0] if len(found) == 1 else None


def etcd_member(fabric: LocalFabric, leader: bool) -> PinnedHandle:
    """The etcd cluster's leader, or a member that is not the leader."""
    statuses = []
    for member in fabric.etcd_members:
        request = urllib.request.Request(f"{member.client_url}/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as reply:
            status = json.loads(reply.read())
        statuses.append((member, status["header"]["member_id"] == status["leader"]))
    return next(member for member, is_leader in statuses if is_leader == leader)


def failover_seconds(
    fabric: LocalFabric, token: str, pick: Callable[[], PinnedHandle | None], timeout: float
) -> tuple[float, bool]:
    """Seconds from SIGKILL of ``pick()``'s server to the first 1 KiB put that succeeds; the server is restarted.

    The client's calls have ``timeout`` seconds each (puts that time out are tried again). Also
    whether ``pick`` found its server (else the first gateway was killed).
    """
    with fabric.client(timeout=timeout) as client:
        client.put(b"warm", catalog="failover", token_user=token)
        picked = pick()
        handle = picked or fabric.gateways[0]
        small = os.urandom(1024)
        started = time.monotonic()
        handle.kill()
        while True:
            try:
                client.put(small, catalog="failover", token_user=token)
                break
            except DynoStoreError:
                continue
        seconds = time.monotonic() - started
    handle.start()
    return seconds, picked is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,64M")
    parser.add_argument("--count", type=int, default=20, help="gets of each object (small sizes)")
    parser.add_argument("--large-count", type=int, default=5, help="gets of each object of 16 MiB and more")
    parser.add_argument("--objects", type=int, default=3, help="objects per size and condition")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed gets after each change of condition (the estimates learn it)"
    )
    parser.add_argument("--conditions", default="healthy,slow,lossy")
    parser.add_argument("--hedging", default="off,on", help="off, on, or both (on: only where the Client has it)")
    parser.add_argument("--slow-site", default="site0")
    parser.add_argument("--failover", type=int, default=3, help="kills of each kind (0: none)")
    parser.add_argument("--failover-timeouts", default="30,2", help="the failover client's call timeouts, seconds")
    parser.add_argument("--fragment-timeout", type=float, default=20.0, help="the client's fragment_timeout")
    args = parser.parse_args()
    if reason := unavailable():
        raise SystemExit(reason)
    tune_malloc()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    conditions = args.conditions.split(",")
    rows: list[Row] = []
    failovers: dict[str, list[float]] = {}
    unpicked: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory(prefix="dynobench-", dir=os.environ.get("BENCH_DIR")) as root,
        Wan(FIVE_SITES) as wan,
        wan.fabric(root, k=3, m=2, etcd_members=3, gateways=2) as fabric,
    ):
        token = fabric.create_user("bench")
        base = next(s for s in wan.sites if s.name == args.slow_site)
        slow_container = next(c.container_id for c in fabric.containers if c.site == base.name)
        for hedging in args.hedging.split(","):
            options: dict[str, object] = {"timeout": 600.0, "fragment_timeout": args.fragment_timeout}
            if hedging_supported():
                options["hedging"] = hedging == "on"
            elif hedging == "on":
                rows += [Row(hedging, c, s, [], "no hedging in this build") for c in conditions for s in sizes]
                continue
            with fabric.client(**options) as client:
                for condition in conditions:
                    rtt = base.rtt_ms + (SLOW_MS if condition == "slow" else 0.0)
                    wan.impair(base.name, rtt, loss=LOSS if condition == "lossy" else 0.0)
                    time.sleep(0.3)  # the relay looks at its settings every 0.1 s
                    if args.warmup:
                        warm = client.put(os.urandom(1 << 20), catalog="bench", token_user=token)
                        for _ in range(args.warmup):
                            client.get(key=warm, token_user=token)
                        client.evict(key=warm, token_user=token)
                    try:
                        for size in sizes:
                            count = args.large_count if size >= LARGE else args.count
                            times, at_site = get_latencies(client, token, size, args.objects, count, slow_container)
                            rows.append(Row(hedging, condition, size, times, at_site=(at_site, args.objects)))
                            print(f"done: hedging {hedging}, {condition}, {label(size)}", file=sys.stderr, flush=True)
                    finally:
                        wan.impair(base.name, base.rtt_ms)
        kinds: list[tuple[str, Callable[[], PinnedHandle | None]]] = [
            ("gateway (the client's)", lambda: connected_gateway(fabric)),
            ("etcd leader", lambda: etcd_member(fabric, leader=True)),
            ("etcd follower", lambda: etcd_member(fabric, leader=False)),
        ]
        for timeout in (float(t) for t in args.failover_timeouts.split(",")):
            for kind, pick in kinds:
                what = f"{kind}, client timeout {timeout:g} s"
                for _ in range(args.failover):
                    seconds, picked = failover_seconds(fabric, token, pick, timeout)
                    failovers.setdefault(what, []).append(seconds)
                    unpicked[what] = unpicked.get(what, 0) + (not picked)
        mode = wan.mode

    print(f"# DynoStore across a simulated WAN ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores)")  # fmt: skip
    print()
    how = "tc netem" if mode == "netem" else "the userspace delay relay (this kernel has no sch_netem)"
    print(f"Sites at {', '.join(f'{s.rtt_ms:g}' for s in FIVE_SITES)} ms round trip, delay by {how}; "
          f"slow: {args.slow_site} +{SLOW_MS:g} ms, lossy: {args.slow_site} {LOSS:.0%} loss.")  # fmt: skip
    print()
    print(
        f"| hedging | condition | size | get p50 ms | get p99 ms | MB/s | p99 / MB/s vs healthy "
        f"| objects with a data chunk at {args.slow_site} | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    healthy = {(r.hedging, r.size): r for r in rows if r.condition == "healthy"}
    for row in rows:
        print(row.cells(healthy.get((row.hedging, row.size)) if row.condition != "healthy" else None))
    if failovers:
        print()
        print("| SIGKILL of | kills | until a put succeeds: median / max s |")
        print("|---|---|---|")
        for what, times in failovers.items():
            missed = f" ({unpicked[what]} not the client's: not found)" if unpicked.get(what) else ""
            print(f"| {what} | {len(times)}{missed} | {statistics.median(times):.2f} / {max(times):.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
