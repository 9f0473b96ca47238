"""Run a fabric across a simulated WAN, and change the WAN while it runs (root only).

Usage:
    python scripts/wan.py up [--rtt 1,5,20,50,100] [--jitter 0] [--loss 0] [--etcd-members 3] [--gateways 2]
    python scripts/wan.py clean     # remove the namespaces of runs whose process died
    python scripts/wan.py probe     # can this machine run it, and with netem or the relay?

``up`` builds one namespace per site (one container each), a core namespace
(etcd members and gateways) and a router (see ``dynostore/wan/``), prints
``DYNOSTORE_GATEWAY=...`` and ``DYNOSTORE_TOKEN=...`` for clients on this
machine, then reads commands from standard input until ``quit`` or end of
input, and removes everything on the way out (also on SIGTERM or Ctrl-C):

    impair SITE RTT_MS [JITTER_MS [LOSS]]   e.g. "impair site0 201 0 0.05"
    down SITE | up SITE                     its link down (packets vanish) or up again
    kill NAME | stop NAME | start NAME      gateway, gateway1, etcd, etcd1, etcd2, container0...
    status                                  sites, impairments, processes
    quit
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from types import FrameType

from dynostore.local import LocalFabric, ManagedProcess
from dynostore.wan import Site, Wan, clean_leftovers, unavailable


def _status(wan: Wan, fabric: LocalFabric) -> str:
    lines = [f"delay by: {wan.mode}"]
    for site in wan.sites:
        lines.append(f"  {site.name}: {wan.host(site.name)} rtt {site.rtt_ms:g} ms, jitter {site.jitter_ms:g} ms, "
                     f"loss {site.loss:g}")  # fmt: skip
    for process in fabric.processes:
        address = getattr(process, "address", "")
        lines.append(f"  {process.name} {address}: {'running' if process.running else 'stopped'}")
    return "\n".join(lines)


def _command(line: str, wan: Wan, fabric: LocalFabric) -> bool:
    """Do one command line; False once it says quit."""
    words = line.split()
    if not words:
        return True
    verb, args = words[0], words[1:]
    processes: dict[str, ManagedProcess] = {p.name: p for p in fabric.processes}
    if verb == "quit":
        return False
    if verb == "status":
        print(_status(wan, fabric))
    elif verb == "impair" and 2 <= len(args) <= 4:
        values = [float(a) for a in args[1:]]
        wan.impair(args[0], *values)
    elif verb == "down" and len(args) == 1:
        wan.site_down(args[0])
    elif verb == "up" and len(args) == 1:
        wan.site_up(args[0])
    elif verb in ("kill", "stop", "start") and len(args) == 1 and args[0] in processes:
        getattr(processes[args[0]], verb)()
    else:
        print(f"Unknown command {line.strip()!r}; see `python scripts/wan.py --help`.")
        return True
    print("ok", flush=True)
    return True


def _up(args: argparse.Namespace) -> int:
    rtts = [float(r) for r in args.rtt.split(",")]
    sites = [Site(f"site{i}", rtt, args.jitter, args.loss) for i, rtt in enumerate(rtts)]

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    with (
        tempfile.TemporaryDirectory(prefix="dynostore-wan-fabric-") as root,
        Wan(sites) as wan,
        wan.fabric(root, k=args.k, m=args.m, etcd_members=args.etcd_members, gateways=args.gateways) as fabric,
    ):
        print(_status(wan, fabric))
        print(f"DYNOSTORE_GATEWAY={','.join(fabric.gateway_addresses)}")
        print(f"DYNOSTORE_TOKEN={fabric.admin_token}")
        print("Reading commands (impair, down, up, kill, stop, start, status, quit) from standard input.", flush=True)
        for line in sys.stdin:
            try:
                if not _command(line, wan, fabric):
                    break
            except (ValueError, KeyError, RuntimeError) as exc:
                print(f"error: {exc}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``scripts/wan.py`` command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run a fabric across a simulated WAN; commands from standard input")
    up.add_argument("--rtt", default="1,5,20,50,100", help="round trip of each site, ms (one site each)")
    up.add_argument("--jitter", type=float, default=0.0, help="jitter of every site, ms")
    up.add_argument("--loss", type=float, default=0.0, help="loss of every site (0-1)")
    up.add_argument("--etcd-members", type=int, default=3)
    up.add_argument("--gateways", type=int, default=2)
    up.add_argument("--k", type=int, default=3)
    up.add_argument("--m", type=int, default=2)
    sub.add_parser("clean", help="remove the namespaces of runs whose process is gone")
    sub.add_parser("probe", help="say whether this machine can run it, and how delay is made")
    args = parser.parse_args(argv)
    if reason := unavailable():
        print(reason, file=sys.stderr)
        return 2
    if args.command == "clean":
        removed = clean_leftovers()
        print(f"removed {len(removed)} namespaces" + (f": {', '.join(removed)}" if removed else ""))
        return 0
    if args.command == "probe":
        with Wan([Site("probe")]) as wan:
            print(f"ok: delay by {'tc netem' if wan.mode == 'netem' else 'the userspace relay (no sch_netem)'}")
        return 0
    return _up(args)


if __name__ == "__main__":
    sys.exit(main())
