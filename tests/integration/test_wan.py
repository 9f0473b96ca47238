"""Sites across a simulated WAN (issue 15, items 4 and 6): placement by site, a whole site lost, failures under load.

Five sites at 1, 5, 20, 50 and 100 ms round trip, each in a network
namespace of its own with one container; three etcd hosts, one namespace
each, for the etcd members; the gateways in a core namespace (see
:mod:`dynostore.wan`). Needs root, else the tests skip.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.client import Client
from dynostore.errors import Unavailable
from dynostore.local import LocalFabric
from dynostore.rpc import auth_metadata
from dynostore.wan import FIVE_SITES, Wan, unavailable
from tests.conftest import skip_or_fail
from tests.faults import workload
from tests.faults.checker import Checker
from tests.faults.harness import hygiene
from tests.faults.ledger import INLINE_MAX, JOIN_LIMIT, RECOVERY_LIMIT, Figures, Ledger, within
from tests.faults.workload import Worker
from tests.integration.conftest import eventually, is_etcd_leader

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
K, M = 3, 2
# Reads of a chunk at a site that is gone give up after this long and read parity instead.
FRAGMENT_TIMEOUT = 3.0
T = TypeVar("T")


@pytest.fixture(scope="module")
def wan() -> Iterator[Wan]:
    """The five-site topology, shared by the module's tests (each leaves every site up and unimpaired again)."""
    reason = unavailable()
    if reason:
        skip_or_fail(reason)
    with Wan(FIVE_SITES, etcd_hosts=3) as topology:
        yield topology


def sites_of(fabric: LocalFabric, client: Client, key: str, token: str) -> Counter[str]:
    """How many chunks of ``key`` each site holds (stored ones only)."""
    site = {c.container_id: c.site for c in fabric.containers}
    return Counter(site[c.container_id] for c in client.stat(key=key, token_user=token).chunks if c.stored)


def test_containers_listen_on_their_sites_addresses(wan: Wan, tmp_path: Path) -> None:
    with wan.fabric(tmp_path / "fabric", k=K, m=M) as fabric:
        assert fabric.gateway.startswith(wan.core_host + ":")
        assert [c.address for c in fabric.containers] == [f"{wan.host(s.name)}:7000" for s in wan.sites]
        token = fabric.create_user("alice")
        with grpc.insecure_channel(fabric.gateway) as channel:
            reply = gateway_pb2_grpc.GatewayStub(channel).ListContainers(
                gateway_pb2.ListContainersRequest(), metadata=auth_metadata(token), timeout=10
            )
        assert {(c.address, c.site) for c in reply.containers} == {(c.address, c.site) for c in fabric.containers}


def test_placement_honours_sites_and_a_whole_site_lost_costs_one_chunk(wan: Wan, tmp_path: Path) -> None:
    rng = random.Random(1501)
    with (
        wan.fabric(tmp_path / "fabric", k=K, m=M, inline_max_bytes=INLINE_MAX) as fabric,
        fabric.client(timeout=30.0, fragment_timeout=FRAGMENT_TIMEOUT) as client,
    ):
        token = fabric.create_user("alice")
        objects = {}
        for size in (INLINE_MAX + 1, 200_000, 1 * MiB, 4 * MiB, 7 * MiB):  # one segment and several
            data = rng.randbytes(size)
            objects[client.put(data, catalog="wan", token_user=token)] = data
        for key in objects:
            assert sites_of(fabric, client, key, token) == Counter({s.name: 1 for s in wan.sites}), key

        lost = "site2"
        wan.site_down(lost)
        try:
            for key, data in objects.items():
                assert sites_of(fabric, client, key, token)[lost] <= M
                assert client.get(key=key, token_user=token) == data
            # A put during the outage stores at least k+1 chunks, none at the lost site.
            during = rng.randbytes(1 * MiB)
            key = client.put(during, catalog="wan", token_user=token)
            objects[key] = during
            assert sites_of(fabric, client, key, token)[lost] == 0
            assert sum(sites_of(fabric, client, key, token).values()) >= K + 1
            assert client.get(key=key, token_user=token) == during
        finally:
            wan.site_up(lost)

        for key, data in objects.items():
            assert client.get(key=key, token_user=token) == data

        def whole_again() -> bool:
            """The object put during the outage has its missing chunk rebuilt, at the site that is back."""
            try:
                client.repair(key, token_user=token)
            except Unavailable:
                return False
            return sites_of(fabric, client, key, token) == Counter({s.name: 1 for s in wan.sites})

        assert eventually(whole_again, within=30.0)


# item 6: failures during a workload ------------------------------------------

WORKERS = 3
# What "reads go on" holds to: none of these may raise (repairs may, while a site is gone).
READ_OPS = frozenset({"get", "get_batch", "exists", "get_unplaced"})
PHASE_SECONDS = 4.0
LOST_SITE = "site3"


def reads(figures: Figures) -> int:
    """Gets and batched gets that returned so far."""
    return figures.ops["get", "ok"] + figures.ops["get_batch", "ok"]


def test_gateway_etcd_member_and_site_lost_one_at_a_time_then_together(
    wan: Wan, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Kill a gateway, an etcd member, a whole site, then one of each at once, under puts and gets.

    The fault-injection suite's ledger and checks hold the run to its
    promises: every put that returned reads back byte-identical, nothing is
    lost after recovery and repair gives every object n chunks on distinct
    live containers. Reads go on: during every fault some read returns (the
    fault lasts until one does), and no read raises.
    """
    caplog.set_level(logging.INFO)
    # The workers run until the faults are over (a fault lasts until a read returned), not for a fixed count.
    monkeypatch.setattr(workload, "MAX_OPS_PER_WORKER", 100_000)
    figures = Figures("wan", 1502)
    ledger = Ledger(figures)
    rng = random.Random(1502)
    files = tmp_path / "files"
    files.mkdir()
    with wan.fabric(
        tmp_path / "fabric",
        k=K,
        m=M,
        inline_max_bytes=INLINE_MAX,
        etcd_members=3,
        gateways=2,
        gateway_args=["--container-ttl", "5"],
    ) as fabric:
        token = fabric.create_user("chaos")
        clients = [fabric.client(timeout=30.0, fragment_timeout=FRAGMENT_TIMEOUT) for _ in range(3)]
        first, second, probe = clients
        workers = [
            Worker(i, (first, second)[i % 2], token, ledger, rng.randrange(2**32), files, time.monotonic() + 3600)
            for i in range(WORKERS)
        ]
        try:
            started = time.monotonic()
            for worker in workers:
                worker.start()
            went_on: dict[str, bool] = {}

            def phase(name: str, hurt: list[str]) -> None:
                """Hurt what ``hurt`` names, let the workload run on until a read returned, then bring it back."""
                ledger.event(f"{name}: {', '.join(hurt)} down")
                figures.faults.update(hurt)
                if "gateway" in hurt:
                    fabric.gateways[0].kill()
                if "etcd" in hurt:
                    fabric.etcd_members[1].kill()
                if "site" in hurt:
                    wan.site_down(LOST_SITE)
                try:
                    before = reads(figures)
                    time.sleep(PHASE_SECONDS)
                    went_on[name] = within(RECOVERY_LIMIT, lambda: reads(figures) > before)
                finally:
                    if "site" in hurt:
                        wan.site_up(LOST_SITE)
                    if "etcd" in hurt:
                        fabric.etcd_members[1].start()
                    if "gateway" in hurt:
                        fabric.gateways[0].start()
                ledger.event(f"{name}: back")

            assert within(RECOVERY_LIMIT, lambda: reads(figures) > 0)  # objects to read before the first fault
            phase("gateway", ["gateway"])
            phase("etcd", ["etcd"])
            phase("site", ["site"])
            phase("together", ["gateway", "etcd", "site"])
        finally:
            for worker in workers:
                worker.deadline = 0.0  # each stops after its operation in flight
            for worker in workers:
                worker.join(JOIN_LIMIT)
        try:
            assert not any(w.is_alive() for w in workers), f"workers did not finish within {JOIN_LIMIT} s"
            figures.workload_seconds = time.monotonic() - started
            checker = Checker(fabric, probe, token, ledger)
            assert within(RECOVERY_LIMIT, checker.registered), "not every container registered again"
            checker.check()
        finally:
            for client in clients:
                client.close()
    out, err = capfd.readouterr()
    sys.stdout.write(out)
    sys.stderr.write(err)
    hygiene(figures, caplog.records, err)
    print("\n".join(figures.lines()))
    assert not figures.violations, "\n".join(figures.violations[:30])
    assert figures.objects_checked > 0
    assert all(went_on.values()), f"no read returned during some fault within {RECOVERY_LIMIT} s: {went_on}"
    failed = {f"{op} {why}": n for (op, why), n in figures.ops.items() if op in READ_OPS and why[0].isupper()}
    assert not failed, f"reads raised: {failed}"


# an etcd member cut off by the network -----------------------------------------

# How long a gateway may go on trusting a cache whose watch is on a member that lost the cluster.
STALE_LIMIT = 20.0


def _settled(call: Callable[[], T], within_seconds: float) -> T:
    """``call()``'s result once it returns, retried while the fabric fails over (Unavailable)."""
    deadline = time.monotonic() + within_seconds
    while True:
        try:
            return call()
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _reads_back(client: Client, key: str, token: str, data: bytes) -> bool:
    try:
        return client.get(key=key, token_user=token) == data
    except Unavailable:
        return False


def test_an_etcd_member_cut_off_is_failed_over_and_no_gateway_serves_stale_records(wan: Wan, tmp_path: Path) -> None:
    """A real partition of an etcd member, twice: cut off from the other members only, then entirely.

    Both gateways' calls and watches start on member 0. Cut off from its
    peers, member 0 still answers pings but has no leader: its watches must
    end (else the first gateway's record cache, which makes no etcd call for
    a cached get, would serve the old version for ever). Then the leader's
    link goes down: calls fail over, and again an object replaced through the
    second gateway reads as the new version through the first. Every object
    reads back afterwards, and the members rejoin.
    """
    if shutil.which("nft") is None:
        skip_or_fail("Cutting an etcd member off needs nftables' `nft` (apt-get install nftables).")
    with wan.fabric(tmp_path / "fabric", k=K, m=M, inline_max_bytes=INLINE_MAX, etcd_members=3, gateways=2) as fabric:
        token = fabric.create_user("parted")
        first, second = (Client(g.address, timeout=30.0, fragment_timeout=FRAGMENT_TIMEOUT) for g in fabric.gateways)
        try:
            versions = [os.urandom(20_000) for _ in range(3)]
            key = first.put(versions[0], token_user=token, catalog="parted")
            assert first.get(key=key, token_user=token) == versions[0]  # its record cached by the first gateway
            kept = {key: versions[0]}

            def replaced_and_seen(version: bytes) -> float:
                """Replace the object through the second gateway; seconds until the first gateway returns it."""
                _settled(lambda: second.put(version, token_user=token, catalog="parted", replace=True, key=key), 30)
                written = time.monotonic()
                assert eventually(lambda: _reads_back(first, key, token, version), within=STALE_LIMIT)
                kept[key] = version
                return time.monotonic() - written

            wan.etcd_isolate(0)
            try:
                seen_isolated = replaced_and_seen(versions[1])
                extra = _settled(lambda: first.put(b"during isolation", token_user=token, catalog="parted"), 30)
                kept[extra] = b"during isolation"
            finally:
                wan.etcd_rejoin(0)

            assert eventually(lambda: any(map(is_etcd_leader, fabric.etcd_members)), within=30)
            leader = next(i for i, member in enumerate(fabric.etcd_members) if is_etcd_leader(member))
            cut = time.monotonic()
            wan.etcd_down(leader)
            try:
                extra = _settled(lambda: first.put(b"leader cut off", token_user=token, catalog="parted"), 30)
                failover = time.monotonic() - cut
                kept[extra] = b"leader cut off"
                seen_down = replaced_and_seen(versions[2])
            finally:
                wan.etcd_up(leader)
            print(
                f"stale record window, member isolated: {seen_isolated:.1f} s; leader cut off: first put "
                f"{failover:.1f} s after the cut, replaced object seen {seen_down:.1f} s after its put"
            )

            for client in (first, second):
                for stored, data in kept.items():
                    assert _settled(lambda: client.get(key=stored, token_user=token), 30) == data  # noqa: B023

            def all_healthy() -> bool:
                try:
                    return all(etcd_healthy(member.client_url) for member in fabric.etcd_members)
                except OSError:
                    return False

            assert eventually(all_healthy, within=30), "the cut-off members did not rejoin their cluster"
        finally:
            first.close()
            second.close()


def etcd_healthy(client_url: str) -> bool:
    """Whether the etcd member at ``client_url`` reports itself healthy (it has a leader)."""
    with urllib.request.urlopen(f"{client_url}/health", timeout=2) as reply:
        return bool(json.loads(reply.read()).get("health") == "true")


# the topology's own hygiene, the tool and the benchmark ------------------------


def namespaces_of(pid: int) -> list[str]:
    """The namespaces that topologies of process ``pid`` made and did not remove."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(f"dw-{pid}-")]


def test_a_topology_that_fails_to_start_leaves_nothing_behind(wan: Wan, monkeypatch: pytest.MonkeyPatch) -> None:
    before = set(namespaces_of(os.getpid()))
    broken = Wan(FIVE_SITES[:2])

    def fail() -> str:
        raise RuntimeError("made to fail")

    monkeypatch.setattr(broken, "_choose_mode", fail)
    with pytest.raises(RuntimeError, match="made to fail"):
        broken.start()
    assert set(namespaces_of(os.getpid())) == before
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"dw{broken._tag}r" not in links
    assert (
        f"10.{broken.octet}.0.0/16"
        not in subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    )


def run_tool(argv: list[str], stdin: str = "") -> tuple[str, int]:
    """Run a script to its end; return what it printed and its pid."""
    process = subprocess.Popen(
        [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = process.communicate(stdin, timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, out
    return out, process.pid


def test_the_wan_tool_runs_a_fabric_and_changes_the_wan(wan: Wan) -> None:
    commands = "impair site0 201 0 0.05\ndown site1\nup site1\nkill gateway\nstart gateway\nstatus\nquit\n"
    out, pid = run_tool(["scripts/wan.py", "up", "--rtt", "1,5,20"], commands)
    assert "DYNOSTORE_GATEWAY=" in out
    assert out.count("ok\n") == 6, out  # every command but quit
    assert "rtt 201 ms, jitter 0 ms, loss 0.05" in out, out
    assert "gateway 10." in out
    assert "Unknown command" not in out
    assert namespaces_of(pid) == []


def test_the_wan_benchmark_runs_on_tiny_counts(wan: Wan) -> None:
    out, pid = run_tool([
        "-m", "bench.bench_wan", "--sizes", "64K", "--count", "1", "--objects", "1",
        "--conditions", "healthy,slow", "--hedging", "off,on", "--failover", "1", "--failover-timeouts", "2",
    ])  # fmt: skip
    assert "| off | healthy | 64 KiB |" in out, out
    assert "| off | slow | 64 KiB |" in out, out
    assert "| on | slow | 64 KiB |" in out, out  # measured, or said to be missing from this build
    assert "| etcd leader, client timeout 2 s | 1 |" in out, out
    assert "| gateway (the client's), client timeout 2 s | 1 |" in out, out  # found by its connection
    assert namespaces_of(pid) == []
