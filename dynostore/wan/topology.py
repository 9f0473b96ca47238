"""The simulated WAN's topology: a network namespace per site, veth links through a router, and the fabric in it.

See :mod:`dynostore.wan` for the picture and examples.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from dynostore.local import ContainerSpec, LocalFabric, ManagedProcess, Placement

log = logging.getLogger(__name__)

# The port every container (and its relay) listens on, in its site's namespace.
CONTAINER_PORT = 7000
# The third octet of etcd host i's subnet (sites use 1-200, the core 0, this machine's link 255).
ETCD_SUBNET = 240
MAX_ETCD_HOSTS = 9
_COUNTER = itertools.count()
_NAME = re.compile(r"^dw-(\d+)-(\d+)-")


@dataclass(frozen=True)
class Site:
    """One site of the WAN and its link's impairment.

    Attributes:
        name: the site label (also its containers' ``site``).
        rtt_ms: round-trip delay added between the site and everyone else.
        jitter_ms: the delay varies by up to this much either way (order is kept).
        loss: fraction of packets lost (0-1); with the relay, an approximation (see the module).
    """

    name: str
    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0


FIVE_SITES = [Site(f"site{i}", rtt_ms=rtt) for i, rtt in enumerate((1, 5, 20, 50, 100))]


def unavailable() -> str | None:
    """Why this machine cannot build a simulated WAN (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "The WAN simulation needs Linux network namespaces."
    if os.geteuid() != 0:
        return "The WAN simulation needs root (network namespaces, veth links, routes)."
    if shutil.which("ip") is None:
        return "The WAN simulation needs iproute2's `ip` (apt-get install iproute2)."
    return None


def _run(*argv: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (``input_text`` on its stdin); raise RuntimeError with its output when ``check`` and it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, input=input_text)
    if check and done.returncode:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers() -> list[str]:
    """Delete the namespaces of topologies whose process is gone; return their names."""
    removed = []
    for line in _run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    return removed


def _free_octet() -> int:
    """A second octet O such that nothing on this machine uses 10.O.0.0/16 yet."""
    used = _run("ip", "-o", "addr").stdout + _run("ip", "-o", "route").stdout + _run("ip", "-o", "-4", "route").stdout
    for octet in random.sample(range(64, 192), 128):
        if f" 10.{octet}." not in used and f"inet 10.{octet}." not in used:
            return octet
    raise RuntimeError("No free 10.O.0.0/16 subnet for the WAN simulation.")


class Wan:
    """A hub namespace routing between a core namespace, one namespace per site, and this machine.

    Attributes:
        sites: the sites, as given (their impairment as last set by :meth:`impair`).
        mode: ``netem`` or ``relay``: how delay, jitter and loss are made (known once started).
        core_host: the core namespace's address (etcd members and gateways listen there).
    """

    def __init__(self, sites: Sequence[Site] = FIVE_SITES, *, impairment: str = "auto", etcd_hosts: int = 0) -> None:
        """Describe (not build) a topology of ``sites``; ``impairment``: ``auto``, ``netem`` or ``relay``.

        ``etcd_hosts``: namespaces for etcd members of their own (0: the members run in the core).

        Raises:
            ValueError: no sites, a name given twice, more than 200 sites, an unknown ``impairment``,
                or ``etcd_hosts`` not between 0 and 9.
        """
        names = [site.name for site in sites]
        if not names or len(set(names)) != len(names) or len(names) > 200:
            raise ValueError("Give between 1 and 200 sites, each with a name of its own.")
        if not 0 <= etcd_hosts <= MAX_ETCD_HOSTS:
            raise ValueError(f"etcd_hosts must be between 0 and {MAX_ETCD_HOSTS}, not {etcd_hosts}.")
        self.etcd_hosts = etcd_hosts
        if impairment not in ("auto", "netem", "relay"):
            raise ValueError(f"impairment must be auto, netem or relay, not {impairment!r}.")
        self.sites = list(sites)
        self._wanted = impairment
        self.mode = ""
        number = next(_COUNTER)
        self.run_id = f"{os.getpid()}-{number}"
        # Link names (15 characters at most) carry the same pid and number, in hex.
        self._tag = f"{os.getpid():x}{number:x}"[-9:]
        self.namespaces: list[str] = []
        self.octet = 0
        self.core_host = ""
        self._root_link = f"dw{self._tag}r"
        self._relays: dict[str, ManagedProcess] = {}
        # The relays' settings, ready files and logs (made at start).
        self._work = Path()
        self._started = False

    # names and addresses ------------------------------------------------------

    @property
    def hub(self) -> str:
        """The router namespace's name."""
        return f"dw-{self.run_id}-hub"

    @property
    def core(self) -> str:
        """The core namespace's name (etcd members and gateways)."""
        return f"dw-{self.run_id}-core"

    def namespace(self, site: str) -> str:
        """The namespace of ``site``."""
        return f"dw-{self.run_id}-s{self._index(site)}"

    def host(self, site: str) -> str:
        """The address of ``site``'s namespace (its container's address)."""
        return f"10.{self.octet}.{self._index(site) + 1}.2"

    def etcd_namespace(self, member: int) -> str:
        """The namespace of etcd host ``member`` (with ``etcd_hosts``)."""
        return f"dw-{self.run_id}-e{member}"

    def etcd_host(self, member: int) -> str:
        """The address of etcd host ``member``'s namespace."""
        return f"10.{self.octet}.{ETCD_SUBNET + member}.2"

    def _etcd_link(self, member: int) -> tuple[str, str]:
        """The names of etcd host ``member``'s link: (its end in its namespace, its end in the hub)."""
        if not 0 <= member < self.etcd_hosts:
            raise KeyError(f"No etcd host {member}; this topology has {self.etcd_hosts}.")
        return f"dw{self._tag}e{member}", f"dw{self._tag}f{member}"

    def _index(self, site: str) -> int:
        for index, known in enumerate(self.sites):
            if known.name == site:
                return index
        raise KeyError(f"No site {site!r}; the sites are {[s.name for s in self.sites]}.")

    def _site_link(self, site: str) -> tuple[str, str]:
        """The names of ``site``'s link: (its end in the site, its end in the hub)."""
        index = self._index(site)
        return f"dw{self._tag}s{index}", f"dw{self._tag}h{index}"

    # life cycle ---------------------------------------------------------------

    def __enter__(self) -> Wan:
        """Build the topology (removed again if that fails)."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Remove everything."""
        self.stop()

    def start(self) -> None:
        """Create the namespaces, links, addresses, routes and impairments; on failure remove what was made.

        Raises:
            RuntimeError: a command failed (not root, say), or ``netem`` was asked for and the kernel lacks it.
        """
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self._started = True
        self._work = Path(tempfile.mkdtemp(prefix="dynostore-wan-"))
        try:
            self.octet = _free_octet()
            self.core_host = f"10.{self.octet}.0.2"
            self._namespace(self.hub)
            _run("ip", "netns", "exec", self.hub, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
            self._leaf(self.core, f"dw{self._tag}c", f"dw{self._tag}k", 0)
            for index, site in enumerate(self.sites):
                inside, outside = self._site_link(site.name)
                self._leaf(self.namespace(site.name), inside, outside, index + 1)
            for member in range(self.etcd_hosts):
                self._leaf(self.etcd_namespace(member), *self._etcd_link(member), ETCD_SUBNET + member)
            # This machine's own link, and one route to every namespace through it.
            hub_end = f"dw{self._tag}R"
            _run("ip", "link", "add", self._root_link, "type", "veth", "peer", "name", hub_end)
            _run("ip", "link", "set", hub_end, "netns", self.hub)
            _run("ip", "addr", "add", f"10.{self.octet}.255.2/24", "dev", self._root_link)
            _run("ip", "link", "set", self._root_link, "up")
            _run("ip", "-n", self.hub, "addr", "add", f"10.{self.octet}.255.1/24", "dev", hub_end)
            _run("ip", "-n", self.hub, "link", "set", hub_end, "up")
            _run("ip", "route", "add", f"10.{self.octet}.0.0/16", "via", f"10.{self.octet}.255.1")
            self.mode = self._choose_mode()
            for site in self.sites:
                if self.mode == "relay":
                    self._start_relay(site)
                self.impair(site.name, site.rtt_ms, site.jitter_ms, site.loss)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the relays, delete the namespaces (and their links with them) and this machine's link."""
        errors: list[BaseException] = []
        for relay in self._relays.values():
            try:
                relay.stop()
            except BaseException as exc:
                errors.append(exc)
        self._relays.clear()
        if self._started:
            for name in reversed(self.namespaces):
                _run("ip", "netns", "del", name, check=False)
            self.namespaces.clear()
            if _run("ip", "link", "show", self._root_link, check=False).returncode == 0:
                _run("ip", "link", "del", self._root_link, check=False)
            shutil.rmtree(self._work, ignore_errors=True)
            self._started = False
        if errors:
            raise errors[0]

    def _namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _leaf(self, namespace: str, inside: str, outside: str, subnet: int) -> None:
        """A namespace linked to the hub: ``10.O.subnet.2`` inside, ``.1`` on the hub, its default route there."""
        self._namespace(namespace)
        _run(
            "ip", "link", "add", inside, "netns", namespace, "type", "veth", "peer", "name", outside, "netns", self.hub
        )
        _run("ip", "-n", namespace, "addr", "add", f"10.{self.octet}.{subnet}.2/24", "dev", inside)
        _run("ip", "-n", self.hub, "addr", "add", f"10.{self.octet}.{subnet}.1/24", "dev", outside)
        _run("ip", "-n", namespace, "link", "set", inside, "up")
        _run("ip", "-n", self.hub, "link", "set", outside, "up")
        _run("ip", "-n", namespace, "route", "add", "default", "via", f"10.{self.octet}.{subnet}.1")

    def _choose_mode(self) -> str:
        """``netem`` if asked for or available (probed on the hub's end of this machine's link), else ``relay``.

        Raises:
            RuntimeError: ``netem`` was asked for and the kernel has no ``sch_netem``.
        """
        if self._wanted == "relay":
            return "relay"
        probe = _run(
            "ip", "netns", "exec", self.hub, "tc", "qdisc", "add", "dev", f"dw{self._tag}R", "root", "netem",
            "delay", "1ms", check=False,
        )  # fmt: skip
        if probe.returncode == 0:
            _run("ip", "netns", "exec", self.hub, "tc", "qdisc", "del", "dev", f"dw{self._tag}R", "root")
            return "netem"
        if self._wanted == "netem":
            raise RuntimeError(f"The kernel has no netem qdisc: {probe.stderr.strip()}")
        log.info("No tc netem here (%s): delay, jitter and loss come from a userspace relay.", probe.stderr.strip())
        return "relay"

    def _control(self, site: str) -> Path:
        return self._work / f"{self.namespace(site)}.json"

    def _start_relay(self, site: Site) -> None:
        host = self.host(site.name)
        ready = self._work / f"{self.namespace(site.name)}.ready"
        relay = ManagedProcess(
            f"relay-{site.name}",
            [sys.executable, "-m", "dynostore.wan", "relay", f"{host}:{CONTAINER_PORT}",
             f"127.0.0.1:{CONTAINER_PORT}", str(self._control(site.name)), str(ready)],
            self._work / f"relay-{site.name}.log",
            prefix=("ip", "netns", "exec", self.namespace(site.name)),
        )  # fmt: skip
        self._write_control(site)
        relay.start()
        self._relays[site.name] = relay
        relay.wait_for_file(ready)

    def _write_control(self, site: Site) -> None:
        path = self._control(site.name)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps({"rtt": site.rtt_ms / 1000, "jitter": site.jitter_ms / 1000, "loss": site.loss}))
        temp.replace(path)

    # what tests and benchmarks change ----------------------------------------

    def impair(self, site: str, rtt_ms: float, jitter_ms: float = 0.0, loss: float = 0.0) -> None:
        """Set ``site``'s round-trip delay, jitter and loss (replacing what it had); takes effect at once.

        With the relay, "at once" is within its next look at its settings (every 0.1 s).

        Raises:
            ValueError: a negative delay or jitter, or a loss outside 0-1.
        """
        if rtt_ms < 0 or jitter_ms < 0 or not 0 <= loss <= 1:
            raise ValueError("Delay and jitter must be at least 0 and loss between 0 and 1.")
        index = self._index(site)
        self.sites[index] = replace(self.sites[index], rtt_ms=rtt_ms, jitter_ms=jitter_ms, loss=loss)
        if self.mode == "relay":
            self._write_control(self.sites[index])
            return
        inside, outside = self._site_link(site)
        half, spread = f"{rtt_ms / 2}ms", f"{jitter_ms / 2}ms"
        for namespace, device, lossy in ((self.namespace(site), inside, True), (self.hub, outside, False)):
            netem = ["delay", half, *([spread] if jitter_ms else []), *(["loss", f"{loss * 100}%"] if lossy else [])]
            _run("ip", "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", device, "root", "netem", *netem)

    def site_down(self, site: str) -> None:
        """Take ``site``'s link down at its end: packets to and from it vanish (its processes keep running)."""
        _run("ip", "-n", self.namespace(site), "link", "set", self._site_link(site)[0], "down")

    def site_up(self, site: str) -> None:
        """Bring ``site``'s link up again, with its route back to the hub."""
        self._link_up(self.namespace(site), self._site_link(site)[0], self._index(site) + 1)

    def etcd_down(self, member: int) -> None:
        """Take etcd host ``member``'s link down: neither gateways nor the other members reach it."""
        _run("ip", "-n", self.etcd_namespace(member), "link", "set", self._etcd_link(member)[0], "down")

    def etcd_up(self, member: int) -> None:
        """Bring etcd host ``member``'s link up again."""
        self._link_up(self.etcd_namespace(member), self._etcd_link(member)[0], ETCD_SUBNET + member)

    def etcd_isolate(self, member: int) -> None:
        """Drop every packet between etcd host ``member`` and the other etcd hosts (the gateways still reach it).

        Raises:
            RuntimeError: nftables' ``nft`` is missing (apt-get install nftables).
        """
        self._etcd_link(member)
        if shutil.which("nft") is None:
            raise RuntimeError("Isolating an etcd member needs nftables' `nft` (apt-get install nftables).")
        table = f"isolate{member}"
        own = f"10.{self.octet}.{ETCD_SUBNET + member}.0/24"
        chain = f"add chain inet {table} forward {{ type filter hook forward priority 0; }}"
        rules = [f"add table inet {table}", chain]
        for other in range(self.etcd_hosts):
            if other != member:
                theirs = f"10.{self.octet}.{ETCD_SUBNET + other}.0/24"
                rules += [
                    f"add rule inet {table} forward ip saddr {own} ip daddr {theirs} drop",
                    f"add rule inet {table} forward ip saddr {theirs} ip daddr {own} drop",
                ]
        _run("ip", "netns", "exec", self.hub, "nft", "-f", "-", input_text="\n".join(rules) + "\n")

    def etcd_rejoin(self, member: int) -> None:
        """Undo :meth:`etcd_isolate` (nothing if ``member`` is not isolated)."""
        self._etcd_link(member)
        _run("ip", "netns", "exec", self.hub, "nft", "delete", "table", "inet", f"isolate{member}", check=False)

    def _link_up(self, namespace: str, inside: str, subnet: int) -> None:
        _run("ip", "-n", namespace, "link", "set", inside, "up")
        # The default route went with the link; put it back (it may already be there).
        _run("ip", "-n", namespace, "route", "replace", "default", "via", f"10.{self.octet}.{subnet}.1")

    # the fabric ---------------------------------------------------------------

    @property
    def core_placement(self) -> Placement:
        """Where the fabric's gateways run, and its etcd members unless there are etcd hosts: the core namespace."""
        return Placement(self.core_host, ("ip", "netns", "exec", self.core))

    def etcd_placement(self, member: int) -> Placement:
        """Where etcd member ``member`` runs when there are etcd hosts: its own namespace."""
        self._etcd_link(member)
        return Placement(self.etcd_host(member), ("ip", "netns", "exec", self.etcd_namespace(member)))

    def container_placement(self, site: str) -> Placement:
        """Where ``site``'s container runs: its namespace, behind the relay when there is one."""
        host = self.host(site)
        prefix = ("ip", "netns", "exec", self.namespace(site))
        if self.mode == "relay":
            return Placement(host, prefix, f"127.0.0.1:{CONTAINER_PORT}", f"{host}:{CONTAINER_PORT}")
        return Placement(host, prefix, f"{host}:{CONTAINER_PORT}")

    def fabric(self, root: str | os.PathLike[str] | None = None, **options: object) -> LocalFabric:
        """A :class:`LocalFabric` (not started) with one fs container per site and its core in the core namespace.

        ``options`` go to :class:`LocalFabric` (``k``, ``m``, ``etcd_members``, ``gateways``...). With
        ``etcd_hosts``, etcd member i runs on etcd host i.

        Raises:
            RuntimeError: the topology is not started, or has fewer etcd hosts than ``etcd_members``.
            ValueError: ``tls`` or ``metrics`` asked for: not across the simulated WAN yet (the
                certificates name 127.0.0.1, and metrics listen there).
        """
        if not self.mode:
            raise RuntimeError("Start the WAN first.")
        if options.get("tls") or options.get("metrics"):
            raise ValueError("TLS and metrics are not available across the simulated WAN yet.")
        specs = [ContainerSpec(site=s.name, placement=self.container_placement(s.name)) for s in self.sites]
        if self.etcd_hosts:
            members = int(options.get("etcd_members", 1))  # type: ignore[call-overload]
            if members > self.etcd_hosts:
                raise RuntimeError(f"{members} etcd members asked for, but this topology has {self.etcd_hosts} hosts.")
            options["etcd_placements"] = [self.etcd_placement(i) for i in range(members)]
        return LocalFabric(specs, root, core=self.core_placement, **options)  # type: ignore[arg-type]
