"""The records the registry keeps in etcd: users, tokens, ticket keys, catalog events and objects."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any


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
    """One change to a catalog: kind is put, replace, evict, expire, share or unshare.

    A ``replace`` is a put that replaced objects: ``replaced`` holds their keys
    (``key`` itself when replaced by key).

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
    replaced: tuple[str, ...] = ()


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
    # The key this version's chunks are stored under, when a put replaced the
    # object by key (the key planned for that put); empty: ``key`` itself.
    version: str = ""

    @property
    def chunk_key(self) -> str:
        """The key the chunks of this version are stored (and ticketed) under."""
        return self.version or self.key

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
        values = {name: getattr(self, name) for name in _RECORD_FIELDS}  # not asdict: it deep-copies
        if not self.version:
            del values["version"]  # as records were before replacement existed
        return json.dumps(values, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ObjectRecord:
        """Parse what :meth:`to_json` wrote."""
        data = json.loads(raw)
        data["chunks"] = [tuple(c) for c in data["chunks"]]
        return cls(**data)


# What an object record's JSON holds: every field but an inline object's bytes.
_RECORD_FIELDS = tuple(f.name for f in fields(ObjectRecord) if f.name != "data")


def dumps(value: Any) -> bytes:
    """Compact JSON for etcd."""
    return json.dumps(value, separators=(",", ":")).encode()


def entry_expired(entry: dict[str, Any], now: float) -> bool:
    """Whether the object of an index entry (or record fields) has expired at ``now``."""
    expires = entry.get("expires", 0.0)
    return bool(expires) and expires <= now


def expiry(created: float, ttl: float, catalog: dict[str, Any] | None) -> float:
    """When an object committed at ``created`` expires: after ``ttl``, else its catalog's default (0: never)."""
    ttl = ttl or (catalog or {}).get("ttl", 0.0)
    return created + ttl if ttl else 0.0
