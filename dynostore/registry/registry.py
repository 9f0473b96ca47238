"""Registry operations over etcd (through aetcd), used by the gateway.

Every multi-key change is one etcd transaction, so readers never see a
half-made object, user or catalog entry.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ParamSpec, TypeVar

import aetcd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dynostore import validation
from dynostore.errors import AlreadyExists, FailedPrecondition, NotFound, Unauthenticated, Unavailable
from dynostore.metrics import ETCD_DURATION, ETCD_ERRORS, WATCH_FAILURES
from dynostore.registry import keys
from dynostore.registry.cache import WatchedCache
from dynostore.registry.etcd import EtcdClient
from dynostore.registry.s3keys import S3KeyRecords
from dynostore.registry.usage import Usage, check_quota
from dynostore.rpc.tls import Tls

log = logging.getLogger(__name__)
P = ParamSpec("P")
# Operations etcd takes in one transaction (its default --max-txn-ops).
MAX_TXN_OPS = 128
# Objects per etcd transaction (up to 4 operations each).
COMMIT_GROUP = 32
# A token's public id: this many hex digits of its SHA-256.
TOKEN_ID_CHARS = 16
# Tokens whose users a gateway keeps in memory.
AUTH_CACHE_ENTRIES = 10_000
# Usage counters and catalog records a gateway remembers (value and revision) to commit against.
SEEN_ENTRIES = 10_000
# Attempts at a commit or evict whose usage counter or catalog others keep changing.
CAS_ATTEMPTS = 100
T = TypeVar("T")


def _etcd_errors(f: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Report etcd connection failures as Unavailable; time each call and count those failures (by method name)."""
    duration = ETCD_DURATION.labels(f.__name__)

    @functools.wraps(f)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return await f(*args, **kwargs)
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
            ETCD_ERRORS.labels(f.__name__).inc()
            raise Unavailable(f"The registry (etcd) is unreachable: {exc}") from exc
        finally:
            duration.observe(time.perf_counter() - started)

    return wrapped


def hash_token(token: str) -> str:
    """The SHA-256 under which a token is stored; tokens themselves never are."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return "dyn_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class User:
    """A user as stored in the registry."""

    name: str
    admin: bool = False
    created: float = 0.0
    # A container credential: may register containers and nothing else.
    container: bool = False
    # Quota (set by an admin; 0: unlimited).
    quota_bytes: int = 0
    quota_objects: int = 0


@dataclass(frozen=True)
class TokenInfo:
    """What the registry keeps about a token besides its hash."""

    id: str
    user: str
    created: float


@dataclass(frozen=True)
class TicketKeyRecord:
    """A chunk-ticket key pair (base64 raw Ed25519 keys), when gateways sign with it, when it retires."""

    kid: str
    private: str
    public: str
    created: float
    retire_after: float | None = None
    # Gateways sign with a new key only from this time on: containers learn of it first.
    sign_after: float = 0.0

    def active(self, now: float) -> bool:
        """Whether tickets signed with this key are accepted at ``now``."""
        return self.retire_after is None or self.retire_after > now

    def signing(self, now: float) -> bool:
        """Whether gateways may sign with this key at ``now``."""
        return self.active(now) and self.sign_after <= now


@dataclass(frozen=True)
class CatalogEvent:
    """One change to a catalog: kind is put, evict, expire, share or unshare.

    ``time`` is when a put or share was made; for evict, expire and unshare,
    which etcd keeps no time for, when the gateway saw the change.
    """

    kind: str
    revision: int
    key: str = ""
    name: str = ""
    size: int = 0
    time: float = 0.0
    user: str = ""


@dataclass
class ObjectRecord:
    """Everything the registry keeps about a committed object."""

    key: str
    owner: str
    catalog: str
    name: str
    size: int
    k: int
    m: int
    segment_size: int
    # chunk index -> [container id, stored?]
    chunks: list[tuple[str, bool]] = field(default_factory=list)
    created: float = 0.0
    # Inline objects keep their bytes in etcd (under their own key, not in
    # this record's JSON) and have no chunks; crc32 guards those bytes.
    inline: bool = False
    crc32: int = 0
    data: bytes = field(default=b"", repr=False, compare=False)
    # Seconds since the epoch after which the object is gone (0: never).
    expires: float = 0.0

    def expired(self, now: float) -> bool:
        """Whether the object's lifetime is over at ``now``: it must not be returned any more."""
        return entry_expired({"expires": self.expires}, now)

    def index_entry(self) -> dict[str, Any]:
        """The object's entry in its catalog's index."""
        entry: dict[str, Any] = {"name": self.name, "size": self.size, "created": self.created}
        if self.expires:
            entry["expires"] = self.expires
        return entry

    def to_json(self) -> bytes:
        """Serialize for etcd (without an inline object's bytes)."""
        fields = asdict(self)
        del fields["data"]
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ObjectRecord:
        """Parse what :meth:`to_json` wrote."""
        data = json.loads(raw)
        data["chunks"] = [tuple(c) for c in data["chunks"]]
        return cls(**data)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def entry_expired(entry: dict[str, Any], now: float) -> bool:
    """Whether the object of an index entry (or record fields) has expired at ``now``."""
    expires = entry.get("expires", 0.0)
    return bool(expires) and expires <= now


def expiry(created: float, ttl: float, catalog: dict[str, Any] | None) -> float:
    """When an object committed at ``created`` expires: after ``ttl``, else its catalog's default (0: never)."""
    ttl = ttl or (catalog or {}).get("ttl", 0.0)
    return created + ttl if ttl else 0.0


class Registry(S3KeyRecords):
    """DynoStore's view of etcd."""

    def __init__(self, address: str | Sequence[str], object_cache_entries: int = 0, tls: Tls | None = None) -> None:
        """Connect (lazily) to etcd at ``host:port``, over TLS when ``tls`` is given.

        ``address`` may name several members of a cluster (a list, or
        comma-separated): calls then go to any member that is up.

        Tokens (always) and up to ``object_cache_entries`` object records,
        inline bytes included, are cached in memory while :meth:`watch` runs.
        """
        self.etcd = EtcdClient(address, tls, timeout=10)
        self._tx = self.etcd.transactions
        self._auth_cache: WatchedCache[User] = WatchedCache(AUTH_CACHE_ENTRIES, "tokens")
        # Container id -> owning user, as last read (owners change only when a user is removed).
        self._container_owners: dict[str, str] = {}
        self._objects: WatchedCache[ObjectRecord] = WatchedCache(object_cache_entries, "objects")
        # Key -> (value or None, mod revision; 0: absent) of usage counters and catalog records
        # as last read or written: commits compare against these and read again when they changed.
        self._seen: dict[bytes, tuple[bytes | None, int]] = {}

    @property
    def caches(self) -> list[WatchedCache[Any]]:
        """The caches an etcd watch keeps coherent while :meth:`watch` runs."""
        return [self._auth_cache, self._objects]

    async def close(self) -> None:
        """Close the etcd connection."""
        await self.etcd.close()

    # users and tokens -------------------------------------------------------

    def _put_token(self, token: str, user: str) -> tuple[Any, TokenInfo]:
        token_hash = hash_token(token)
        info = TokenInfo(id=token_hash[:TOKEN_ID_CHARS], user=user, created=time.time())
        return self._tx.put(keys.token(token_hash), _dumps(asdict(info))), info

    @_etcd_errors
    async def ensure_admin(self, name: str, token: str) -> None:
        """Create admin ``name`` with ``token`` unless that token is known already."""
        user = User(name=name, admin=True, created=time.time())
        put_token, _ = self._put_token(token, name)
        await self.etcd.transaction(
            compare=[self._tx.create(keys.token(hash_token(token))) == 0],
            success=[self._tx.put(keys.user(name), _dumps(asdict(user))), put_token],
            failure=[],
        )

    @_etcd_errors
    async def create_user(self, name: str, admin: bool = False, container: bool = False) -> str:
        """Create a user and return its first token (shown once, stored hashed).

        Raises:
            AlreadyExists: a user of that name exists.
        """
        token = new_token()
        user = User(name=name, admin=admin, created=time.time(), container=container)
        put_token, _ = self._put_token(token, name)
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.user(name)) == 0],
            success=[self._tx.put(keys.user(name), _dumps(asdict(user))), put_token],
            failure=[],
        )
        if not ok:
            raise AlreadyExists(f"User {name!r} exists already.")
        return token

    @_etcd_errors
    async def list_users(self) -> list[User]:
        """Every user, by name."""
        return [User(**json.loads(kv.value)) for kv in await self.etcd.get_prefix(keys.user(""))]

    @_etcd_errors
    async def get_user(self, name: str) -> User:
        """One user.

        Raises:
            NotFound: there is no such user.
        """
        found = await self.etcd.get(keys.user(name))
        if found is None:
            raise NotFound(f"There is no user {name!r}.")
        return User(**json.loads(found.value))

    @_etcd_errors
    async def set_quota(self, name: str, quota_bytes: int, quota_objects: int) -> User:
        """Set a user's quota (0: unlimited) and return the user.

        Raises:
            NotFound: there is no such user.
            FailedPrecondition: the user is a container credential (it stores nothing).
        """
        for _ in range(CAS_ATTEMPTS):
            found = await self.etcd.get(keys.user(name))
            if found is None:
                raise NotFound(f"There is no user {name!r}.")
            user = User(**json.loads(found.value))
            if user.container:
                raise FailedPrecondition(f"{name!r} is a container credential; it stores no objects to limit.")
            changed = User(**{**asdict(user), "quota_bytes": quota_bytes, "quota_objects": quota_objects})
            ok, _ = await self.etcd.transaction(
                compare=[self._tx.mod(keys.user(name)) == found.mod_revision],
                success=[self._tx.put(keys.user(name), _dumps(asdict(changed)))],
                failure=[],
            )
            if ok:
                return changed
        raise Unavailable(f"User {name!r} kept changing; set the quota again.")

    async def usage(self, name: str) -> Usage:
        """What the objects of user ``name`` take now (expired ones count until they are evicted)."""
        (usage,) = await self.usages([name])
        return usage

    @_etcd_errors
    async def usages(self, names: list[str]) -> list[Usage]:
        """:meth:`usage` of each user, in order, read in few round trips."""
        for start in range(0, len(names), MAX_TXN_OPS):
            await self._read_again([keys.usage(n) for n in names[start : start + MAX_TXN_OPS]])
        return [self._usage_seen(n) for n in names]

    def _usage_seen(self, name: str) -> Usage:
        """The usage counter of ``name`` as last read or written (see :meth:`_read_again`)."""
        value, _ = self._seen[keys.usage(name)]
        return Usage.from_json(value) if value else Usage()

    async def _read_again(self, wanted: list[bytes]) -> None:
        """Read usage counters and catalog records into ``_seen``.

        A usage counter that was never written (a user from before counters
        existed) is counted once from the user's catalog indexes and kept with
        revision 0: the commit or evict that writes it first requires it to be
        still absent.
        """
        _, replies = await self.etcd.transaction(compare=[], success=[self._tx.get(k) for k in wanted], failure=[])
        if len(self._seen) > SEEN_ENTRIES:
            self._seen.clear()
        for key, reply in zip(wanted, replies, strict=True):
            if reply:
                fresh: tuple[bytes | None, int] = (bytes(reply[0][0]), reply[0][1].mod_revision)
            elif key.startswith(keys.usage("")):
                fresh = (await self._count_usage(key[len(keys.usage("")) :].decode()), 0)
            else:
                fresh = (None, 0)
            self._seen[key] = fresh

    async def _changed_since(self, compared: dict[bytes, tuple[bytes | None, int]]) -> bool:
        """Read the keys of ``compared`` again; whether any is not as it was (a failed transaction's cause)."""
        await self._read_again(list(compared))
        return any(self._seen[k] != seen for k, seen in compared.items())

    async def _count_usage(self, owner: str) -> bytes | None:
        """Usage of ``owner`` counted from its catalog indexes (None: it has no objects)."""
        prefix = keys.owner_events(owner)
        total = Usage()
        for kv in await self.etcd.get_prefix(prefix):
            if kv.key[len(prefix) :].split(b"/")[1:2] == [b"objects"]:
                total = total.add(json.loads(kv.value)["size"], 1)
        return total.to_json() if total.objects else None

    def _unchanged(self, key: bytes) -> Any:
        """An etcd comparison: ``key`` is as :meth:`_read_again` last saw it (absent, if it was)."""
        _, revision = self._seen[key]
        return self._tx.mod(key) == revision if revision else self._tx.create(key) == 0

    async def _tokens(self, prefix: str = "") -> list[tuple[bytes, TokenInfo]]:
        found = await self.etcd.get_prefix(keys.token(prefix))
        return [(kv.key, TokenInfo(**json.loads(kv.value))) for kv in found]

    @_etcd_errors
    async def remove_user(self, name: str) -> int:
        """Remove a user, its tokens, its containers' ids and the grants made to it (at once if etcd takes it).

        Returns how many tokens went. The catalogs the user owns stay.

        Raises:
            NotFound: there is no such user.
            FailedPrecondition: the user is an admin.
        """
        found = await self.etcd.get(keys.user(name))
        if found is None:
            raise NotFound(f"There is no user {name!r}.")
        if User(**json.loads(found.value)).admin:
            raise FailedPrecondition(f"{name!r} is an admin; admins cannot be removed.")
        tokens = [key for key, info in await self._tokens() if info.user == name]
        owners = await self.etcd.get_prefix(keys.container_owners_prefix())
        owned = [kv.key for kv in owners if kv.value == name.encode()]
        # A user created again under this name must not inherit what was shared with this one.
        grants = []
        for owner, catalog in await self._shared_with(name):
            grants += [keys.shared_with(name, owner, catalog), keys.share(owner, catalog, name)]
        # One transaction if etcd takes it; else what does not fit goes first, the
        # tokens last, so that they die with the user record as far as they can.
        doomed = [self._tx.delete(k) for k in grants + owned + tokens]
        first, last = doomed[: -(MAX_TXN_OPS - 1)], doomed[-(MAX_TXN_OPS - 1) :]
        for start in range(0, len(first), MAX_TXN_OPS):
            await self.etcd.transaction(compare=[], success=first[start : start + MAX_TXN_OPS], failure=[])
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.mod(keys.user(name)) == found.mod_revision],
            success=[self._tx.delete(keys.user(name)), *last],
            failure=[],
        )
        if not ok:
            raise FailedPrecondition(f"User {name!r} changed during removal; try again.")
        return len(tokens)

    @_etcd_errors
    async def create_token(self, user: str) -> tuple[str, TokenInfo]:
        """A new token of ``user``: ``(token, info)``; the token is shown only now.

        Raises:
            NotFound: there is no such user.
        """
        token = new_token()
        put_token, info = self._put_token(token, user)
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.user(user)) > 0], success=[put_token], failure=[]
        )
        if not ok:
            raise NotFound(f"There is no user {user!r}.")
        return token, info

    @_etcd_errors
    async def list_tokens(self, user: str) -> list[TokenInfo]:
        """Ids and creation times of a user's tokens."""
        return [info for _, info in await self._tokens() if info.user == user]

    @_etcd_errors
    async def revoke_token(self, token_id: str, requester: User) -> None:
        """Revoke the token with this id; it stops working on every gateway at once.

        Raises:
            NotFound: no token of the requester (or of anyone, for an admin) has this id.
        """
        matches = [(k, i) for k, i in await self._tokens(token_id) if requester.admin or i.user == requester.name]
        if len(matches) != 1:
            raise NotFound(f"No token of yours has the id {token_id!r}.")
        await self.etcd.delete(matches[0][0])

    @_etcd_errors
    async def authenticate(self, token: str) -> User:
        """The user a token belongs to (cached while :meth:`watch` runs).

        Raises:
            Unauthenticated: the token is unknown or its user is gone.
        """
        token_hash = hash_token(token)
        cached = self._auth_cache.get(token_hash)
        if cached is not None:
            return cached
        owner = await self.etcd.get(keys.token(token_hash))
        if owner is None:
            raise Unauthenticated("The token is not valid (unknown or revoked); ask an admin for a new one.")
        record = await self.etcd.get(keys.user(TokenInfo(**json.loads(owner.value)).user))
        if record is None:
            raise Unauthenticated("The token's user no longer exists.")
        user = User(**json.loads(record.value))
        self._auth_cache.put(token_hash, user, owner.header.revision)
        return user

    async def watch(self) -> None:
        """Keep the caches coherent: runs until cancelled.

        Any change to users or tokens empties the token cache; a change to an
        object record drops that record. With no room for records, their
        changes are not watched.
        """
        watches = [self._keep_coherent(keys.auth_prefix(), self._auth_cache, whole=True)]
        if self._objects.max_entries:
            watches.append(self._keep_coherent(keys.objects_prefix(), self._objects, whole=False))
        await asyncio.gather(*watches)

    async def _keep_coherent(self, prefix: bytes, cache: WatchedCache[Any], *, whole: bool) -> None:
        """Report every change under ``prefix`` to ``cache`` (``whole``: as a change to everything)."""
        while True:
            try:
                # Watch from just after a revision read first, so no change is missed in between.
                started = (await self.etcd.get_prefix(keys.unused(), keys_only=True)).header.revision
                watch = await self.etcd.watch_prefix(prefix, start_revision=started + 1)
                cache.start(started)
                async for event in watch:
                    cache.changed(None if whole else event.kv.key[len(prefix) :].decode(), event.kv.mod_revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                WATCH_FAILURES.labels(cache.name).inc()
                log.warning("Watch of %s failed (%s); retrying.", prefix.decode(), exc)
            cache.stop()
            await asyncio.sleep(1)

    @_etcd_errors
    async def plan_secret(self) -> bytes:
        """The secret shared by all gateways for plan tickets (made on first use)."""
        fresh = secrets.token_bytes(32)
        await self.etcd.transaction(
            compare=[self._tx.create(keys.plan_secret()) == 0],
            success=[self._tx.put(keys.plan_secret(), fresh)],
            failure=[],
        )
        found = await self.etcd.get(keys.plan_secret())
        assert found is not None
        return bytes(found.value)

    # objects ----------------------------------------------------------------

    @_etcd_errors
    async def commit(self, records: list[ObjectRecord], quota: User | None = None) -> None:
        """Make objects visible: each record, index entry (and catalog) in one transaction.

        Objects are committed in groups of ``COMMIT_GROUP``, one transaction
        each, which also adds them to their owners' usage counters. A record
        with no ``expires`` gets its catalog's default TTL, if it has one.
        With ``quota`` (the committing user), a group that would take that
        user's usage over its quota is refused: the transaction requires the
        counter to be unchanged since it was checked, so racing commits
        cannot exceed the quota together.

        Raises:
            AlreadyExists: an object of the group was committed already (none of the group is).
            ResourceExhausted: the group would exceed ``quota`` (none of it is committed).
        """
        for start in range(0, len(records), COMMIT_GROUP):
            await self._commit_group(records[start : start + COMMIT_GROUP], quota)

    async def _commit_group(self, group: list[ObjectRecord], quota: User | None) -> None:
        """Commit one group of records in one transaction (see :meth:`commit`)."""
        owners = sorted({r.owner for r in group})
        catalog_keys = {r.key: keys.catalog(r.owner, r.catalog) for r in group}
        watched = [keys.usage(o) for o in owners] + sorted(set(catalog_keys.values()))
        if any(k not in self._seen for k in watched):
            await self._read_again(watched)
        ttl_given = {r.key for r in group if r.expires}
        for _ in range(CAS_ATTEMPTS):
            compared = {k: self._seen[k] for k in watched}
            ops = []
            catalogs: dict[bytes, bytes] = {}
            usage = {o: self._usage_seen(o) for o in owners}
            for r in group:
                catalog_info, _ = self._seen[catalog_keys[r.key]]
                if r.key not in ttl_given:
                    r.expires = expiry(r.created, 0.0, json.loads(catalog_info) if catalog_info else None)
                usage[r.owner] = usage[r.owner].add(r.size, 1)
                ops.append(self._tx.put(keys.obj(r.key), r.to_json()))
                ops.append(self._tx.put(keys.index_entry(r.owner, r.catalog, r.key), _dumps(r.index_entry())))
                if r.inline:
                    ops.append(self._tx.put(keys.inline_data(r.key), r.data))
                if catalog_info is None:
                    info = {"owner": r.owner, "name": r.catalog, "created": r.created}
                    catalogs.setdefault(catalog_keys[r.key], _dumps(info))
            if quota is not None:
                added = [r for r in group if r.owner == quota.name]
                check_quota(
                    quota.name,
                    quota.quota_bytes,
                    quota.quota_objects,
                    self._usage_seen(quota.name),
                    sum(r.size for r in added),
                    len(added),
                )
            ops += [self._tx.put(k, v) for k, v in catalogs.items()]
            ops += [self._tx.put(keys.usage(o), u.to_json()) for o, u in usage.items()]
            ok, replies = await self.etcd.transaction(
                compare=[self._tx.create(keys.obj(r.key)) == 0 for r in group] + [self._unchanged(k) for k in watched],
                success=ops,
                failure=[],
            )
            if ok:
                revision = replies[0].response_put.header.revision
                for o, u in usage.items():
                    self._seen[keys.usage(o)] = (u.to_json(), revision)
                for k, v in catalogs.items():
                    self._seen[k] = (v, revision)
                for r in group:
                    self._objects.put(r.key, r, revision)
                return
            if not await self._changed_since(compared):
                raise AlreadyExists(f"One of objects {[r.key for r in group]} was committed already.")
        raise Unavailable("The usage counters and catalogs of this commit kept changing; commit it again.")

    @_etcd_errors
    async def referenced(self, chunks: list[tuple[str, int]], container_id: str) -> list[bool]:
        """For each ``(key, index)``: whether that object's record lists the chunk as stored on ``container_id``."""
        wanted = list(dict.fromkeys(key for key, _ in chunks))
        records = dict(zip(wanted, await self._read_objects(wanted, with_data=False), strict=True))
        return [
            (record := records[key]) is not None
            and index < len(record.chunks)
            and record.chunks[index] == (container_id, True)
            for key, index in chunks
        ]

    async def get_objects(self, object_keys: list[str]) -> list[ObjectRecord | None]:
        """Records of committed objects to read (None where a key has none), inline bytes included.

        Served from the record cache where it can be (see :mod:`dynostore.registry.cache`),
        the rest read from etcd in few round trips and cached. The records are
        shared with the cache: do not change them.
        """
        found = [self._objects.get(k) for k in object_keys]
        missed = [k for k, record in zip(object_keys, found, strict=True) if record is None]
        if missed:
            read = iter(await self._read_objects(missed, with_data=True, cache=True))
            found = [record or next(read) for record in found]
        return found

    @_etcd_errors
    async def _read_objects(
        self, object_keys: list[str], *, with_data: bool, cache: bool = False
    ) -> list[ObjectRecord | None]:
        """Records of committed objects read from etcd (None where a key has none), in few round trips.

        With ``with_data``, inline objects come with their bytes (``record.data``),
        read in the same transaction. With ``cache``, the records found are cached.
        """
        per_key = 2 if with_data else 1
        found: list[ObjectRecord | None] = []
        for start in range(0, len(object_keys), COMMIT_GROUP):
            group = object_keys[start : start + COMMIT_GROUP]
            ops = []
            for k in group:
                ops.append(self._tx.get(keys.obj(k)))
                if with_data:
                    ops.append(self._tx.get(keys.inline_data(k)))
            _, replies = await self.etcd.transaction(compare=[], success=ops, failure=[])
            for key, position in zip(group, range(0, len(replies), per_key), strict=True):
                reply = replies[position]
                record = ObjectRecord.from_json(reply[0][0]) if reply else None
                if record is not None and record.inline and with_data:
                    data_reply = replies[position + 1]
                    record.data = data_reply[0][0] if data_reply else b""
                if record is not None and cache:
                    self._objects.put(key, record, reply[0][1].header.revision)
                found.append(record)
        return found

    @_etcd_errors
    async def get_object(self, key: str) -> ObjectRecord:
        """The record of a committed object.

        Raises:
            NotFound: no object has this key.
        """
        found = await self.etcd.get(keys.obj(key))
        if found is None:
            raise NotFound(f"No object has the key {key}.")
        return ObjectRecord.from_json(found.value)

    async def object_records(self) -> AsyncIterator[ObjectRecord]:
        """Every object record, read one shard (1/256 of the key space) at a time."""
        for shard in range(validation.KEY_SHARDS):
            for record in await self.shard_records(shard):
                yield record

    @_etcd_errors
    async def shard_records(self, shard: int) -> list[ObjectRecord]:
        """The records of the objects whose keys start with the two hex digits of ``shard``."""
        return [ObjectRecord.from_json(kv.value) for kv in await self.etcd.get_prefix(keys.obj(f"{shard:02x}"))]

    @_etcd_errors
    async def get_object_revision(self, key: str) -> tuple[ObjectRecord, int]:
        """The record of a committed object and the etcd revision it was last changed at.

        Raises:
            NotFound: no object has this key.
        """
        found = await self.etcd.get(keys.obj(key))
        if found is None:
            raise NotFound(f"No object has the key {key}.")
        return ObjectRecord.from_json(found.value), found.mod_revision

    @_etcd_errors
    async def replace_chunks(self, key: str, revision: int, replacements: dict[int, str]) -> None:
        """Record that chunk ``index`` of an object is now stored on container ``replacements[index]``.

        Raises:
            NotFound: the object is gone.
            FailedPrecondition: the object changed since ``revision``.
        """
        record, current = await self.get_object_revision(key)
        if current != revision:
            raise FailedPrecondition(f"Object {key} changed while it was repaired; repair it again.")
        for index, container_id in replacements.items():
            record.chunks[index] = (container_id, True)
        ok, replies = await self.etcd.transaction(
            compare=[self._tx.mod(keys.obj(key)) == revision],
            success=[self._tx.put(keys.obj(key), record.to_json())],
            failure=[],
        )
        if not ok:
            raise FailedPrecondition(f"Object {key} changed while it was repaired; repair it again.")
        self._objects.changed(key, replies[0].response_put.header.revision)

    @_etcd_errors
    async def mark_missing(self, key: str, index: int, container_id: str) -> bool:
        """Record chunk ``index`` of an object as missing if ``container_id`` holds it; whether it did."""
        for _ in range(5):  # a concurrent change to the record: read it again
            found = await self.etcd.get(keys.obj(key))
            if found is None:
                return False
            record = ObjectRecord.from_json(found.value)
            if index >= len(record.chunks) or record.chunks[index] != (container_id, True):
                return False
            record.chunks[index] = (container_id, False)
            ok, replies = await self.etcd.transaction(
                compare=[self._tx.mod(keys.obj(key)) == found.mod_revision],
                success=[self._tx.put(keys.obj(key), record.to_json())],
                failure=[],
            )
            if ok:
                self._objects.changed(key, replies[0].response_put.header.revision)
                return True
        raise Unavailable(f"Object {key} kept changing; report the damage again.")

    @_etcd_errors
    async def delete_object(self, key: str) -> ObjectRecord | None:
        """Remove an object's record and index entry atomically, out of its owner's usage; return the record."""
        while True:
            found = await self.etcd.get(keys.obj(key))
            if found is None:
                return None
            record = ObjectRecord.from_json(found.value)
            if await self._delete_record(record, found.mod_revision):
                return record

    @_etcd_errors
    async def expire_object(self, key: str, now: float) -> ObjectRecord | None:
        """Evict an object whose lifetime is over at ``now``; the record, or None if it is gone or not expired.

        Its index entry is first marked expired, then deleted with the
        record, so that the catalog's events call this eviction ``expire``.
        """
        found = await self.etcd.get(keys.obj(key))
        if found is None:
            return None
        record = ObjectRecord.from_json(found.value)
        if not record.expired(now):
            return None
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.mod(keys.obj(key)) == found.mod_revision],
            success=[
                self._tx.put(
                    keys.index_entry(record.owner, record.catalog, key),
                    _dumps({**record.index_entry(), "expired": True}),
                )
            ],
            failure=[],
        )
        return record if ok and await self._delete_record(record, found.mod_revision) else None

    async def _delete_record(self, record: ObjectRecord, revision: int) -> bool:
        """Delete ``record`` (last changed at ``revision``) and count it out of its owner's usage.

        Returns False when the record changed since ``revision``.

        Raises:
            Unavailable: the owner's usage counter kept changing.
        """
        usage_key = keys.usage(record.owner)
        if usage_key not in self._seen:
            await self._read_again([usage_key])
        for _ in range(CAS_ATTEMPTS):
            compared = {usage_key: self._seen[usage_key]}
            usage = self._usage_seen(record.owner).add(-record.size, -1)
            ok, replies = await self.etcd.transaction(
                compare=[self._tx.mod(keys.obj(record.key)) == revision, self._unchanged(usage_key)],
                success=[
                    self._tx.delete(keys.obj(record.key)),
                    self._tx.delete(keys.index_entry(record.owner, record.catalog, record.key)),
                    *([self._tx.delete(keys.inline_data(record.key))] if record.inline else []),
                    self._tx.put(usage_key, usage.to_json()),
                ],
                failure=[],
            )
            if ok:
                deleted = replies[0].response_delete_range.header.revision
                self._seen[usage_key] = (usage.to_json(), deleted)
                self._objects.changed(record.key, deleted)
                return True
            if not await self._changed_since(compared):
                return False  # the record changed
        raise Unavailable(f"The usage counter of {record.owner!r} kept changing; evict object {record.key} again.")

    @_etcd_errors
    async def list_catalog(
        self, owner: str, catalog: str, live_at: float | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """``(key, {"name", "size", "created", "expires"})`` of every object in a catalog.

        With ``live_at``, objects expired at that time are left out.
        """
        prefix = keys.index_prefix(owner, catalog)
        found = [(kv.key[len(prefix) :].decode(), json.loads(kv.value)) for kv in await self.etcd.get_prefix(prefix)]
        return found if live_at is None else [(k, e) for k, e in found if not entry_expired(e, live_at)]

    # chunk-ticket keys --------------------------------------------------------

    @_etcd_errors
    async def ticket_keys(self) -> list[TicketKeyRecord]:
        """Every chunk-ticket key, oldest first."""
        found = await self.etcd.get_prefix(keys.ticket_key(""))
        return sorted((TicketKeyRecord(**json.loads(kv.value)) for kv in found), key=lambda r: r.created)

    @_etcd_errors
    async def add_ticket_key(self, grace: float | None, activation: float = 0.0) -> str:
        """Add a new key, signed with from ``activation`` seconds from now (containers learn it meanwhile).

        With ``grace``, the current keys retire ``grace`` seconds after the new one starts signing.
        """
        private = Ed25519PrivateKey.generate()
        now = time.time()
        record = TicketKeyRecord(
            kid=secrets.token_hex(4),
            private=base64.b64encode(private.private_bytes_raw()).decode(),
            public=base64.b64encode(private.public_key().public_bytes_raw()).decode(),
            created=now,
            sign_after=now + activation,
        )
        now += activation
        ops = [self._tx.put(keys.ticket_key(record.kid), _dumps(asdict(record)))]
        for old in await self.ticket_keys():
            if old.retire_after is not None and old.retire_after < now - 86400:
                ops.append(self._tx.delete(keys.ticket_key(old.kid)))  # long retired
            elif grace is not None and (old.retire_after is None or old.retire_after > now + grace):
                retiring = TicketKeyRecord(**{**asdict(old), "retire_after": now + grace})
                ops.append(self._tx.put(keys.ticket_key(old.kid), _dumps(asdict(retiring))))
        await self.etcd.transaction(compare=[], success=ops, failure=[])
        return record.kid

    # catalogs, shares and events ----------------------------------------------

    @_etcd_errors
    async def create_catalog(self, owner: str, name: str, k: int = 0, m: int = 0, ttl: float = 0.0) -> None:
        """Create an empty catalog, with the erasure-coding policy of its puts if ``k`` is not 0.

        ``ttl``: the lifetime in seconds of puts into it that give none (0: forever).

        Raises:
            AlreadyExists: the owner has a catalog of that name.
        """
        info: dict[str, Any] = {"owner": owner, "name": name, "created": time.time()}
        if k:
            info |= {"k": k, "m": m}
        if ttl:
            info["ttl"] = ttl
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.catalog(owner, name)) == 0],
            success=[self._tx.put(keys.catalog(owner, name), _dumps(info))],
            failure=[],
        )
        if not ok:
            raise AlreadyExists(f"Catalog {name!r} exists already.")

    @_etcd_errors
    async def catalogs(self, user: str) -> list[dict[str, Any]]:
        """Records of the user's catalogs, then of catalogs shared with the user."""
        own = [json.loads(kv.value) for kv in await self.etcd.get_prefix(keys.catalogs_of(user))]
        shared = []
        for owner, name in await self._shared_with(user):
            found = await self.etcd.get(keys.catalog(owner, name))
            if found is not None:
                shared.append(json.loads(found.value))
        return own + shared

    async def _shared_with(self, reader: str) -> list[tuple[str, str]]:
        """``(owner, catalog)`` of every catalog shared with ``reader``."""
        prefix = keys.shared_with(reader)
        return [tuple(kv.key[len(prefix) :].decode().split("/", 1)) for kv in await self.etcd.get_prefix(prefix)]

    @_etcd_errors
    async def catalog_exists(self, owner: str, name: str) -> bool:
        """Whether ``owner`` has a catalog named ``name``."""
        return await self.etcd.get(keys.catalog(owner, name)) is not None

    @_etcd_errors
    async def shared_named(self, reader: str, name: str) -> list[str]:
        """``owner/name`` of every catalog called ``name`` that is shared with ``reader``."""
        return sorted(f"{owner}/{catalog}" for owner, catalog in await self._shared_with(reader) if catalog == name)

    @_etcd_errors
    async def catalog_policy(self, owner: str, name: str) -> tuple[int, int] | None:
        """``(k, m)`` the catalog was created with; None if it has none or does not exist."""
        found = await self.etcd.get(keys.catalog(owner, name))
        if found is None:
            return None
        info = json.loads(found.value)
        return (info["k"], info["m"]) if info.get("k") else None

    @_etcd_errors
    async def describe_catalog(self, owner: str, name: str) -> dict[str, Any]:
        """A catalog's record with its object count, bytes and readers.

        Raises:
            NotFound: there is no such catalog.
        """
        found = await self.etcd.get(keys.catalog(owner, name))
        if found is None:
            raise NotFound(f"There is no catalog {owner}/{name}.")
        entries = await self.list_catalog(owner, name, live_at=time.time())
        return {
            **json.loads(found.value),
            "objects": len(entries),
            "bytes": sum(e["size"] for _, e in entries),
            "shared_with": await self.shares(owner, name),
        }

    @_etcd_errors
    async def delete_catalog(self, owner: str, name: str, force: bool) -> list[ObjectRecord]:
        """Delete a catalog, its shares and (with ``force``) its objects; return the evicted records.

        Raises:
            NotFound: there is no such catalog.
            FailedPrecondition: the catalog holds objects and ``force`` is false.
        """
        if await self.etcd.get(keys.catalog(owner, name)) is None:
            raise NotFound(f"There is no catalog {owner}/{name}.")
        entries = await self.list_catalog(owner, name)
        if entries and not force:
            raise FailedPrecondition(
                f"Catalog {name!r} holds {len(entries)} objects; delete it with force to evict them too."
            )
        evicted = [r for key, _ in entries if (r := await self.delete_object(key)) is not None]
        readers = await self.shares(owner, name)
        await self.etcd.transaction(
            compare=[],
            success=[
                self._tx.delete(keys.catalog(owner, name)),
                *(self._tx.delete(keys.share(owner, name, r)) for r in readers),
                *(self._tx.delete(keys.shared_with(r, owner, name)) for r in readers),
            ],
            failure=[],
        )
        return evicted

    @_etcd_errors
    async def share(self, owner: str, name: str, reader: str) -> None:
        """Let ``reader`` read and list the catalog.

        Raises:
            NotFound: the catalog or the reader does not exist.
        """
        info = _dumps({"created": time.time()})
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.catalog(owner, name)) > 0, self._tx.create(keys.user(reader)) > 0],
            success=[
                self._tx.put(keys.share(owner, name, reader), info),
                self._tx.put(keys.shared_with(reader, owner, name), info),
            ],
            failure=[],
        )
        if not ok:
            raise NotFound(f"Catalog {name!r} or user {reader!r} does not exist.")

    @_etcd_errors
    async def unshare(self, owner: str, name: str, reader: str) -> bool:
        """Take ``reader``'s read access away; return whether it had any."""
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.share(owner, name, reader)) > 0],
            success=[
                self._tx.delete(keys.share(owner, name, reader)),
                self._tx.delete(keys.shared_with(reader, owner, name)),
            ],
            failure=[],
        )
        return bool(ok)

    @_etcd_errors
    async def shares(self, owner: str, name: str) -> list[str]:
        """Users the catalog is shared with."""
        prefix = keys.shares_prefix(owner, name)
        return [kv.key[len(prefix) :].decode() for kv in await self.etcd.get_prefix(prefix)]

    @_etcd_errors
    async def can_read(self, owner: str, name: str, user: str) -> bool:
        """Whether ``user`` owns the catalog or it is shared with them."""
        return owner == user or await self.etcd.get(keys.share(owner, name, user)) is not None

    async def catalog_events(self, owner: str, name: str, start_revision: int = 0) -> AsyncIterator[CatalogEvent]:
        """Puts, evicts and shares of a catalog as they happen, from ``start_revision`` on if given.

        The first event is of kind ``ready`` and carries the revision the watch
        starts from, so that a subscriber can resume from there without loss.

        Raises:
            FailedPrecondition: events from ``start_revision`` were compacted away.
            Unavailable: the registry is unreachable.
        """
        prefix = keys.catalog_events(owner, name)
        objects, shares = keys.index_prefix(owner, name), keys.shares_prefix(owner, name)
        try:
            if not start_revision:
                start_revision = (await self.etcd.get_prefix(keys.catalog(owner, name))).header.revision + 1
            watch = await self.etcd.watch_prefix(prefix, start_revision=start_revision, prev_kv=True)
            yield CatalogEvent(kind="ready", revision=start_revision)
            async for event in watch:
                kv = event.kv if event.kind == "PUT" else (event.prev_kv or event.kv)
                if kv.key.startswith(objects):
                    entry = json.loads(kv.value) if kv.value else {}
                    if event.kind == "PUT" and entry.get("expired"):
                        continue  # marked before its eviction, which is the event
                    yield CatalogEvent(
                        kind="put" if event.kind == "PUT" else "expire" if entry.get("expired") else "evict",
                        key=kv.key[len(objects) :].decode(),
                        name=entry.get("name", ""),
                        size=entry.get("size", 0),
                        time=entry.get("created", 0.0) if event.kind == "PUT" else time.time(),
                        revision=event.kv.mod_revision,
                    )
                elif kv.key.startswith(shares):
                    shared = json.loads(kv.value) if kv.value and event.kind == "PUT" else {}
                    yield CatalogEvent(
                        kind="share" if event.kind == "PUT" else "unshare",
                        user=kv.key[len(shares) :].decode(),
                        time=shared.get("created", time.time()),
                        revision=event.kv.mod_revision,
                    )
        except aetcd.RevisionCompactedError as exc:
            raise FailedPrecondition(
                f"Events from revision {start_revision} were compacted; subscribe without a start revision."
            ) from exc
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
            raise Unavailable(f"The registry (etcd) is unreachable: {exc}") from exc

    # containers -------------------------------------------------------------

    @_etcd_errors
    async def claim_container(self, container_id: str, user: str) -> str:
        """The container user that owns ``container_id``; ``user`` becomes it if nobody is.

        Owners are kept until their user is removed, so a container
        credential cannot act for (or pose as) another user's containers.
        """
        if self._container_owners.get(container_id) == user:
            return user
        key = keys.container_owner(container_id)
        claimed, replies = await self.etcd.transaction(
            compare=[self._tx.create(key) == 0],
            success=[self._tx.put(key, user.encode())],
            failure=[self._tx.get(key)],
        )
        owner = user if claimed else replies[0][0][0].decode()  # a range reply: [(value, kv meta)]
        self._container_owners[container_id] = owner
        return owner

    @_etcd_errors
    async def register_container(self, info: dict[str, Any], ttl: int) -> int:
        """Record a live container under a new lease and return the lease id."""
        lease = await self.etcd.lease(ttl)
        await self.etcd.put(keys.container(info["id"]), _dumps(info), lease=lease)
        return int(lease.id)

    @_etcd_errors
    async def refresh_container(self, info: dict[str, Any], lease_id: int) -> bool:
        """Keep a container's lease alive and update its record; False if the lease is gone."""
        reply = await self.etcd.refresh_lease(lease_id)
        if reply is None or reply.TTL <= 0:
            return False
        current = await self.etcd.get(keys.container(info["id"]))
        if current is None or current.lease != lease_id:
            return False
        await self.etcd.put(keys.container(info["id"]), _dumps(info), lease=lease_id)
        return True

    @_etcd_errors
    async def known_containers(self) -> set[str]:
        """Ids of every container that ever registered (until its user is removed), live or not."""
        prefix = keys.container_owners_prefix()
        found = await self.etcd.get_prefix(prefix, keys_only=True)
        return {kv.key[len(prefix) :].decode() for kv in found}

    @_etcd_errors
    async def containers(self) -> list[dict[str, Any]]:
        """Records of all live containers."""
        found = await self.etcd.get_prefix(keys.containers_prefix())
        return [json.loads(kv.value) for kv in found]
