"""What the SDK's calls return besides keys and bytes: users, catalogs, events, object states, tokens."""

from __future__ import annotations

from dataclasses import dataclass

from dynostore._proto import gateway_pb2
from dynostore.client.pipeline import ObjectInfo


@dataclass(frozen=True)
class UserUsage:
    """What a user's objects take and its quota (0: unlimited); expired objects count until evicted."""

    bytes: int
    objects: int
    quota_bytes: int = 0
    quota_objects: int = 0


@dataclass(frozen=True)
class UserInfo:
    """A user as :meth:`AsyncClient.list_users` reports it (``usage``: None for container credentials)."""

    name: str
    admin: bool
    created: float
    container: bool = False
    usage: UserUsage | None = None


def _user_usage(message: gateway_pb2.Usage) -> UserUsage:
    return UserUsage(message.bytes, message.objects, message.quota_bytes, message.quota_objects)


def _user_info(message: gateway_pb2.UserInfo) -> UserInfo:
    usage = _user_usage(message.usage) if message.HasField("usage") else None
    return UserInfo(message.name, message.admin, message.created, message.container, usage)


@dataclass(frozen=True)
class CatalogInfo:
    """A catalog; ``objects``, ``bytes`` and ``shared_with`` are filled by describe_catalog."""

    owner: str
    name: str
    created: float
    objects: int = 0
    bytes: int = 0
    shared_with: tuple[str, ...] = ()
    # The erasure-coding policy of puts into it that ask for none (k 0: the gateway default).
    k: int = 0
    m: int = 0
    # The lifetime in seconds of puts into it that give none (0: forever).
    ttl: float = 0.0


@dataclass(frozen=True)
class Event:
    """A change to a catalog: ``kind`` is put, replace, evict, expire, share or unshare (``user``: the reader).

    A ``replace`` is a put that replaced objects: ``replaced`` holds their keys
    (``key`` itself when the object was replaced by key). ``idle`` (only when
    subscribing with ``idle_timeout``) says nothing happened meanwhile.
    """

    kind: str
    key: str
    name: str
    size: int
    time: float
    revision: int
    user: str
    owner: str
    catalog: str
    replaced: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChunkState:
    """Where one chunk of an object is: ``live`` when it is stored on a registered container."""

    index: int
    container_id: str
    stored: bool
    live: bool


@dataclass(frozen=True)
class ObjectStat:
    """An object's metadata and the state of its chunks (none for inline objects)."""

    info: ObjectInfo
    inline: bool
    k: int
    m: int
    chunks: tuple[ChunkState, ...]

    @property
    def degraded(self) -> bool:
        """Whether some chunk is missing or on a container that is not registered (repair rebuilds it)."""
        return any(not c.live for c in self.chunks)


def _catalog_info(message: gateway_pb2.CatalogInfo) -> CatalogInfo:
    return CatalogInfo(
        message.owner,
        message.name,
        message.created,
        message.objects,
        message.bytes,
        tuple(message.shared_with),
        message.k,
        message.m,
        message.ttl,
    )


@dataclass(frozen=True)
class UserRemoval:
    """What removing a user took away: its tokens, and (when purged) the objects it owned."""

    tokens_revoked: int
    objects_evicted: int = 0


@dataclass(frozen=True)
class TokenInfo:
    """A token's public id (16 hex digits of its hash), owner and creation time."""

    id: str
    user: str
    created: float
