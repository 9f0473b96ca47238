"""The ``dynostore`` command: run the fabric's daemons and move data.

Client commands read the gateway address and token from ``--gateway`` /
``--token`` or the ``DYNOSTORE_GATEWAY`` / ``DYNOSTORE_TOKEN`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from dynostore.cli_moves import CONTAINER_COMMANDS, container_command, container_parser, rebalance_args
from dynostore.cli_moves import rebalance_command as _rebalance_command
from dynostore.client import Client, UserInfo
from dynostore.errors import DynoStoreError
from dynostore.registry.usage import format_size, parse_count, parse_size
from dynostore.rpc.requests import configure_logging

# Files larger than this get a progress bar when stderr is a terminal.
PROGRESS_THRESHOLD = 8 * 1024 * 1024

# Seconds between two progress lines of `dynostore repair` when stderr is not a terminal.
REPAIR_REPORT_SECONDS = 5.0


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gateway",
        default=os.environ.get("DYNOSTORE_GATEWAY"),
        help="gateway host:port, or several comma-separated [$DYNOSTORE_GATEWAY]",
    )
    p.add_argument("--token", default=os.environ.get("DYNOSTORE_TOKEN"), help="your token [$DYNOSTORE_TOKEN]")
    p.add_argument(
        "--tls-ca",
        default=os.environ.get("DYNOSTORE_TLS_CA"),
        help="CA certificate of a fabric that runs TLS [$DYNOSTORE_TLS_CA]",
    )
    p.add_argument(
        "--relay",
        action="store_true",
        default=os.environ.get("DYNOSTORE_RELAY", "") not in ("", "0"),
        help="move data through the gateway, for hosts that cannot reach the containers [$DYNOSTORE_RELAY=1]",
    )
    p.add_argument(
        "--no-hedging",
        dest="hedging",
        action="store_false",
        default=os.environ.get("DYNOSTORE_HEDGING", "1") not in ("", "0"),
        help="wait for every chunk: no extra reads of lagging chunks, no puts that leave lagging chunks to "
        "repair [$DYNOSTORE_HEDGING=0]",
    )


def _tls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="... and this private key (PEM)")
    p.add_argument("--tls-ca", type=Path, help="CA certificate that signed the other servers' certificates")


def _log_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        # A daemon's own flag (after its command) must not reset one given before the command.
        default=default if default is not None else argparse.SUPPRESS,
        help="log lines as text or one JSON object per line, each with its request id [$DYNOSTORE_LOG_FORMAT]",
    )


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-listen", help="serve Prometheus metrics at http://HOST:PORT/metrics (off; port 0: any free port)"
    )
    p.add_argument("--metrics-ready-file", type=Path, help="write the metrics address here once it serves")
    p.add_argument(
        "--log-requests",
        action="store_const",
        const=True,
        help="log one line per call answered: method, status, duration, request id (off)",
    )


# The port `dynostore up` gives its gateway when it is free (the one the docs show);
# a root remembers the ports its fabric used and takes them again.
UP_PORT = 8095


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="dynostore", description="DynoStore data fabric.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    _log_args(parser, default=os.environ.get("DYNOSTORE_LOG_FORMAT", "text"))
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run a local fabric (etcd + gateway + containers) in the foreground")
    up.add_argument("--config", type=Path, help="TOML file describing a mixed fabric, e.g. fabric/mixed.toml")
    up.add_argument("--root", help="state directory (default ./dynostore-data)")
    up.add_argument("--containers", type=int, help="number of file-system containers (5; not with --config)")
    up.add_argument("--etcd-members", type=int, default=1, help="members of the etcd cluster (1; 3 survives a loss)")
    up.add_argument("--gateways", type=int, default=1, help="gateways, each reaching every etcd member (1)")
    up.add_argument("--s3", action="store_true", help="also run the S3 front door (dynostore s3; see docs/s3.md)")
    up.add_argument("--k", type=int, help="data fragments (3)")
    up.add_argument("--m", type=int, help="parity fragments (2)")
    up.add_argument(
        "--tls", action="store_true", help="everything over TLS (etcd too, with client certificates); certs in ROOT/tls"
    )

    certs = sub.add_parser("certs", help="make a CA and a server certificate for a TLS deployment")
    certs.add_argument("directory", type=Path, help="where to write ca.pem, ca-key.pem, server.pem and server-key.pem")
    certs.add_argument(
        "--host", action="append", default=[], help="name or address the servers are reached at (repeatable)"
    )

    web = sub.add_parser("web", help="serve the web UI (browse, upload, download, evict) for a gateway")
    _log_args(web)
    web.add_argument("--listen", default="127.0.0.1:8088", help="address to serve on (127.0.0.1:8088)")
    _client_args(web)

    door = sub.add_parser("s3", help="serve the S3 front door for a gateway (admin token in $DYNOSTORE_ADMIN_TOKEN)")
    door.add_argument("--listen", default="127.0.0.1:8096", help="address to serve on (127.0.0.1:8096)")
    door.add_argument("--region", default="us-east-1", help="the region clients sign for (us-east-1)")
    door.add_argument("--ready-file", type=Path, help="write the bound address here once serving")
    _client_args(door)

    demo = sub.add_parser("demo", help="start a local fabric, put and get an object, stop")
    demo.add_argument("--root", default=None, help="state directory (default: a temporary one)")

    gw = sub.add_parser("gateway", help="run a gateway (settings: --config FILE [gateway] table, then flags)")
    gw.add_argument("--config", type=Path, help="TOML settings file, e.g. gateway/gateway.toml")
    gw.add_argument("--etcd", help="etcd host:port, or its members' as a comma-separated list (default 127.0.0.1:2379)")
    gw.add_argument(
        "--etcd-call-timeout",
        type=float,
        help="seconds an etcd call may take on one member before it goes to the next (1.5)",
    )
    gw.add_argument("--listen", help="address to serve on (default 127.0.0.1:8095)")
    gw.add_argument("--k", type=int, help="default data fragments (3)")
    gw.add_argument("--m", type=int, help="default parity fragments (2)")
    gw.add_argument("--container-ttl", type=int, help="seconds a silent container stays registered (10)")
    gw.add_argument(
        "--inline-max-bytes", type=int, help="objects up to this size are kept inline in etcd, no chunks (4096; 0: off)"
    )
    gw.add_argument(
        "--object-cache-entries", type=int, help="object records (and inline bytes) cached in memory (10000; 0: none)"
    )
    gw.add_argument("--repair-interval", type=float, help="seconds between repair sweeps (300; 0: none)")
    gw.add_argument(
        "--repair-grace", type=float, help="seconds a container may be gone before its chunks are rebuilt (600)"
    )
    gw.add_argument(
        "--catalog-metrics-interval",
        type=float,
        help="with metrics: seconds between reads of every catalog's objects and bytes (60; 0: never)",
    )
    gw.add_argument(
        "--rebalance-interval", type=float, help="seconds between rebalances the gateway asks for by itself (0: never)"
    )
    gw.add_argument(
        "--move-check-interval",
        type=float,
        help="seconds between looks for drains and rebalances to resume (2; 0: only those asked here)",
    )
    gw.add_argument("--admin-token-file", type=Path, help="file with the bootstrap admin token")
    gw.add_argument("--ready-file", type=Path, help="write the bound address here once serving")
    _metrics_args(gw)
    _log_args(gw)
    _tls_args(gw)
    gw.add_argument("--etcd-tls-ca", type=Path, help="speak TLS to etcd, trusting this CA certificate (PEM)")
    gw.add_argument("--etcd-tls-cert", type=Path, help="client certificate to show etcd (--client-cert-auth)")
    gw.add_argument("--etcd-tls-key", type=Path, help="... and its private key (PEM)")

    ct = sub.add_parser(
        "container",
        help="run a data container (settings: --config FILE [container] table, then flags); "
        "`dynostore container drain|rm|ls` administer containers (admin)",
    )
    ct.add_argument("--config", type=Path, help="TOML settings file, e.g. containers/site-a.toml")
    ct.add_argument("--gateway", help="gateway host:port to register with (or several, comma-separated)")
    ct.add_argument("--root", type=Path, help="state directory (fs: also the chunks; s3/rados: the container id)")
    ct.add_argument("--backend", choices=["fs", "memory", "s3", "rados"], help="storage backend (fs)")
    ct.add_argument("--site", help="site label used by placement (default)")
    ct.add_argument("--listen", help="address to serve on (127.0.0.1:0: any free port)")
    ct.add_argument("--advertise", help="HOST:PORT to register instead, where a relay forwards to --listen")
    ct.add_argument("--id", dest="container_id", help="container id (default: kept under --root)")
    ct.add_argument("--token-file", type=Path, help="file with the token to register with")
    ct.add_argument("--ready-file", type=Path, help="write the bound address here once registered")
    _metrics_args(ct)
    _log_args(ct)
    _tls_args(ct)
    ct.add_argument("--capacity-bytes", type=int, help="capacity to report (s3: required in practice; rados: a cap)")
    ct.add_argument("--scrub-interval", type=float, help="seconds between scrubs of every chunk (86400; 0: never)")
    ct.add_argument(
        "--gc-grace", type=float, help="seconds a chunk no object relies on is kept before a scrub deletes it (21600)"
    )
    s3 = ct.add_argument_group("s3 backend (credentials: the two key files, else $AWS_ACCESS_KEY_ID...)")
    s3.add_argument("--s3-bucket", help="bucket to store chunks in (must exist)")
    s3.add_argument("--s3-endpoint", help="endpoint URL, e.g. http://rgw.example.org:7480 (default: AWS)")
    s3.add_argument("--s3-region", help="region name")
    s3.add_argument("--s3-prefix", help="object-name prefix of this container's chunks")
    s3.add_argument("--s3-access-key-file", type=Path, help="file holding the access key id")
    s3.add_argument("--s3-secret-key-file", type=Path, help="file holding the secret access key")
    s3.add_argument("--s3-part-size", type=int, help="multipart part size in bytes (8 MiB; at least 5 MiB)")
    rados = ct.add_argument_group("rados backend")
    rados.add_argument("--rados-pool", help="Ceph pool to store chunks in (must exist)")
    rados.add_argument("--ceph-conf", type=Path, help="ceph.conf of the cluster (default: librados' search path)")
    rados.add_argument("--rados-namespace", help="RADOS namespace of this container's chunks")
    rados.add_argument("--rados-object-size", type=int, help="bytes per RADOS object of a chunk (4 MiB)")

    put = sub.add_parser("put", help="store a file")
    put.add_argument("file", type=Path, help="the file to store (streamed, any size)")
    put.add_argument("--catalog", required=True, help="catalog of yours to put it in (made on first put)")
    put.add_argument("--name", help="object name (default: the file name)")
    put.add_argument("--ttl", type=float, help="seconds the object lives (default: the catalog's TTL, else forever)")
    put.add_argument(
        "--replace",
        action="store_true",
        help="replace atomically the object --key, or without it every object of this name in the catalog",
    )
    put.add_argument("--key", help="with --replace: the key of the object to replace (it keeps its key)")
    _client_args(put)

    get = sub.add_parser("get", help="fetch an object into a file")
    get.add_argument("key", help="the object's key (32 hex digits, as put printed it)")
    get.add_argument("-o", "--output", type=Path, required=True, help="file to write the object to")
    _client_args(get)

    ls = sub.add_parser("ls", help="list a catalog")
    ls.add_argument("catalog", help="name, or owner/name for a catalog shared with you")
    _client_args(ls)

    stat = sub.add_parser("stat", help="show an object's metadata and where its chunks are")
    stat.add_argument("key", help="the object's key")
    _client_args(stat)

    repair = sub.add_parser(
        "repair", help="rebuild chunks that are missing or on containers gone, for objects or whole catalogs"
    )
    repair.add_argument("keys", nargs="*", help="object keys")
    repair.add_argument("--catalog", action="append", default=[], help="repair every object of this catalog")
    repair.add_argument(
        "--verify", action="store_true", help="also read every chunk in full; rebuild those gone or corrupt"
    )
    _client_args(repair)

    rebalance = sub.add_parser(
        "rebalance", help="even out used space: move chunks from the fullest containers to the emptiest (admin)"
    )
    rebalance_args(rebalance)

    status = sub.add_parser("status", help="the fabric at a glance: gateways, etcd, containers, totals, repair")
    status.add_argument("--json", action="store_true", help="print everything as JSON")
    _client_args(status)
    rm = sub.add_parser("rm", help="evict an object")
    rm.add_argument("key", help="the object's key (evicting an absent key is not an error)")
    rm.add_argument("-v", "--verbose", dest="report", action="store_true", help="say whether the object existed")
    _client_args(rm)

    user = sub.add_parser("user", help="manage users (admin token)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create a user and print its token")
    add.add_argument("name", help="user name: lower-case letter first, then letters, digits, _ or -")
    add.add_argument(
        "--container", action="store_true", help="a container credential: may only register containers (one per site)"
    )
    _client_args(add)
    _client_args(user_sub.add_parser("ls", help="list users with their usage and quota"))
    quota = user_sub.add_parser("quota", help="limit what a user may store (puts beyond it are refused)")
    quota.add_argument("name", help="the user")
    quota.add_argument("--bytes", type=parse_size, default=0, help="bytes, as 10G, 512M, 1.5T (0: unlimited)")
    quota.add_argument("--objects", type=parse_count, default=0, help="objects, as 1000000 or 1e6 (0: unlimited)")
    _client_args(quota)
    remove = user_sub.add_parser("rm", help="remove a user and revoke its tokens (its catalogs stay unless --purge)")
    remove.add_argument("name", help="the user to remove")
    remove.add_argument(
        "--purge", action="store_true", help="also delete every catalog the user owns, evicting its objects"
    )
    _client_args(remove)

    catalog = sub.add_parser("catalog", help="manage catalogs")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    _client_args(catalog_sub.add_parser("ls", help="list your catalogs and those shared with you"))
    for verb, text in (("create", "create an empty catalog"), ("info", "describe a catalog")):
        one = catalog_sub.add_parser(verb, help=text)
        what = "catalog name" if verb == "create" else "name, or owner/name if shared with you"
        one.add_argument("catalog", help=what)
        if verb == "create":
            one.add_argument("--k", type=int, default=0, help="data fragments of puts into it (gateway default)")
            one.add_argument("--m", type=int, default=0, help="parity fragments of puts into it")
            one.add_argument("--ttl", type=float, default=0.0, help="seconds its objects live unless a put says")
        _client_args(one)
    drop = catalog_sub.add_parser("rm", help="delete a catalog")
    drop.add_argument("catalog", help="a catalog of yours")
    drop.add_argument("--force", action="store_true", help="also evict the objects it holds")
    _client_args(drop)

    share = sub.add_parser("share", help="share a catalog for reading")
    share_sub = share.add_subparsers(dest="share_command", required=True)
    for verb, text in (("add", "let USER read CATALOG"), ("rm", "take USER's access to CATALOG away")):
        one = share_sub.add_parser(verb, help=text)
        one.add_argument("catalog", help="a catalog of yours")
        one.add_argument("user", help="the user who may (or may no longer) read it")
        _client_args(one)
    readers = share_sub.add_parser("ls", help="list who may read CATALOG")
    readers.add_argument("catalog", help="a catalog of yours")
    _client_args(readers)

    watch = sub.add_parser("watch", help="print a catalog's events as they happen (Ctrl-C stops)")
    watch.add_argument("catalog", help="name, or owner/name for a catalog shared with you")
    watch.add_argument("--from-revision", type=int, default=0, help="replay events from this revision on")
    _client_args(watch)

    token = sub.add_parser("token", help="manage tokens (yours; anyone's with an admin token)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    new = token_sub.add_parser("new", help="create a token and print it (shown only once)")
    new.add_argument("--user", help="whose token (admin only; default: yours)")
    new.add_argument("--s3", action="store_true", help="an S3 access key id and secret for the S3 front door instead")
    _client_args(new)
    listing = token_sub.add_parser("ls", help="list token ids")
    listing.add_argument("--user", help="whose tokens (admin only; default: yours)")
    _client_args(listing)
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", help="the token's id (16 hex digits, from token ls)")
    _client_args(revoke)
    return parser


def _show_progress(size: int) -> bool:
    return size >= PROGRESS_THRESHOLD and sys.stderr.isatty()


def _client_command(args: argparse.Namespace) -> int:

    if not args.gateway:
        raise SystemExit("error: no gateway; pass --gateway or set DYNOSTORE_GATEWAY.")
    if not args.token:
        raise SystemExit("error: no token; pass --token or set DYNOSTORE_TOKEN.")
    with Client(args.gateway, tls_ca=args.tls_ca, relay=args.relay, hedging=args.hedging) as client:
        if args.command == "put":
            progress = _show_progress(args.file.stat().st_size)
            print(
                client.put_file(
                    args.file,
                    token_user=args.token,
                    catalog=args.catalog,
                    name=args.name,
                    progress=progress,
                    ttl=args.ttl,
                    replace=args.replace,
                    key=args.key,
                )
            )
        elif args.command == "get":
            progress = _show_progress(client.size(args.key, token_user=args.token))
            client.get_file(args.key, args.output, token_user=args.token, progress=progress)
        elif args.command == "ls":
            for info in client.list(args.catalog, token_user=args.token):
                print(f"{info.key}  {info.size:>12}  {info.name}")
        elif args.command == "rm":
            existed = client.evict(args.key, token_user=args.token)
            if args.report or args.verbose:
                print(f"evicted {args.key}" if existed else f"no object {args.key}: nothing to evict")
        elif args.command == "repair":
            return _repair(client, args)
        elif args.command == "stat":
            _stat(client, args)
        elif args.command == "container-admin":
            return container_command(client, args)
        elif args.command == "rebalance":
            return _rebalance_command(client, args)
        elif args.command == "status":
            _status(client, args)
        elif args.command == "user":
            _user_command(client, args)
        elif args.command == "token":
            _token_command(client, args)
        elif args.command == "catalog":
            _catalog_command(client, args)
        elif args.command == "share":
            _share_command(client, args)
        elif args.command == "watch":
            _watch(client, args)
    return 0


def _stat(client: Client, args: argparse.Namespace) -> None:
    stat = client.stat(args.key, token_user=args.token)
    info = stat.info
    print(f"key      {info.key}\nname     {info.name}\ncatalog  {info.owner}/{info.catalog}\nsize     {info.size}")
    print(f"created  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(info.created))}")
    if stat.inline:
        print("stored   inline in the registry (etcd), no chunks")
        return
    # Chunks sharing a live container: the object then survives fewer container losses.
    holders = Counter(c.container_id for c in stat.chunks if c.live)
    shared = [c.index for c in stat.chunks if c.live and holders[c.container_id] > 1]
    flags = "  DEGRADED: run dynostore repair" if stat.degraded else ""
    if shared:
        flags += "  UNDER-SPREAD: chunks share a container (repair moves them apart once another container is live)"
    print(f"policy   k={stat.k} m={stat.m}{flags}")
    for chunk in stat.chunks:
        state = "ok" if chunk.live else "missing" if not chunk.stored else "container gone"
        if chunk.index in shared:
            state += ", shares its container"
        print(f"chunk {chunk.index:<2} {chunk.container_id}  {state}")


def _repair(client: Client, args: argparse.Namespace) -> int:
    """Repair the named objects and catalogs with progress (objects, bytes, rate, estimate); 1 if any failed."""
    sizes = {key: client.size(key, token_user=args.token) for key in args.keys}
    for catalog in args.catalog:
        sizes.update((info.key, info.size) for info in client.list(catalog, token_user=args.token))
    if not sizes:
        raise SystemExit("error: name object keys or --catalog.")
    rebuilt = failed = done = 0
    # On a terminal, a live bar; otherwise (logs, CI) a line every REPAIR_REPORT_SECONDS.
    live = sys.stderr.isatty()
    reported = started = time.monotonic()
    with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc="repair", disable=not live) as bar:
        for key, size in sizes.items():
            try:
                count = client.repair(key, token_user=args.token, verify=args.verify)
            except DynoStoreError as exc:
                failed += 1
                tqdm.write(f"{key}: not repaired: {exc}", file=sys.stderr)
            else:
                rebuilt += count
                if count:
                    tqdm.write(f"{key}: rebuilt {count} chunk(s)")
            done += 1
            bar.update(size)
            bar.set_postfix_str(f"{done}/{len(sizes)} objects")
            if not live and time.monotonic() - reported >= REPAIR_REPORT_SECONDS:
                reported = time.monotonic()
                print(_repair_progress(done, len(sizes), bar.n, bar.total, reported - started), file=sys.stderr)
    print(f"{len(sizes)} object(s) checked, {rebuilt} chunk(s) rebuilt, {failed} object(s) not repaired")
    return 1 if failed else 0


def _repair_progress(done: int, total: int, done_bytes: float, total_bytes: float, elapsed: float) -> str:
    """One progress line of a repair: objects and bytes done, rate, estimate of the time left."""
    rate = done_bytes / elapsed if elapsed > 0 else 0.0
    left = f", about {(total_bytes - done_bytes) / rate:.0f} s left" if rate > 0 else ""
    return (
        f"repair: {done}/{total} objects, {done_bytes / 1e6:.1f}/{total_bytes / 1e6:.1f} MB, "
        f"{rate / 1e6:.1f} MB/s{left}"
    )


def _catalog_command(client: Client, args: argparse.Namespace) -> None:
    if args.catalog_command == "ls":
        me = client.whoami(token_user=args.token)
        for info in client.list_catalogs(token_user=args.token):
            print(info.name if info.owner == me else f"{info.owner}/{info.name}")
    elif args.catalog_command == "create":
        client.create_catalog(args.catalog, token_user=args.token, k=args.k, m=args.m, ttl=args.ttl)
    elif args.catalog_command == "info":
        info = client.describe_catalog(args.catalog, token_user=args.token)
        print(f"catalog {info.owner}/{info.name}: {info.objects} objects, {info.bytes} bytes")
        print(f"policy: {f'k={info.k} m={info.m}' if info.k else 'the gateway default'}")
        print(f"objects live: {f'{info.ttl:g} s unless a put says otherwise' if info.ttl else 'forever'}")
        print(f"shared with: {', '.join(info.shared_with) or 'nobody'}")
    else:
        evicted = client.delete_catalog(args.catalog, token_user=args.token, force=args.force)
        print(f"deleted {args.catalog}; {evicted} object(s) evicted")


def _share_command(client: Client, args: argparse.Namespace) -> None:
    if args.share_command == "add":
        client.share(args.catalog, args.user, token_user=args.token)
    elif args.share_command == "rm":
        if not client.unshare(args.catalog, args.user, token_user=args.token):
            print(f"{args.user} had no access to {args.catalog}", file=sys.stderr)
    else:
        for reader in client.describe_catalog(args.catalog, token_user=args.token).shared_with:
            print(reader)


def _watch(client: Client, args: argparse.Namespace) -> None:
    with suppress(KeyboardInterrupt):
        for event in client.subscribe(args.catalog, token_user=args.token, start_revision=args.from_revision):
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
            what = event.user if event.kind in ("share", "unshare") else f"{event.key} {event.size:>10} {event.name}"
            print(f"{stamp} rev {event.revision:>6} {event.kind:<7} {what}", flush=True)


def _user_command(client: Client, args: argparse.Namespace) -> None:
    if args.user_command == "add":
        print(client.create_user(args.name, token_user=args.token, container=args.container))
    elif args.user_command == "ls":
        for user in client.list_users(token_user=args.token):
            role = "  (admin)" if user.admin else "  (container)" if user.container else ""
            print(f"{user.name}{role}{_usage_line(user)}")
    elif args.user_command == "quota":
        user = client.set_quota(args.name, token_user=args.token, bytes=args.bytes, objects=args.objects)
        print(f"quota of {user.name} set{_usage_line(user)}")
    else:
        removal = client.remove_user(args.name, token_user=args.token, purge=args.purge)
        evicted = f"; {removal.objects_evicted} object(s) evicted" if args.purge else ""
        print(f"removed {args.name}; {removal.tokens_revoked} token(s) revoked{evicted}")


def _status(client: Client, args: argparse.Namespace) -> None:
    """The fabric at a glance, and what the caller's objects take of its quota."""
    fabric = client.status(token_user=args.token)
    usage = client.usage(token_user=args.token)
    me = UserInfo(client.whoami(token_user=args.token), False, 0.0, usage=usage)
    if args.json:
        print(json.dumps({**fabric.to_json(), "you": {"name": me.name, **asdict(usage)}}, indent=2))
    else:
        print(f"{fabric.describe()}\nyou ({me.name}):{_usage_line(me)}")


def _usage_line(user: UserInfo) -> str:
    """``  1.2 GiB of 10 GiB, 12 of 1000000 objects`` (no quota: ``of unlimited``); empty for container users."""
    if user.usage is None:
        return ""
    usage = user.usage
    quota_bytes = format_size(usage.quota_bytes) if usage.quota_bytes else "unlimited"
    quota_objects = usage.quota_objects or "unlimited"
    return f"  {format_size(usage.bytes)} of {quota_bytes}, {usage.objects} of {quota_objects} objects"


def _token_command(client: Client, args: argparse.Namespace) -> None:
    if args.token_command == "new" and args.s3:
        access_key_id, secret = client.create_s3_key(token_user=args.token, user=args.user)
        print(f"aws_access_key_id = {access_key_id}")
        print(f"aws_secret_access_key = {secret}")
        print("the secret is not shown again", file=sys.stderr)
    elif args.token_command == "new":
        token, info = client.create_token(token_user=args.token, user=args.user)
        print(token)
        print(f"token id {info.id} (for revoking); the token itself is not shown again", file=sys.stderr)
    elif args.token_command == "ls":
        for info in client.list_tokens(token_user=args.token, user=args.user):
            print(f"{info.id}  {info.user}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.created))}")
    else:
        client.revoke_token(args.id, token_user=args.token)


def _daemon(args: argparse.Namespace) -> int:
    """Run a gateway or a container until SIGTERM/SIGINT."""
    from dynostore.config import read_secret, settings_from

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "verbose", "log_format")}
    if args.command == "gateway":
        from dynostore.gateway.server import GatewaySettings
        from dynostore.gateway.server import serve as serve_gateway

        gateway = settings_from(GatewaySettings, args.config, "gateway", flags)
        admin_token = os.environ.get("DYNOSTORE_ADMIN_TOKEN")
        if gateway.admin_token_file:
            admin_token = read_secret(admin_token, gateway.admin_token_file, "admin token")
        asyncio.run(serve_gateway(gateway, admin_token))
    else:
        from dynostore.container.server import ContainerSettings
        from dynostore.container.server import serve as serve_container

        container = settings_from(ContainerSettings, args.config, "container", flags)
        token = read_secret(
            os.environ.get("DYNOSTORE_TOKEN"), container.token_file, "container token (DYNOSTORE_TOKEN)"
        )
        asyncio.run(serve_container(container, token))
    return 0


def _s3(args: argparse.Namespace) -> int:
    """Run the S3 front door until SIGTERM/SIGINT."""
    from dynostore.s3.server import serve as serve_s3

    if not args.gateway:
        raise SystemExit("error: no gateway; pass --gateway or set DYNOSTORE_GATEWAY.")
    token = os.environ.get("DYNOSTORE_ADMIN_TOKEN") or args.token
    if not token:
        raise SystemExit("error: the S3 front door needs an admin token in $DYNOSTORE_ADMIN_TOKEN.")
    tls_ca = Path(args.tls_ca) if args.tls_ca else None
    with suppress(KeyboardInterrupt):
        asyncio.run(serve_s3(args.gateway, token, args.listen, args.region, args.ready_file, tls_ca))
    return 0


def _up(args: argparse.Namespace) -> int:
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


def _demo(args: argparse.Namespace) -> int:
    from dynostore.demo import run_demo

    run_demo(args.root)
    return 0


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
            return _daemon(args)
        if args.command == "up":
            return _up(args)
        if args.command == "certs":
            from dynostore.rpc.tls import make_certs

            paths = make_certs(args.directory, args.host or ["127.0.0.1", "localhost"])
            for what, path in paths.items():
                print(f"{what:>6}: {path}")
            return 0
        if args.command == "demo":
            return _demo(args)
        if args.command == "s3":
            return _s3(args)
        if args.command == "web":
            from dynostore.web import serve as serve_web

            if not args.gateway:
                raise SystemExit("error: no gateway; pass --gateway or set DYNOSTORE_GATEWAY.")
            with suppress(KeyboardInterrupt):
                serve_web(args.gateway, args.listen, args.tls_ca, args.relay)
            return 0
        return _client_command(args)
    except DynoStoreError as exc:
        request = (
            f" (request {exc.request_id}: the servers' log lines about it carry this id)" if exc.request_id else ""
        )
        print(f"error: {exc}{request}", file=sys.stderr)
        return 1
