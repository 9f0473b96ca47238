"""The ``dynostore`` command line's arguments: one parser, its sub-commands and their options."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dynostore.registry.usage import parse_count, parse_size


def client_args(p: argparse.ArgumentParser) -> None:
    """The options every client command takes: gateway, token, TLS CA, relay, hedging."""
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


def tls_args(p: argparse.ArgumentParser) -> None:
    """A server's TLS options: its certificate and key, and the CA of the others."""
    p.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="... and this private key (PEM)")
    p.add_argument("--tls-ca", type=Path, help="CA certificate that signed the other servers' certificates")


def log_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """The log format option: text, or one JSON object per line."""
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        # A daemon's own flag (after its command) must not reset one given before the command.
        default=default if default is not None else argparse.SUPPRESS,
        help="log lines as text or one JSON object per line, each with its request id [$DYNOSTORE_LOG_FORMAT]",
    )


def metrics_args(p: argparse.ArgumentParser) -> None:
    """A server's Prometheus metrics option, and its access log."""
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
# The sub-commands of `dynostore container` that administer containers instead of running one.
CONTAINER_COMMANDS = ("drain", "rm", "ls")

UP_PORT = 8095


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="dynostore", description="DynoStore data fabric.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    log_args(parser, default=os.environ.get("DYNOSTORE_LOG_FORMAT", "text"))
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
    log_args(web)
    web.add_argument("--listen", default="127.0.0.1:8088", help="address to serve on (127.0.0.1:8088)")
    client_args(web)

    door = sub.add_parser("s3", help="serve the S3 front door for a gateway (admin token in $DYNOSTORE_ADMIN_TOKEN)")
    door.add_argument("--listen", default="127.0.0.1:8096", help="address to serve on (127.0.0.1:8096)")
    door.add_argument("--region", default="us-east-1", help="the region clients sign for (us-east-1)")
    door.add_argument("--ready-file", type=Path, help="write the bound address here once serving")
    door.add_argument(
        "--leftover-grace",
        type=float,
        default=600.0,
        help="seconds before an overwrite or delete evicts the bytes a failed put left under its key (600); "
        "keep it above how long any put takes from its bytes to its commit, or another door's put may lose them",
    )
    door.add_argument(
        "--workers", type=int, default=1, help="processes serving the port (SO_REUSEPORT), each a core at most (1)"
    )
    client_args(door)

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
    gw.add_argument(
        "--workers", type=int, help="processes serving the port (SO_REUSEPORT), each using a core at most (1)"
    )
    gw.add_argument("--admin-token-file", type=Path, help="file with the bootstrap admin token")
    gw.add_argument("--ready-file", type=Path, help="write the bound address here once serving")
    metrics_args(gw)
    log_args(gw)
    tls_args(gw)
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
    ct.add_argument(
        "--workers", type=int, help="processes serving the port (SO_REUSEPORT), sharing --root (fs, s3, rados; 1)"
    )
    metrics_args(ct)
    log_args(ct)
    tls_args(ct)
    ct.add_argument("--capacity-bytes", type=int, help="capacity to report (s3: required in practice; rados: a cap)")
    ct.add_argument("--scrub-interval", type=float, help="seconds between scrubs of every chunk (86400; 0: never)")
    ct.add_argument(
        "--gc-grace", type=float, help="seconds a chunk no object relies on is kept before a scrub deletes it (21600)"
    )
    ct.add_argument(
        "--fs-buffered-writes",
        dest="fs_direct_writes",
        action="store_const",
        const=False,
        help="fs: write chunks past 8 MiB through the page cache too, not with O_DIRECT (off)",
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
    client_args(put)

    get = sub.add_parser("get", help="fetch an object into a file")
    get.add_argument("key", help="the object's key (32 hex digits, as put printed it)")
    get.add_argument("-o", "--output", type=Path, required=True, help="file to write the object to")
    client_args(get)

    ls = sub.add_parser("ls", help="list a catalog")
    ls.add_argument("catalog", help="name, or owner/name for a catalog shared with you")
    client_args(ls)

    stat = sub.add_parser("stat", help="show an object's metadata and where its chunks are")
    stat.add_argument("key", help="the object's key")
    client_args(stat)

    repair = sub.add_parser(
        "repair", help="rebuild chunks that are missing or on containers gone, for objects or whole catalogs"
    )
    repair.add_argument("keys", nargs="*", help="object keys")
    repair.add_argument("--catalog", action="append", default=[], help="repair every object of this catalog")
    repair.add_argument(
        "--verify", action="store_true", help="also read every chunk in full; rebuild those gone or corrupt"
    )
    client_args(repair)

    rebalance = sub.add_parser(
        "rebalance", help="even out used space: move chunks from the fullest containers to the emptiest (admin)"
    )
    rebalance_args(rebalance)

    status = sub.add_parser("status", help="the fabric at a glance: gateways, etcd, containers, totals, repair")
    status.add_argument("--json", action="store_true", help="print everything as JSON")
    client_args(status)
    rm = sub.add_parser("rm", help="evict an object")
    rm.add_argument("key", help="the object's key (evicting an absent key is not an error)")
    rm.add_argument("-v", "--verbose", dest="report", action="store_true", help="say whether the object existed")
    client_args(rm)

    user = sub.add_parser("user", help="manage users (admin token)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create a user and print its token")
    add.add_argument("name", help="user name: lower-case letter first, then letters, digits, _ or -")
    add.add_argument(
        "--container", action="store_true", help="a container credential: may only register containers (one per site)"
    )
    client_args(add)
    client_args(user_sub.add_parser("ls", help="list users with their usage and quota"))
    quota = user_sub.add_parser("quota", help="limit what a user may store (puts beyond it are refused)")
    quota.add_argument("name", help="the user")
    quota.add_argument("--bytes", type=parse_size, default=0, help="bytes, as 10G, 512M, 1.5T (0: unlimited)")
    quota.add_argument("--objects", type=parse_count, default=0, help="objects, as 1000000 or 1e6 (0: unlimited)")
    client_args(quota)
    remove = user_sub.add_parser("rm", help="remove a user and revoke its tokens (its catalogs stay unless --purge)")
    remove.add_argument("name", help="the user to remove")
    remove.add_argument(
        "--purge", action="store_true", help="also delete every catalog the user owns, evicting its objects"
    )
    client_args(remove)

    catalog = sub.add_parser("catalog", help="manage catalogs")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    client_args(catalog_sub.add_parser("ls", help="list your catalogs and those shared with you"))
    for verb, text in (("create", "create an empty catalog"), ("info", "describe a catalog")):
        one = catalog_sub.add_parser(verb, help=text)
        what = "catalog name" if verb == "create" else "name, or owner/name if shared with you"
        one.add_argument("catalog", help=what)
        if verb == "create":
            one.add_argument("--k", type=int, default=0, help="data fragments of puts into it (gateway default)")
            one.add_argument("--m", type=int, default=0, help="parity fragments of puts into it")
            one.add_argument("--ttl", type=float, default=0.0, help="seconds its objects live unless a put says")
        client_args(one)
    drop = catalog_sub.add_parser("rm", help="delete a catalog")
    drop.add_argument("catalog", help="a catalog of yours")
    drop.add_argument("--force", action="store_true", help="also evict the objects it holds")
    client_args(drop)

    share = sub.add_parser("share", help="share a catalog for reading")
    share_sub = share.add_subparsers(dest="share_command", required=True)
    for verb, text in (("add", "let USER read CATALOG"), ("rm", "take USER's access to CATALOG away")):
        one = share_sub.add_parser(verb, help=text)
        one.add_argument("catalog", help="a catalog of yours")
        one.add_argument("user", help="the user who may (or may no longer) read it")
        client_args(one)
    readers = share_sub.add_parser("ls", help="list who may read CATALOG")
    readers.add_argument("catalog", help="a catalog of yours")
    client_args(readers)

    watch = sub.add_parser("watch", help="print a catalog's events as they happen (Ctrl-C stops)")
    watch.add_argument("catalog", help="name, or owner/name for a catalog shared with you")
    watch.add_argument("--from-revision", type=int, default=0, help="replay events from this revision on")
    client_args(watch)

    token = sub.add_parser("token", help="manage tokens (yours; anyone's with an admin token)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    new = token_sub.add_parser("new", help="create a token and print it (shown only once)")
    new.add_argument("--user", help="whose token (admin only; default: yours)")
    new.add_argument("--s3", action="store_true", help="an S3 access key id and secret for the S3 front door instead")
    client_args(new)
    listing = token_sub.add_parser("ls", help="list token ids")
    listing.add_argument("--user", help="whose tokens (admin only; default: yours)")
    client_args(listing)
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", help="the token's id (16 hex digits, from token ls)")
    client_args(revoke)
    return parser


def _bandwidth(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bandwidth", type=parse_size, default=0, help="bytes per second the moves may take, e.g. 50M (no limit)"
    )
    p.add_argument("--no-wait", action="store_true", help="start it and return (the gateways carry it on)")


def container_parser() -> argparse.ArgumentParser:
    """The parser of ``dynostore container drain|rm|ls``."""
    parser = argparse.ArgumentParser(prog="dynostore container", description="Administer data containers.")
    sub = parser.add_subparsers(dest="container_command", required=True)
    drain = sub.add_parser("drain", help="move every chunk off a container; no new chunks go there")
    drain.add_argument("container_id", help="the id of the container to drain (see dynostore container ls)")
    drain.add_argument("--stop", action="store_true", help="end the drain: the container takes new chunks again")
    _bandwidth(drain)
    client_args(drain)
    rm = sub.add_parser("rm", help="forget a stopped, drained container")
    rm.add_argument("container_id", help="the id of the container to forget")
    rm.add_argument("--force", action="store_true", help="even if records still name it (those chunks count as lost)")
    client_args(rm)
    client_args(sub.add_parser("ls", help="list containers: up or down, draining, chunks, free space"))
    return parser


def rebalance_args(p: argparse.ArgumentParser) -> None:
    """The options of ``dynostore rebalance``."""
    p.add_argument("--stop", action="store_true", help="stop a running rebalance")
    _bandwidth(p)
    client_args(p)
