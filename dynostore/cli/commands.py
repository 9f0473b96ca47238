"""The client commands: objects, catalogs, sharing, events, users, tokens, repair and status, through a Client."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from contextlib import suppress
from dataclasses import asdict

from tqdm import tqdm

from dynostore.cli.moves import (
    container_command,
    rebalance_command,
)
from dynostore.client import Client, UserInfo
from dynostore.errors import DynoStoreError
from dynostore.registry.usage import format_size

# Files larger than this get a progress bar when stderr is a terminal.
PROGRESS_THRESHOLD = 8 * 1024 * 1024


# Seconds between two progress lines of `dynostore repair` when stderr is not a terminal.
REPAIR_REPORT_SECONDS = 5.0


def _show_progress(size: int) -> bool:
    return size >= PROGRESS_THRESHOLD and sys.stderr.isatty()


def client_command(args: argparse.Namespace) -> int:
    """Run one client command against the gateway named in ``args``; return the exit status."""
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
            return rebalance_command(client, args)
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
                print(repair_progress(done, len(sizes), bar.n, bar.total, reported - started), file=sys.stderr)
    print(f"{len(sizes)} object(s) checked, {rebuilt} chunk(s) rebuilt, {failed} object(s) not repaired")
    return 1 if failed else 0


def repair_progress(done: int, total: int, done_bytes: float, total_bytes: float, elapsed: float) -> str:
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
