"""Registry operations over etcd (through aetcd), used by the gateway.

Every multi-key change is one etcd transaction, so readers never see a
half-made object, user or catalog entry.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ParamSpec, TypeVar

import aetcd

from dynostore.errors import AlreadyExists, NotFound, Unauthenticated, Unavailable
from dynostore.registry import keys

log = logging.getLogger(__name__)
P = ParamSpec("P")
# Objects per etcd transaction (etcd allows 128 operations per transaction by default).
COMMIT_GROUP = 32
T = TypeVar("T")


def _etcd_errors(f: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Report etcd connection failures as Unavailable."""

    @functools.wraps(f)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await f(*args, **kwargs)
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
            raise Unavailable(f"The registry (etcd) is unreachable: {exc}") from exc

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

    def to_json(self) -> bytes:
        """Serialize for etcd."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ObjectRecord:
        """Parse what :meth:`to_json` wrote."""
        data = json.loads(raw)
        data["chunks"] = [tuple(c) for c in data["chunks"]]
        return cls(**data)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class Registry:
    """DynoStore's view of etcd."""

    def __init__(self, host: str, port: int) -> None:
        """Connect (lazily) to the etcd at ``host:port``."""
        self.etcd = aetcd.Client(host=host, port=port, timeout=10)
        self._tx = self.etcd.transactions
        self._auth_cache: dict[str, User] = {}
        self._auth_generation = 0
        self._auth_watched = False

    async def close(self) -> None:
        """Close the etcd connection."""
        await self.etcd.close()

    # users and tokens -------------------------------------------------------

    @_etcd_errors
    async def ensure_admin(self, name: str, token: str) -> None:
        """Create admin ``name`` with ``token`` unless that token is known already."""
        user = User(name=name, admin=True, created=time.time())
        await self.etcd.transaction(
            compare=[self._tx.create(keys.token(hash_token(token))) == 0],
            success=[
                self._tx.put(keys.user(name), _dumps(asdict(user))),
                self._tx.put(keys.token(hash_token(token)), name.encode()),
            ],
            failure=[],
        )

    @_etcd_errors
    async def create_user(self, name: str, admin: bool = False) -> str:
        """Create a user and return its first token (shown once, stored hashed).

        Raises:
            AlreadyExists: a user of that name exists.
        """
        token = new_token()
        user = User(name=name, admin=admin, created=time.time())
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.user(name)) == 0],
            success=[
                self._tx.put(keys.user(name), _dumps(asdict(user))),
                self._tx.put(keys.token(hash_token(token)), name.encode()),
            ],
            failure=[],
        )
        if not ok:
            raise AlreadyExists(f"User {name!r} exists already.")
        return token

    @_etcd_errors
    async def authenticate(self, token: str) -> User:
        """The user a token belongs to (cached while the auth watch runs).

        Raises:
            Unauthenticated: the token is unknown or its user is gone.
        """
        token_hash = hash_token(token)
        cached = self._auth_cache.get(token_hash)
        if cached is not None:
            return cached
        generation = self._auth_generation
        owner = await self.etcd.get(keys.token(token_hash))
        if owner is None:
            raise Unauthenticated("The token is not valid; ask an admin for a new one.")
        record = await self.etcd.get(keys.user(owner.value.decode()))
        if record is None:
            raise Unauthenticated("The token's user no longer exists.")
        user = User(**json.loads(record.value))
        if self._auth_watched and generation == self._auth_generation:
            self._auth_cache[token_hash] = user
        return user

    async def watch_auth(self) -> None:
        """Keep the token cache coherent: any change to users or tokens empties it.

        Runs until cancelled. While the watch is down, nothing is cached, so a
        revoked token never outlives its revocation on this gateway.
        """
        while True:
            try:
                watch = await self.etcd.watch_prefix(keys.auth_prefix())
                self._auth_watched = True
                async for _ in watch:
                    self._auth_generation += 1
                    self._auth_cache.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Auth watch failed (%s); retrying.", exc)
            self._auth_watched = False
            self._auth_generation += 1
            self._auth_cache.clear()
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
    async def commit(self, records: list[ObjectRecord]) -> None:
        """Make objects visible: each record, index entry (and catalog) in one transaction.

        Objects are committed in groups of ``COMMIT_GROUP``, one transaction each.

        Raises:
            AlreadyExists: an object of the group was committed already (none of the group is).
        """
        for start in range(0, len(records), COMMIT_GROUP):
            group = records[start : start + COMMIT_GROUP]
            ops = []
            catalogs: dict[bytes, bytes] = {}
            for r in group:
                entry = {"name": r.name, "size": r.size, "created": r.created}
                ops.append(self._tx.put(keys.obj(r.key), r.to_json()))
                ops.append(self._tx.put(keys.index_entry(r.owner, r.catalog, r.key), _dumps(entry)))
                info = {"owner": r.owner, "name": r.catalog, "created": r.created}
                catalogs.setdefault(keys.catalog(r.owner, r.catalog), _dumps(info))
            for catalog_key, info_json in catalogs.items():
                ops.append(
                    self._tx.txn(
                        compare=[self._tx.create(catalog_key) == 0],
                        success=[self._tx.put(catalog_key, info_json)],
                        failure=[],
                    )
                )
            ok, _ = await self.etcd.transaction(
                compare=[self._tx.create(keys.obj(r.key)) == 0 for r in group], success=ops, failure=[]
            )
            if not ok:
                raise AlreadyExists(f"One of objects {[r.key for r in group]} was committed already.")

    @_etcd_errors
    async def get_objects(self, object_keys: list[str]) -> list[ObjectRecord | None]:
        """Records of committed objects (None where a key has none), read in few round trips."""
        found: list[ObjectRecord | None] = []
        for start in range(0, len(object_keys), COMMIT_GROUP):
            group = object_keys[start : start + COMMIT_GROUP]
            _, replies = await self.etcd.transaction(
                compare=[], success=[self._tx.get(keys.obj(k)) for k in group], failure=[]
            )
            found += [ObjectRecord.from_json(r[0][0]) if r else None for r in replies]
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

    @_etcd_errors
    async def exists(self, key: str) -> bool:
        """Whether a committed object has this key."""
        return await self.etcd.get(keys.obj(key)) is not None

    @_etcd_errors
    async def delete_object(self, key: str) -> ObjectRecord | None:
        """Remove an object's record and index entry atomically; return the record."""
        while True:
            found = await self.etcd.get(keys.obj(key))
            if found is None:
                return None
            record = ObjectRecord.from_json(found.value)
            ok, _ = await self.etcd.transaction(
                compare=[self._tx.mod(keys.obj(key)) == found.mod_revision],
                success=[
                    self._tx.delete(keys.obj(key)),
                    self._tx.delete(keys.index_entry(record.owner, record.catalog, key)),
                ],
                failure=[],
            )
            if ok:
                return record

    @_etcd_errors
    async def list_catalog(self, owner: str, catalog: str) -> list[tuple[str, dict[str, Any]]]:
        """``(key, {"name", "size", "created"})`` of every object in a catalog."""
        prefix = keys.index_prefix(owner, catalog)
        found = await self.etcd.get_prefix(prefix)
        return [(kv.key[len(prefix) :].decode(), json.loads(kv.value)) for kv in found]

    # containers -------------------------------------------------------------

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
    async def containers(self) -> list[dict[str, Any]]:
        """Records of all live containers."""
        found = await self.etcd.get_prefix(keys.containers_prefix())
        return [json.loads(kv.value) for kv in found]
