"""The ``dynostore`` command: run the fabric's daemons and move data.

Client commands read the gateway address and token from ``--gateway`` /
``--token`` or the ``DYNOSTORE_GATEWAY`` / ``DYNOSTORE_TOKEN`` variables.
"""

from __future__ import annotations

import logging
import sys
from contextlib import suppress

from dynostore.cli.commands import client_command
from dynostore.cli.daemons import daemon, demo, s3_door, up
from dynostore.cli.parser import CONTAINER_COMMANDS, build_parser, container_parser
from dynostore.errors import DynoStoreError
from dynostore.rpc.requests import configure_logging

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    words = sys.argv[1:] if argv is None else argv
    if len(words) >= 2 and words[0] == "container" and words[1] in CONTAINER_COMMANDS:
        # `dynostore container drain|rm|ls`: administer containers (`dynostore container` runs one).
        args = container_parser().parse_args(words[1:])
        args.command, args.verbose, args.log_format = "container-admin", False, "text"
    else:
        args = build_parser().parse_args(argv)
    try:
        configure_logging(
            logging.INFO if args.verbose or args.command in ("gateway", "container") else logging.WARNING,
            args.log_format,
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        if args.command in ("gateway", "container"):
            return daemon(args, words)
        if args.command == "up":
            return up(args)
        if args.command == "certs":
            from dynostore.rpc.tls import make_certs

            paths = make_certs(args.directory, args.host or ["127.0.0.1", "localhost"])
            for what, path in paths.items():
                print(f"{what:>6}: {path}")
            return 0
        if args.command == "demo":
            return demo(args)
        if args.command == "s3":
            return s3_door(args, words)
        if args.command == "web":
            from dynostore.web import serve as serve_web

            if not args.gateway:
                raise SystemExit("error: no gateway; pass --gateway or set DYNOSTORE_GATEWAY.")
            with suppress(KeyboardInterrupt):
                serve_web(args.gateway, args.listen, args.tls_ca, args.relay)
            return 0
        return client_command(args)
    except DynoStoreError as exc:
        request = (
            f" (request {exc.request_id}: the servers' log lines about it carry this id)" if exc.request_id else ""
        )
        print(f"error: {exc}{request}", file=sys.stderr)
        return 1
