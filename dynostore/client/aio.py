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
from collections.abc import AsyncGenerator, AsyncIterator, Hashable, Sequence
from pathlib import Path
from typing import Any, cast

import grpc

from dynostore import validation
from dynostore._proto import gateway_pb2
from dynostore.client.admin import AdminCalls
from dynostore.client.coalesce import Coalescer, each_alone
from dynostore.client.latency import HedgeCounts, HedgePolicy
from dynostore.client.pipeline import ObjectInfo, Pipeline, PutItem, Reservation, SegmentSource, object_info
from dynostore.client.placement import PlacementPolicy
from dynostore.client.progress import ProgressArg, progress_callback
from dynostore.client.records import (
    CatalogInfo,
    ChunkState,
    Event,
    ObjectStat,
    _catalog_info,
)
from dynostore.errors import DynoStoreError, InvalidArgument, NotFound, PermissionDenied, error_for_code
from dynostore.rpc import auth_metadata, from_rpc_error
from dynostore.rpc.channels import endpoint_list
from dynostore.rpc.tls import Tls
from dynostore.rpc.tuning import tune_malloc

BytesLike = bytes | bytearray | memoryview
# Single puts up to this size are gathered into batches when several run at once (AsyncClient(coalesce=)).
COALESCE_MAX_BYTES = 1 << 20


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


class AsyncClient(AdminCalls):
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
            coalesce: gather single puts (up to COALESCE_MAX_BYTES), gets,
                exists calls and evicts made at the same time into batch calls (see
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
        self._evicts: Coalescer[str, bool] = Coalescer(self._run_evicts)

    @property
    def hedge_counts(self) -> HedgeCounts:
        """How often hedging read another chunk or gave up a lagging chunk write, over this client's life."""
        return self._pipeline.hedge_counts

    async def close(self) -> None:
        """Close the client's channels (once the batches on their way are done)."""
        for coalescer in (self._puts, self._gets, self._exists, self._evicts):
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
        if self.coalesce:
            validation.key(key)
            return await self._evicts.submit(token_user, key)
        return await self._pipeline.evict(key, token_user)

    async def _run_evicts(self, token: Hashable, keys: list[str]) -> Sequence[bool | DynoStoreError]:
        """Evict a batch of single evicts of one token with one Evict call; each fails alone."""
        token = cast(str, token)
        if len(keys) == 1:
            return await each_alone(lambda key: self._pipeline.evict(key, token), keys)
        try:
            return await self._pipeline.evict_many(keys, token)
        except DynoStoreError:
            # Evicting twice removes nothing more; only "existed" may then say False for one that did.
            return await each_alone(lambda key: self._pipeline.evict(key, token), keys)

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

    async def _control(self, method: str, request: Any, token_user: str) -> Any:
        validation.token(token_user)
        return await self._pipeline.call(getattr(self._pipeline.gateway_stub(), method), request, token_user)
