"""The asyncio flavour of the SDK: :class:`AsyncClient`.

```python
from dynostore.client import AsyncClient

async with AsyncClient("127.0.0.1:8095") as client:
    key = await client.put(data=b"Hello, World!", token_user=token, catalog="catalog-0")
    data = await client.get(key=key, token_user=token)
```
"""

from __future__ import annotations

import asyncio
import builtins
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc

from dynostore import validation
from dynostore._proto import gateway_pb2
from dynostore.client.coalesce import Coalescer, each_alone
from dynostore.client.latency import HedgeCounts, HedgePolicy
from dynostore.client.pipeline import ObjectInfo, Pipeline, PutItem, Reservation, SegmentSource, object_info
from dynostore.client.placement import PlacementPolicy
from dynostore.client.progress import ProgressArg, progress_callback
from dynostore.client.status import FabricStatus, MoveStatus, fabric_status, move_status
from dynostore.errors import DynoStoreError, InvalidArgument, NotFound, PermissionDenied, error_for_code
from dynostore.rpc import auth_metadata, from_rpc_error
from dynostore.rpc.channels import endpoint_list
from dynostore.rpc.tls import Tls
from dynostore.rpc.tuning import tune_malloc

BytesLike = bytes | bytearray | memoryview
# Single puts up to this size are gathered into batches when several run at once (AsyncClient(coalesce=)).
COALESCE_MAX_BYTES = 1 << 20


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


def replacement(replace: bool, key: str | None, planned: Reservation | None, name: str | None) -> tuple[str, bool]:
    """``(replace_key, replace_name)`` of a put: by key (``key`` or the planned one) if given, else by name.

    Raises:
        InvalidArgument: ``key`` without ``replace``, or ``replace`` with neither a key nor a name.
    """
    if not replace:
        if key is not None:
            raise InvalidArgument("key= names the object to replace: give replace=True with it.")
        return "", False
    if key is not None and planned is not None and key != planned.key:
        raise InvalidArgument("Give the key to replace or a planned key, not two different keys.")
    if key is not None or planned is not None:
        return key if key is not None else planned.key if planned else "", False
    if not name:
        raise InvalidArgument("replace=True needs the key of the object to replace, or a name to replace by.")
    return "", True


def bytes_segments(data: BytesLike) -> tuple[SegmentSource, int]:
    """A segment source over bytes-like data, and its size (a bytes object of one segment is not copied)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}.")
    view = memoryview(data).cast("B")

    async def segments(segment_size: int) -> AsyncIterator[bytes]:
        if isinstance(data, bytes) and len(data) <= segment_size:
            yield data  # pyeclib needs bytes; only other inputs are copied, one segment at a time
            return
        for start in range(0, max(len(view), 1), segment_size):
            yield bytes(view[start : start + segment_size])

    return segments, len(view)


def join_each(objects: Sequence[Sequence[bytes] | None]) -> list[bytes | None]:
    """Each object's bytes from its segments (None stays None; one segment is not copied)."""
    return [b"".join(segments) if segments is not None else None for segments in objects]


def file_segments(path: Path) -> SegmentSource:
    """A segment source reading ``path`` one segment at a time."""

    async def segments(segment_size: int) -> AsyncIterator[bytes]:
        with open(path, "rb") as f:
            while True:
                segment = await asyncio.to_thread(f.read, segment_size)
                yield segment
                if len(segment) < segment_size:
                    return

    return segments


class AsyncClient:
    """Asyncio client of a DynoStore gateway, with the same methods as :class:`Client`."""

    def __init__(
        self,
        gateway: str | Sequence[str],
        *,
        placement: PlacementPolicy | None = None,
        timeout: float = 30.0,
        fragment_timeout: float = 20.0,
        retries: int = 3,
        k: int = 0,
        m: int = 0,
        tls_ca: str | os.PathLike[str] | None = None,
        relay: bool = False,
        coalesce: bool = True,
        hedging: bool = True,
        hedge: HedgePolicy | None = None,
    ) -> None:
        """Prepare a client of the gateway at ``gateway`` (``host:port``), or of several; connects lazily.

        Args:
            gateway: address of a DynoStore gateway, or of several gateways of
                one fabric (a list, or comma-separated): the client keeps to one
                of them, in a random order of its own (so clients spread over
                them and each reads its own writes), and a call that finds it
                unavailable is retried on the next.
            placement: chooses containers for chunks (default: SpreadPlacement).
            timeout: seconds allowed for each control call and each chunk batch.
            fragment_timeout: seconds a container may stall a chunk stream before it
                counts as failed (reads then use parity; puts record the chunk missing).
            retries: times a control call is retried while the gateway is unavailable.
            k: data fragments per segment for puts (0: the catalog's policy, else the gateway's default).
            m: parity fragments per segment for puts (used when ``k`` is set).
            tls_ca: CA certificate (PEM file) of a fabric that runs TLS.
            relay: move object bytes through the gateway, which codes and places
                them (for clients that can reach the gateway but not the containers).
            coalesce: gather single puts (up to COALESCE_MAX_BYTES), gets and
                exists calls made at the same time into batch calls (see
                :mod:`dynostore.client.coalesce`); a lone call goes at once.
            hedging: gets read from the containers expected to answer first and
                read another chunk beside one that lags; puts stop waiting for
                chunks that lag once k + 1 are durable and record them missing
                (the gateway's repair sweeps rebuild them). False: wait for each.
            hedge: the deadlines of hedging (default: ``HedgePolicy()``).

        Raises:
            InvalidArgument: the address or the policy is malformed.
        """
        if not isinstance(gateway, str | list | tuple) or not all(isinstance(g, str) for g in gateway):
            raise InvalidArgument("The gateway address must be a 'host:port' string, or a list of them.")
        tune_malloc()
        # Comma-separated: "host1:8095,host2:8095".
        self.gateway = ",".join(endpoint_list(gateway))
        self.k, self.m = k, m
        self._pipeline = Pipeline(
            self.gateway,
            placement=placement,
            timeout=timeout,
            fragment_timeout=fragment_timeout,
            retries=retries,
            tls=Tls.load(Path(tls_ca)) if tls_ca else None,
            relay=relay,
            hedging=hedging,
            hedge=hedge,
        )
        self.coalesce = coalesce and not relay
        self._puts: Coalescer[PutItem, str] = Coalescer(self._run_puts)
        self._gets: Coalescer[str, list[bytes]] = Coalescer(self._run_gets)
        self._exists: Coalescer[str, bool] = Coalescer(self._run_exists)

    @property
    def hedge_counts(self) -> HedgeCounts:
        """How often hedging read another chunk or gave up a lagging chunk write, over this client's life."""
        return self._pipeline.hedge_counts

    async def close(self) -> None:
        """Close the client's channels (once the batches on their way are done)."""
        for coalescer in (self._puts, self._gets, self._exists):
            await coalescer.close()
        await self._pipeline.close()

    async def __aenter__(self) -> AsyncClient:
        """Return the client itself."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the client."""
        await self.close()

    # objects ----------------------------------------------------------------

    async def put(
        self,
        data: BytesLike,
        token_user: str,
        catalog: str,
        name: str | None = None,
        planned: Reservation | None = None,
        ttl: float | None = None,
        *,
        replace: bool = False,
        key: str | None = None,
    ) -> str:
        """Store ``data`` in ``catalog`` and return the new object's key.

        ``planned`` gives the key to use, reserved earlier with :meth:`plan_keys`.
        ``ttl``: seconds the object lives (None: the catalog's default TTL, else
        forever); once they are over it is never returned and the gateway's sweep evicts it.

        With ``replace``, the put replaces atomically: the object ``key`` (or
        the ``planned`` key, if it holds one already), which keeps its key;
        without either, every object called ``name`` in ``catalog``, so that
        the name is unique there (the returned key is then new). Readers see
        the old version or the new one, never a mix; the old chunks are
        deleted after the commit, and usage counts the new size minus the old.

        Raises:
            InvalidArgument: ``data`` is not bytes-like, or a name or the TTL is malformed,
                or ``replace`` has neither a key nor a name.
            Unauthenticated: the token is not valid.
            Unavailable: too few containers could store a chunk.
            AlreadyExists: the planned key holds an object already (without ``replace``).
            NotFound: ``replace`` names a ``key`` no object has.
            PermissionDenied: that object belongs to another user.
            ResourceExhausted: the put would exceed the user's quota.
        """
        segments, size = bytes_segments(data)
        replace_key, replace_name = replacement(replace, key, planned, name)
        item = PutItem(segments, size, name or "", ttl or 0.0, replace_key, replace_name)
        if self.coalesce and planned is None and not (replace_key or replace_name) and size <= COALESCE_MAX_BYTES:
            return await self._puts.submit((token_user, catalog), item)  # a replacing put commits alone
        (key,) = await self._pipeline.put(
            [item], token=token_user, catalog=catalog, k=self.k, m=self.m, planned=[planned] if planned else None
        )
        return key

    async def put_stream(
        self,
        source: SegmentSource,
        size: int,
        token_user: str,
        catalog: str,
        name: str | None = None,
        ttl: float | None = None,
    ) -> str:
        """Store ``size`` bytes that ``source(segment_size)`` yields in segments of that size; return the key.

        Nothing is buffered beyond one segment; if ``source`` raises, nothing
        is committed (the S3 front door streams request bodies this way).

        Raises:
            InvalidArgument: the source yielded another number of bytes than ``size``.
            Unauthenticated: the token is not valid.
            Unavailable: too few containers could store a chunk.
            ResourceExhausted: the put would exceed the user's quota.
        """
        (key,) = await self._pipeline.put(
            [PutItem(source, size, name or "", ttl or 0.0)], token=token_user, catalog=catalog, k=self.k, m=self.m
        )
        return key

    async def get_stream(self, key: str, token_user: str, start: int = 0) -> AsyncGenerator[bytes, None]:
        """Yield the bytes of object ``key`` one verified segment at a time, from byte ``start`` on.

        The segments before ``start`` are not read (a ranged read costs what it returns, plus one segment).

        Raises:
            NotFound: no object has this key.
            DataLoss: too many chunks are lost or corrupt to rebuild it.
        """
        async for segment in self._pipeline.get(key, token=token_user, start=start):
            yield segment

    async def _run_puts(self, group: Hashable, items: list[PutItem]) -> Sequence[str | DynoStoreError]:
        """Put a batch of single puts of one token into one catalog; each fails alone (see :mod:`.coalesce`)."""
        token, catalog = cast(tuple[str, str], group)

        async def alone(item: PutItem) -> str:
            (key,) = await self._pipeline.put([item], token=token, catalog=catalog, k=self.k, m=self.m)
            return key

        if len(items) == 1:
            return await each_alone(alone, items)
        try:
            return await self._pipeline.put(items, token=token, catalog=catalog, k=self.k, m=self.m)
        except DynoStoreError as exc:
            if exc.outcome_unknown:
                return [exc] * len(items)  # they may have landed: putting them again could make copies
            return await each_alone(alone, items)  # nothing of the batch was committed

    async def plan_keys(self, count: int, token_user: str) -> list[Reservation]:
        """Reserve keys for objects to put later (each valid for 6 hours, for this user only)."""
        return await self._pipeline.plan_keys(count, token_user, self.k, self.m)

    async def put_batch(
        self,
        datas: Sequence[BytesLike],
        token_user: str,
        catalog: str,
        names: Sequence[str] | None = None,
        ttl: float | None = None,
    ) -> list[str]:
        """Store many objects with one round of control calls per group of 256; keys in order.

        ``ttl``: as for :meth:`put`, for every object.

        Raises:
            InvalidArgument: an item is not bytes-like, or ``names`` has another length.
            ResourceExhausted: the batch would exceed the user's quota.
        """
        if names is not None and len(names) != len(datas):
            raise InvalidArgument("put_batch needs one name per object.")
        items = []
        for i, data in enumerate(datas):
            segments, size = bytes_segments(data)
            items.append(PutItem(segments, size, names[i] if names else "", ttl or 0.0))
        return await self._pipeline.put(items, token=token_user, catalog=catalog, k=self.k, m=self.m)

    async def get(self, key: str, token_user: str) -> bytes:
        """Return the bytes of object ``key``.

        Raises:
            NotFound: no object has this key (a subclass of KeyError).
            PermissionDenied: the object belongs to another user.
            DataLoss: too many chunks are lost or corrupt to rebuild it.
        """
        return b"".join(await self._segments(key, token_user))

    async def _segments(self, key: str, token_user: str) -> list[bytes]:
        """The decoded segments of object ``key``, in order."""
        if self.coalesce:
            validation.key(key)
            return await self._gets.submit(token_user, key)
        return await self._pipeline.get_whole(key, token_user)

    async def _run_gets(self, token: Hashable, keys: list[str]) -> Sequence[list[bytes] | DynoStoreError]:
        """Read a batch of single gets of one token; each fails alone."""
        token = cast(str, token)

        async def alone(key: str) -> list[bytes]:
            return await self._pipeline.get_whole(key, token)

        if len(keys) == 1:
            return await each_alone(alone, keys)
        try:
            found = await self._pipeline.get_many(keys, token)
        except DynoStoreError:
            return await each_alone(alone, keys)  # reads change nothing: each again, alone
        return [
            s if s is not None else NotFound(f"No object has the key {k}.") for k, s in zip(keys, found, strict=True)
        ]

    async def get_batch(self, keys: Sequence[str], token_user: str) -> list[bytes | None]:
        """Bytes of many objects in order, None for keys with no object; few control calls."""
        return join_each(await self._batch_segments(keys, token_user))

    async def _batch_segments(self, keys: Sequence[str], token_user: str) -> list[list[bytes] | None]:
        """The decoded segments of each object, None where a key has no object."""
        return await self._pipeline.get_many(keys, token_user)

    async def exists(self, key: str, token_user: str) -> bool:
        """Whether ``key`` names an object readable with this token."""
        if self.coalesce:
            validation.key(key)
            return await self._exists.submit(token_user, key)
        return await self._pipeline.exists(key, token_user)

    async def _run_exists(self, token: Hashable, keys: list[str]) -> Sequence[bool | DynoStoreError]:
        """Answer a batch of exists calls of one token with one Locate call."""
        token = cast(str, token)
        if len(keys) == 1:
            return await each_alone(lambda key: self._pipeline.exists(key, token), keys)
        try:
            locations = await self._pipeline.locate(keys, token)
        except DynoStoreError:
            return await each_alone(lambda key: self._pipeline.exists(key, token), keys)
        hidden = (NotFound.code.value[0], PermissionDenied.code.value[0])
        return [
            True if not loc.code else False if loc.code in hidden else error_for_code(loc.code, loc.message)
            for loc in locations
        ]

    async def evict(self, key: str, token_user: str) -> bool:
        """Remove object ``key``; return whether it existed (removing a missing object is not an error)."""
        return await self._pipeline.evict(key, token_user)

    async def repair(self, key: str, token_user: str, progress: ProgressArg = None, verify: bool = False) -> int:
        """Rebuild the chunks of object ``key`` that are missing or on containers gone; return how many.

        ``progress``: a callable given the bytes re-read after each segment, or True for a bar.
        ``verify``: also read every chunk in full and rebuild those that are gone or corrupt.

        Raises:
            DataLoss: too few chunks are left to rebuild it.
            Unavailable: some replacement chunks could not be written.
        """
        location = await self._pipeline.locate_one(key, token_user)
        with progress_callback(progress, location.object.size, f"repair {key[:8]}") as report:
            return await self._pipeline.repair(key, token_user, report, verify=verify)

    async def list(self, catalog: str, token_user: str, name: str | None = None) -> list[ObjectInfo]:
        """The objects of ``catalog`` (``.key``, ``.name``, ``.size``...); with ``name``, only those of that name."""
        return await self._pipeline.list(catalog, token_user, name or "")

    async def size(self, key: str, token_user: str) -> int:
        """Size in bytes of object ``key``."""
        return (await self._pipeline.locate_one(key, token_user)).object.size

    async def stat(self, key: str, token_user: str) -> ObjectStat:
        """Metadata of object ``key`` and where each of its chunks is."""
        location = await self._pipeline.locate_one(key, token_user)
        chunks = tuple(ChunkState(c.index, c.container_id, c.stored, bool(c.address)) for c in location.chunks)
        return ObjectStat(object_info(location.object), location.inline, location.policy.k, location.policy.m, chunks)

    async def put_file(
        self,
        path: str | os.PathLike[str],
        token_user: str,
        catalog: str,
        name: str | None = None,
        progress: ProgressArg = None,
        ttl: float | None = None,
        *,
        replace: bool = False,
        key: str | None = None,
    ) -> str:
        """Store a file, streaming it segment by segment, and return its key.

        ``progress``: a callable given the bytes sent after each segment, or
        True for a progress bar on stderr. ``ttl``, ``replace`` and ``key``: as
        for :meth:`put` (by name, the name defaults to the file's).
        """
        path = Path(path)
        size = path.stat().st_size
        name = name if name is not None else path.name
        replace_key, replace_name = replacement(replace, key, None, name)
        item = PutItem(file_segments(path), size, name, ttl or 0.0, replace_key, replace_name)
        with progress_callback(progress, size, f"put {path.name}") as report:
            (key,) = await self._pipeline.put(
                [item], token=token_user, catalog=catalog, k=self.k, m=self.m, progress=report
            )
        return key

    async def get_file(
        self, key: str, path: str | os.PathLike[str], token_user: str, progress: ProgressArg = None
    ) -> None:
        """Write object ``key`` to ``path``, streaming; the file appears only when complete."""
        path = Path(path)
        temp = path.with_name(f".{path.name}.dynostore-partial")
        location = await self._pipeline.locate_one(key, token_user)
        try:
            with progress_callback(progress, location.object.size, f"get {path.name}") as report, open(temp, "wb") as f:
                async for segment in self._pipeline.get(key, token=token_user, progress=report):
                    await asyncio.to_thread(f.write, segment)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    # users ------------------------------------------------------------------

    async def create_user(self, name: str, token_user: str, container: bool = False) -> str:
        """Create user ``name`` (needs an admin token) and return its token.

        With ``container``, the user is a container credential: its token may
        register containers and send their heartbeats, and do nothing else.
        """
        return await self._pipeline.create_user(name, token_user, container)

    async def whoami(self, token_user: str) -> str:
        """The name of the user the token belongs to."""
        return str((await self._control("WhoAmI", gateway_pb2.WhoAmIRequest(), token_user)).name)

    async def usage(self, token_user: str) -> UserUsage:
        """What your objects take (bytes, objects) and your quota (0: unlimited)."""
        return _user_usage((await self._control("WhoAmI", gateway_pb2.WhoAmIRequest(), token_user)).usage)

    async def list_users(self, token_user: str) -> builtins.list[UserInfo]:
        """Every user with its usage and quota (admin token needed)."""
        reply = await self._control("ListUsers", gateway_pb2.ListUsersRequest(), token_user)
        return [_user_info(u) for u in reply.users]

    async def set_quota(
        self, name: str, token_user: str, bytes: int | None = None, objects: int | None = None
    ) -> UserInfo:
        """Limit what user ``name`` may store (admin token needed); 0 or None: unlimited.

        Puts that would take the user over either limit are refused with
        ResourceExhausted; what it stores already stays.

        Raises:
            PermissionDenied: the token is not an admin's.
            NotFound: there is no such user.
            InvalidArgument: a limit is negative.
        """
        validation.user_name(name)
        if (bytes or 0) < 0 or (objects or 0) < 0:
            raise InvalidArgument("A quota is 0 (unlimited) or a positive number of bytes or objects.")
        request = gateway_pb2.SetQuotaRequest(name=name, bytes=bytes or 0, objects=objects or 0)
        return _user_info(await self._control("SetQuota", request, token_user))

    async def remove_user(self, name: str, token_user: str, purge: bool = False) -> UserRemoval:
        """Remove a user, revoking all its tokens and the grants made to it at once (admin token needed).

        Its catalogs and objects stay (a user created again under the name gets
        them back) unless ``purge``, which deletes them all; ``purge`` also
        clears what a user removed earlier left behind.
        """
        validation.user_name(name)
        request = gateway_pb2.RemoveUserRequest(name=name, purge=purge)
        reply = await self._control("RemoveUser", request, token_user)
        return UserRemoval(reply.tokens_revoked, reply.objects_evicted)

    async def create_token(self, token_user: str, user: str | None = None) -> tuple[str, TokenInfo]:
        """A new token for yourself (or, with an admin token, for ``user``): ``(token, info)``."""
        reply = await self._control("CreateToken", gateway_pb2.CreateTokenRequest(user=user or ""), token_user)
        return reply.token, TokenInfo(reply.info.id, reply.info.user, reply.info.created)

    async def create_s3_key(self, token_user: str, user: str | None = None) -> tuple[str, str]:
        """A new S3 access key for yourself (or, with an admin token, for ``user``).

        Returns ``(access_key_id, secret_access_key)`` for the S3 front door
        (``dynostore s3``); the secret is shown only now.

        Raises:
            PermissionDenied: ``user`` is another user and the token is not an admin's.
            FailedPrecondition: the gateway runs without an admin token.
        """
        reply = await self._control("CreateS3Key", gateway_pb2.CreateS3KeyRequest(user=user or ""), token_user)
        return reply.access_key_id, reply.secret_access_key

    async def s3_signing_key(
        self, access_key_id: str, date: str, region: str, token_user: str
    ) -> tuple[bytes, str, str]:
        """For the S3 front door (admin token): ``(signing_key, user, token)`` of an access key for one day and region.

        Raises:
            NotFound: there is no such access key, or it was revoked.
            PermissionDenied: the token is not an admin's.
        """
        request = gateway_pb2.GetS3SigningKeyRequest(
            access_key_id=access_key_id, date=date, region=region, service="s3"
        )
        reply = await self._control("GetS3SigningKey", request, token_user)
        return reply.signing_key, reply.user, reply.token

    async def revoke_s3_key(self, access_key_id: str, token_user: str) -> None:
        """Revoke an S3 access key (yours, or anyone's with an admin token)."""
        await self._control("RevokeS3Key", gateway_pb2.RevokeS3KeyRequest(access_key_id=access_key_id), token_user)

    async def list_tokens(self, token_user: str, user: str | None = None) -> builtins.list[TokenInfo]:
        """Ids of your tokens (or, with an admin token, of ``user``'s)."""
        reply = await self._control("ListTokens", gateway_pb2.ListTokensRequest(user=user or ""), token_user)
        return [TokenInfo(t.id, t.user, t.created) for t in reply.tokens]

    async def revoke_token(self, token_id: str, token_user: str) -> None:
        """Revoke a token by id; it stops working at once (on other gateways, within milliseconds)."""
        await self._control("RevokeToken", gateway_pb2.RevokeTokenRequest(id=token_id), token_user)

    # catalogs, sharing, events ------------------------------------------------

    async def create_catalog(
        self, catalog: str, token_user: str, k: int = 0, m: int = 0, ttl: float | None = None
    ) -> CatalogInfo:
        """Create an empty catalog (puts also create theirs).

        With ``k`` (and ``m``), puts into it that ask for no policy of their own
        (a client made without ``k``/``m``) are erasure-coded k + m. With
        ``ttl``, puts into it that give no TTL live that many seconds.

        Raises:
            InvalidArgument: the policy or TTL is malformed.
            AlreadyExists: you have a catalog of that name.
        """
        if k or m:
            validation.ec_params(k, m)
        request = gateway_pb2.CatalogRequest(catalog=catalog, k=k, m=m, ttl=validation.ttl(ttl or 0.0))
        reply = await self._control("CreateCatalog", request, token_user)
        return _catalog_info(reply)

    async def list_catalogs(self, token_user: str) -> builtins.list[CatalogInfo]:
        """Your catalogs, then those shared with you (``owner/name`` reads them)."""
        reply = await self._control("ListCatalogs", gateway_pb2.ListCatalogsRequest(), token_user)
        return [_catalog_info(c) for c in reply.catalogs]

    async def describe_catalog(self, catalog: str, token_user: str) -> CatalogInfo:
        """A catalog with its object count, bytes and readers."""
        reply = await self._control("DescribeCatalog", gateway_pb2.CatalogRequest(catalog=catalog), token_user)
        return _catalog_info(reply)

    async def delete_catalog(self, catalog: str, token_user: str, force: bool = False) -> int:
        """Delete one of your catalogs; one that holds objects needs ``force`` (evicts them). Returns evictions.

        Raises:
            FailedPrecondition: the catalog holds objects and ``force`` is false.
        """
        request = gateway_pb2.DeleteCatalogRequest(catalog=catalog, force=force)
        return int((await self._control("DeleteCatalog", request, token_user)).evicted)

    async def share(self, catalog: str, with_user: str, token_user: str) -> None:
        """Let ``with_user`` read, list and subscribe to your ``catalog`` (never evict or put)."""
        request = gateway_pb2.ShareRequest(catalog=catalog, with_user=with_user)
        await self._control("Share", request, token_user)

    async def unshare(self, catalog: str, with_user: str, token_user: str) -> bool:
        """Take ``with_user``'s access away at once; return whether they had it."""
        request = gateway_pb2.ShareRequest(catalog=catalog, with_user=with_user)
        return bool((await self._control("Unshare", request, token_user)).changed)

    async def subscribe(
        self, catalog: str, token_user: str, start_revision: int = 0, idle_timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events of a catalog (``kind``: put, replace, evict, expire, share, unshare) as they happen.

        Runs until the caller stops iterating, or until the subscriber's access
        ends. When the gateway goes away, it subscribes again from the last
        revision it saw, so no event is lost or repeated; after ``retries``
        failed attempts in a row it raises :class:`~dynostore.errors.Unavailable`.
        With ``idle_timeout``, an event of kind ``idle`` (its ``revision``: the
        next one to expect) comes whenever nothing happened for that many
        seconds, so a caller can check on its own reader while it waits.
        """
        validation.token(token_user)
        next_revision, failures = start_revision, 0
        while True:
            call = self._pipeline.gateway_stub().Subscribe(
                gateway_pb2.SubscribeRequest(catalog=catalog, start_revision=next_revision),
                metadata=auth_metadata(token_user),
            )
            reading: asyncio.Future[Any] | None = None
            try:
                while True:
                    reading = reading or asyncio.ensure_future(call.read())
                    done, _ = await asyncio.wait({reading}, timeout=idle_timeout)
                    if not done:
                        yield Event("idle", "", "", 0, time.time(), next_revision, "", "", catalog)
                        continue
                    message, reading = reading.result(), None
                    if message is grpc.aio.EOF:
                        return
                    failures = 0
                    next_revision = message.revision + (message.kind != "ready")
                    if message.kind != "ready":
                        yield Event(
                            message.kind, message.key, message.name, message.size, message.time,
                            message.revision, message.user, message.owner, message.catalog,
                            tuple(message.replaced),
                        )  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or failures >= self._pipeline.retries + 5:
                    raise from_rpc_error(exc) from None
                failures += 1
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
            finally:
                if reading is not None:
                    reading.cancel()
                call.cancel()

    async def status(self, token_user: str) -> FabricStatus:
        """The fabric at a glance: gateways, etcd members, containers up and down, totals, repair."""
        return fabric_status(await self._control("GetStatus", gateway_pb2.GetStatusRequest(), token_user))

    async def drain_container(
        self,
        container_id: str,
        token_user: str,
        *,
        bandwidth: int = 0,
        wait: bool = True,
        progress: Callable[[MoveStatus], None] | None = None,
        poll: float = 1.0,
    ) -> MoveStatus:
        """Drain a container (admin): no new chunks go there, and a gateway moves every chunk it holds elsewhere.

        ``bandwidth`` caps the bytes per second moved (0: no limit). With
        ``wait``, returns once no record names the container (``done``), the
        drain was stopped, or a pass left objects that no other container can
        take (``stuck_objects``); ``progress`` is called with every status
        polled (every ``poll`` seconds). Calling it again resumes a drain.

        Raises:
            NotFound: no such container is known.
            PermissionDenied: the token is not an admin's.
        """
        request = gateway_pb2.DrainContainerRequest(container_id=container_id, bandwidth=bandwidth)
        first = move_status(await self._control("DrainContainer", request, token_user))
        if not wait:
            return first

        async def current() -> MoveStatus:
            found = [c.drain for c in (await self.status(token_user)).containers if c.id == container_id]
            if not found:
                raise NotFound(f"Container {container_id} was removed during its drain.")
            return found[0]

        return await self._follow(first, current, progress, poll, stuck_ends=True)

    async def stop_drain(self, container_id: str, token_user: str) -> MoveStatus:
        """End a container's drain (admin): it takes new chunks again; what moved stays moved."""
        request = gateway_pb2.DrainContainerRequest(container_id=container_id, stop=True)
        return move_status(await self._control("DrainContainer", request, token_user))

    async def remove_container(self, container_id: str, token_user: str, force: bool = False) -> int:
        """Forget a container that is stopped and drained (admin); return the chunks records still named there.

        Raises:
            FailedPrecondition: it is registered (stop its daemon first), or, without ``force``,
                object records still name it (drain it first).
            NotFound: no such container is known.
        """
        request = gateway_pb2.RemoveContainerRequest(container_id=container_id, force=force)
        return int((await self._control("RemoveContainer", request, token_user)).chunks_named)

    async def rebalance(
        self,
        token_user: str,
        *,
        bandwidth: int = 0,
        wait: bool = True,
        progress: Callable[[MoveStatus], None] | None = None,
        poll: float = 1.0,
    ) -> MoveStatus:
        """Even out used space (admin): a gateway moves chunks from the fullest containers to the emptiest.

        Arguments as for :meth:`drain_container`; with ``wait``, returns once
        the rebalance is done or stopped.
        """
        request = gateway_pb2.RebalanceRequest(bandwidth=bandwidth)
        first = move_status(await self._control("Rebalance", request, token_user))
        if not wait:
            return first

        async def current() -> MoveStatus:
            return (await self.status(token_user)).rebalance

        return await self._follow(first, current, progress, poll, stuck_ends=False)

    async def stop_rebalance(self, token_user: str) -> MoveStatus:
        """Stop a rebalance (admin); what moved stays moved."""
        return move_status(await self._control("Rebalance", gateway_pb2.RebalanceRequest(stop=True), token_user))

    @staticmethod
    async def _follow(
        first: MoveStatus,
        current: Callable[[], Any],
        progress: Callable[[MoveStatus], None] | None,
        poll: float,
        *,
        stuck_ends: bool,
    ) -> MoveStatus:
        """Poll a job until it ends: done or stopped, or (``stuck_ends``) idle with objects stuck.

        Only progress published after ``first`` counts as an end (an older record may say done).
        """
        while True:
            await asyncio.sleep(poll)
            status: MoveStatus = await current()
            if progress is not None:
                progress(status)
            fresh = status.updated > first.updated
            if not status.active and (fresh or not first.active):
                return status
            if fresh and not status.running and (status.done or (stuck_ends and status.stuck_objects)):
                return status

    async def rotate_ticket_key(self, token_user: str, grace_seconds: int = 0) -> str:
        """Make the gateways sign chunk tickets with a new key (admin); return its id.

        Tickets signed with older keys stay valid for ``grace_seconds`` (0: the ticket lifetime).
        """
        request = gateway_pb2.RotateTicketKeyRequest(grace_seconds=grace_seconds)
        return str((await self._control("RotateTicketKey", request, token_user)).id)

    async def _control(self, method: str, request: Any, token_user: str) -> Any:
        validation.token(token_user)
        return await self._pipeline.call(getattr(self._pipeline.gateway_stub(), method), request, token_user)
