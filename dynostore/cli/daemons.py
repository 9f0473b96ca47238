"""The commands that run servers: a gateway (or its workers), a container, the S3 door, a local fabric, the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from dynostore.cli.parser import UP_PORT

if TYPE_CHECKING:
    from dynostore.container.server import ContainerSettings
    from dynostore.gateway.server import GatewaySettings


def daemon(args: argparse.Namespace, argv: list[str]) -> int:
    """Run a gateway or a container until SIGTERM/SIGINT (``argv``: the command line, for workers)."""
    from dynostore.config import read_secret, settings_from

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "verbose", "log_format")}
    if args.command == "gateway":
        from dynostore.gateway.server import GatewaySettings
        from dynostore.gateway.server import serve as serve_gateway

        gateway = settings_from(GatewaySettings, args.config, "gateway", flags)
        admin_token = os.environ.get("DYNOSTORE_ADMIN_TOKEN")
        if gateway.admin_token_file:
            admin_token = read_secret(admin_token, gateway.admin_token_file, "admin token")
        if gateway.workers > 1:
            return _supervise(argv, gateway, "gateway")
        asyncio.run(serve_gateway(gateway, admin_token))
    else:
        from dynostore.container.keyfile import KEYS_FILE
        from dynostore.container.server import ContainerSettings, container_identity
        from dynostore.container.server import serve as serve_container

        container = settings_from(ContainerSettings, args.config, "container", flags)
        token = read_secret(
            os.environ.get("DYNOSTORE_TOKEN"), container.token_file, "container token (DYNOSTORE_TOKEN)"
        )
        if container.workers > 1:
            assert container.root is not None  # ContainerSettings asks for it
            # One id for every worker, and no keys file of an earlier run for them to trust.
            identity = container_identity(container)
            (container.root / KEYS_FILE).unlink(missing_ok=True)
            return _supervise([*argv, "--id", identity], container, "container")
        asyncio.run(serve_container(container, token))
    return 0


def _supervise(argv: list[str], settings: GatewaySettings | ContainerSettings, what: str) -> int:
    """Run ``settings.workers`` processes of this command on one port until SIGTERM/SIGINT."""
    from dynostore.rpc.workers import Supervisor

    supervisor = Supervisor(
        argv,
        settings.workers,
        settings.listen,
        ready_file=settings.ready_file,
        metrics_listen=settings.metrics_listen,
        metrics_ready_file=settings.metrics_ready_file,
        what=what,
    )
    return supervisor.run()


def s3_door(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the S3 front door (or its workers) until SIGTERM/SIGINT (``argv``: the command line, for workers)."""
    from dynostore.s3.server import serve as serve_s3

    if not args.gateway:
        raise SystemExit("error: no gateway; pass --gateway or set DYNOSTORE_GATEWAY.")
    token = os.environ.get("DYNOSTORE_ADMIN_TOKEN") or args.token
    if not token:
        raise SystemExit("error: the S3 front door needs an admin token in $DYNOSTORE_ADMIN_TOKEN.")
    if not 1 <= args.workers <= 64:
        raise SystemExit(f"error: --workers must be from 1 to 64, not {args.workers}.")
    if not args.leftover_grace >= 0:
        raise SystemExit(f"error: --leftover-grace must be 0 or more seconds, not {args.leftover_grace}.")
    if args.workers > 1:
        from dynostore.rpc.workers import Supervisor

        return Supervisor(argv, args.workers, args.listen, ready_file=args.ready_file, what="s3").run()
    tls_ca = Path(args.tls_ca) if args.tls_ca else None
    with suppress(KeyboardInterrupt):
        asyncio.run(
            serve_s3(args.gateway, token, args.listen, args.region, args.ready_file, tls_ca, args.leftover_grace)
        )
    return 0


def up(args: argparse.Namespace) -> int:
    """Run a local fabric in the foreground until Ctrl-C or SIGTERM (``dynostore up``)."""
    from dynostore.local import ContainerSpec, FabricConfig, LocalFabric, load_fabric_config

    if args.config and args.containers is not None:
        raise SystemExit("error: give --containers or --config, not both.")
    if args.config:
        config = load_fabric_config(args.config)
    else:
        config = FabricConfig([ContainerSpec() for _ in range(5 if args.containers is None else args.containers)])
    root = args.root or config.root or "./dynostore-data"
    k = config.k if args.k is None else args.k
    m = config.m if args.m is None else args.m
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fabric = LocalFabric(
        containers=config.containers,
        root=root,
        k=k,
        m=m,
        tls=args.tls,
        gateway_port=UP_PORT,
        etcd_members=args.etcd_members,
        gateways=args.gateways,
        s3=args.s3,
    )
    with fabric:
        for note in fabric.port_notes:
            print(f"note: {note}")
        print(f"DynoStore is up: {len(fabric.containers)} containers, state in {fabric.root}")
        if len(fabric.etcd_members) > 1 or len(fabric.gateways) > 1:
            print(f"etcd members: {fabric.etcd_endpoints}")
        print(f"export DYNOSTORE_GATEWAY={','.join(fabric.gateway_addresses)}")
        if fabric.tls_ca:
            print(f"export DYNOSTORE_TLS_CA={fabric.tls_ca}")
        print(f"export DYNOSTORE_TOKEN={fabric.admin_token}   # admin token, keep it secret")
        if fabric.s3_endpoint:
            print(f"S3 front door: {fabric.s3_endpoint}   # keys: dynostore token new --s3")
        print("Press Ctrl-C to stop.", flush=True)
        with suppress(KeyboardInterrupt):
            stop.wait()
        print("Stopping...", flush=True)
    print(f"DynoStore stopped; its state stays in {fabric.root} for the next `dynostore up`.", flush=True)
    return 0


def demo(args: argparse.Namespace) -> int:
    """Start a local fabric, put and get an object, stop (``dynostore demo``)."""
    from dynostore.demo import run_demo

    run_demo(args.root)
    return 0
