"""``dynostore container drain|rm|ls`` and ``dynostore rebalance``: moving data between containers (admin).

``dynostore container`` alone runs a container daemon; these sub-commands
are told apart by their first word (their parser is in :mod:`dynostore.cli.parser`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from dynostore.client import Client, MoveStatus
from dynostore.registry.usage import format_size

# Seconds between two progress lines when stderr is not a terminal.
REPORT_SECONDS = 5.0


def _reporter(what: str) -> Callable[[MoveStatus], None]:
    """A progress callback printing a line per poll on a terminal, else every REPORT_SECONDS."""
    live = sys.stderr.isatty()
    last = [0.0]

    def report(status: MoveStatus) -> None:
        now = time.monotonic()
        if live or now - last[0] >= REPORT_SECONDS:
            last[0] = now
            print(f"{what}: {status.describe()}", file=sys.stderr, flush=True)

    return report


def _end(what: str, status: MoveStatus) -> int:
    print(f"{what}: {status.describe()}")
    if status.stuck_objects:
        print(f"stuck objects (their chunk stays): {', '.join(status.stuck_keys)}")
    return 0 if status.done or not status.stuck_objects else 1


def container_command(client: Client, args: argparse.Namespace) -> int:
    """Run ``dynostore container drain|rm|ls``; the exit status."""
    if args.container_command == "ls":
        for c in client.status(token_user=args.token).containers:
            state = "up" if c.up else "DOWN"
            drain = "  DRAINING" if c.draining else ""
            print(
                f"{c.id}  site {c.site or '-'}  {c.backend}  {state}{drain}  {c.chunk_count} chunks  "
                f"free {format_size(c.free_bytes)} of {format_size(c.capacity_bytes)}"
            )
        return 0
    if args.container_command == "rm":
        named = client.remove_container(args.container_id, token_user=args.token, force=args.force)
        extra = f" ({named} chunk(s) recorded there now count as lost)" if named else ""
        print(f"container {args.container_id} removed{extra}")
        return 0
    what = f"drain {args.container_id}"
    if args.stop:
        print(f"{what}: stopped; {client.stop_drain(args.container_id, token_user=args.token).describe()}")
        return 0
    status = client.drain_container(
        args.container_id,
        token_user=args.token,
        bandwidth=args.bandwidth,
        wait=not args.no_wait,
        progress=_reporter(what),
    )
    return _end(what, status)


def rebalance_command(client: Client, args: argparse.Namespace) -> int:
    """Run ``dynostore rebalance``; the exit status."""
    if args.stop:
        print(f"rebalance: stopped; {client.stop_rebalance(token_user=args.token).describe()}")
        return 0
    status = client.rebalance(
        token_user=args.token,
        bandwidth=args.bandwidth,
        wait=not args.no_wait,
        progress=_reporter("rebalance"),
    )
    return _end("rebalance", status)
