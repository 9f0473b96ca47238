"""The DynoStore Python SDK.

```python
from dynostore.client import Client

with Client("127.0.0.1:8095") as client:
    key = client.put(data=b"Hello, World!", token_user=token, catalog="catalog-0")
    assert client.get(key=key, token_user=token) == b"Hello, World!"
```

:class:`Client` is synchronous and thread-safe; :class:`AsyncClient` has the
same methods for asyncio code.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import threading
from collections.abc import Callable, Coroutine, Generator, Iterator, Sequence
from typing import Any, TypeVar

from dynostore.client.aio import AsyncClient, BytesLike, join_each
from dynostore.client.latency import HedgeCounts, HedgePolicy
from dynostore.client.pipeline import ObjectInfo, Reservation
from dynostore.client.placement import PlacementPolicy, SpreadPlacement
from dynostore.client.progress import ProgressArg
from dynostore.client.records import (
    CatalogInfo,
    ChunkState,
    Event,
    ObjectStat,
    TokenInfo,
    UserInfo,
    UserRemoval,
    UserUsage,
)
from dynostore.client.status import FabricStatus, MoveStatus
from dynostore.errors import DynoStoreError
from dynostore.rpc.requests import current_request_id, request_scope

T = TypeVar("T")
# Idents of every Client's event-loop thread (see Client._on_loop_thread).
_LOOP_THREADS: set[int] = set()


async def _as_one_request(coro: Coroutine[Any, Any, T], request_id: str | None) -> T:
    """Run ``coro`` as one operation, under the caller's request id or a new one; failures say which."""
    with request_scope(request_id) as chosen:
        try:
            return await coro
        except DynoStoreError as exc:
            exc.request_id = exc.request_id or chosen
            raise


__all__ = [
    "AsyncClient",
    "CatalogInfo",
    "ChunkState",
    "Client",
    "Event",
    "FabricStatus",
    "HedgeCounts",
    "HedgePolicy",
    "MoveStatus",
    "ObjectInfo",
    "ObjectStat",
    "PlacementPolicy",
    "Reservation",
    "SpreadPlacement",
    "TokenInfo",
    "UserInfo",
    "UserRemoval",
    "UserUsage",
]


class Client:
    """Synchronous, thread-safe client of a DynoStore gateway.

    Every call runs on one private event loop thread (through an
    :class:`AsyncClient`), so a ``Client`` may be shared by many threads. Use
    it as a context manager, or call :meth:`close` when done.
    """

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
        """Connect to the gateway at ``gateway`` (``host:port``), or several; arguments as for :class:`AsyncClient`.

        With ``coalesce``, single puts, gets and exists calls made by many threads at once
        are gathered into batch calls (a call made alone goes at once).
        """
        self._async = AsyncClient(
            gateway,
            placement=placement,
            timeout=timeout,
            fragment_timeout=fragment_timeout,
            retries=retries,
            k=k,
            m=m,
            tls_ca=tls_ca,
            relay=relay,
            coalesce=coalesce,
            hedging=hedging,
            hedge=hedge,
        )
        self.gateway = self._async.gateway
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dynostore-client", daemon=True)
        self._thread.start()
        if self._thread.ident is not None:
            _LOOP_THREADS.add(self._thread.ident)
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("This Client is closed.")
        if os.getpid() != self._pid:
            coro.close()
            raise RuntimeError(
                "This Client was made in another process and gRPC does not survive fork(); make a new "
                "Client in this process, or start worker processes with the 'spawn' method."
            )
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "A Client call was made on the client's own event-loop thread (from a __del__ the garbage "
                "collector ran there?): it would wait for itself forever."
            )
        return asyncio.run_coroutine_threadsafe(_as_one_request(coro, current_request_id()), self._loop).result()

    @property
    def hedge_counts(self) -> HedgeCounts:
        """How often hedging read another chunk or gave up a lagging chunk write, over this client's life."""
        return self._async.hedge_counts

    def _on_loop_thread(self) -> bool:
        """Whether the caller runs on the event-loop thread of any Client (where no call may wait).

        A finalizer that the garbage collector runs there may even hold a lock of
        gRPC's that another client's loop needs: it must never block.
        """
        return threading.get_ident() in _LOOP_THREADS

    def _evict_soon(self, key: str, token_user: str) -> None:
        """Evict ``key`` without waiting (for finalizers that the garbage collector may run on the loop thread)."""
        if self._closed:
            return
        if threading.current_thread() is self._thread:
            task = self._loop.create_task(self._async.evict(key, token_user))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # no "exception never retrieved"
        else:
            asyncio.run_coroutine_threadsafe(self._async.evict(key, token_user), self._loop)

    def close(self) -> None:
        """Close channels and stop the client's event loop thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            if os.getpid() != self._pid:  # a forked copy: its loop thread does not exist here
                self._closed = True
                return
            self._run(self._shutdown())
            self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        _LOOP_THREADS.discard(self._thread.ident or 0)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Close the channels, then end whatever is left on the loop: no task or generator outlives it."""
        await self._async.close()
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await self._loop.shutdown_asyncgens()

    def __enter__(self) -> Client:
        """Return the client itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the client."""
        self.close()

    def put(
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
        """Store ``data`` (bytes, bytearray or memoryview) in ``catalog``; return its key.

        ``planned`` gives the key to use, reserved earlier with :meth:`plan_keys`.
        ``ttl``: seconds the object lives (None: the catalog's default TTL, else
        forever); once they are over it is never returned and the gateway's sweep evicts it.
        ``replace``: replace object ``key`` (or the planned one) atomically, or
        without a key every object called ``name`` in ``catalog``; see
        :meth:`AsyncClient.put`.

        Raises:
            InvalidArgument: ``data`` is not bytes-like, or a name or the TTL is malformed.
            Unauthenticated: the token is not valid.
            Unavailable: too few containers could store a chunk.
            AlreadyExists: the planned key holds an object already (without ``replace``).
            NotFound: ``replace`` names a ``key`` no object has.
            ResourceExhausted: the put would exceed the user's quota.
        """
        return self._run(self._async.put(data, token_user, catalog, name, planned, ttl, replace=replace, key=key))

    def plan_keys(self, count: int, token_user: str) -> list[Reservation]:
        """Reserve keys for objects to put later (each valid for 6 hours, for this user only)."""
        return self._run(self._async.plan_keys(count, token_user))

    def put_batch(
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
        return self._run(self._async.put_batch(datas, token_user, catalog, names, ttl))

    def get(self, key: str, token_user: str) -> bytes:
        """Return the bytes of object ``key``.

        Raises:
            NotFound: no object has this key (a subclass of KeyError).
            PermissionDenied: the object belongs to another user.
            DataLoss: too many chunks are lost or corrupt to rebuild it.
        """
        # Joined in the caller's thread: glibc gives a thread other than the main one a
        # fresh mapping for every block of 64 MiB or more (page faults on every get).
        return b"".join(self._run(self._async._segments(key, token_user)))

    def get_batch(self, keys: Sequence[str], token_user: str) -> list[bytes | None]:
        """Bytes of many objects in order, None for keys with no object; few control calls."""
        return join_each(self._run(self._async._batch_segments(keys, token_user)))  # joined here, as in get()

    def exists(self, key: str, token_user: str) -> bool:
        """Whether ``key`` names an object readable with this token."""
        return self._run(self._async.exists(key, token_user))

    def evict(self, key: str, token_user: str) -> bool:
        """Remove object ``key``; return whether it existed (removing a missing object is not an error)."""
        return self._run(self._async.evict(key, token_user))

    def repair(self, key: str, token_user: str, progress: ProgressArg = None, verify: bool = False) -> int:
        """Rebuild the chunks of object ``key`` that are missing or on containers gone; return how many.

        With ``verify``, every chunk is also read in full, and those gone or corrupt are rebuilt.

        Raises:
            DataLoss: too few chunks are left to rebuild it.
            Unavailable: some replacement chunks could not be written.
        """
        return self._run(self._async.repair(key, token_user, progress, verify))

    def list(self, catalog: str, token_user: str, name: str | None = None) -> Iterator[ObjectInfo]:
        """Yield the objects of ``catalog`` (``.key``, ``.name``, ``.size``...); with ``name``, those of that name."""
        yield from self._run(self._async.list(catalog, token_user, name))

    def size(self, key: str, token_user: str) -> int:
        """Size in bytes of object ``key``."""
        return self._run(self._async.size(key, token_user))

    def stat(self, key: str, token_user: str) -> ObjectStat:
        """Metadata of object ``key`` and where each of its chunks is (``.degraded`` if repair is due)."""
        return self._run(self._async.stat(key, token_user))

    def put_file(
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
        """Store a file, streaming it; ``progress`` is a byte-count callable or True for a bar; the rest as for put."""
        return self._run(self._async.put_file(path, token_user, catalog, name, progress, ttl, replace=replace, key=key))

    def get_file(self, key: str, path: str | os.PathLike[str], token_user: str, progress: ProgressArg = None) -> None:
        """Write object ``key`` to ``path``, streaming; the file appears only when complete."""
        self._run(self._async.get_file(key, path, token_user, progress))

    def create_user(self, name: str, token_user: str, container: bool = False) -> str:
        """Create user ``name`` (needs an admin token) and return its token.

        With ``container``, the user is a container credential: its token may
        register containers and send their heartbeats, and do nothing else.
        """
        return self._run(self._async.create_user(name, token_user, container))

    def whoami(self, token_user: str) -> str:
        """The name of the user the token belongs to."""
        return self._run(self._async.whoami(token_user))

    def usage(self, token_user: str) -> UserUsage:
        """What your objects take (bytes, objects) and your quota (0: unlimited)."""
        return self._run(self._async.usage(token_user))

    def list_users(self, token_user: str) -> builtins.list[UserInfo]:
        """Every user with its usage and quota (admin token needed)."""
        return self._run(self._async.list_users(token_user))

    def set_quota(self, name: str, token_user: str, bytes: int | None = None, objects: int | None = None) -> UserInfo:
        """Limit what user ``name`` may store (admin token needed); 0 or None: unlimited.

        Raises:
            PermissionDenied: the token is not an admin's.
            NotFound: there is no such user.
            InvalidArgument: a limit is negative.
        """
        return self._run(self._async.set_quota(name, token_user, bytes, objects))

    def remove_user(self, name: str, token_user: str, purge: bool = False) -> UserRemoval:
        """Remove a user, revoking all its tokens and the grants made to it at once (admin token needed).

        Its catalogs and objects stay (a user created again under the name gets
        them back) unless ``purge``, which deletes them all; ``purge`` also
        clears what a user removed earlier left behind.
        """
        return self._run(self._async.remove_user(name, token_user, purge))

    def create_token(self, token_user: str, user: str | None = None) -> tuple[str, TokenInfo]:
        """A new token for yourself (or, with an admin token, for ``user``): ``(token, info)``."""
        return self._run(self._async.create_token(token_user, user))

    def create_s3_key(self, token_user: str, user: str | None = None) -> tuple[str, str]:
        """A new S3 access key ``(access_key_id, secret_access_key)`` for yourself (or, as admin, ``user``)."""
        return self._run(self._async.create_s3_key(token_user, user))

    def revoke_s3_key(self, access_key_id: str, token_user: str) -> None:
        """Revoke an S3 access key (yours, or anyone's with an admin token)."""
        self._run(self._async.revoke_s3_key(access_key_id, token_user))

    def list_tokens(self, token_user: str, user: str | None = None) -> builtins.list[TokenInfo]:
        """Ids of your tokens (or, with an admin token, of ``user``'s)."""
        return self._run(self._async.list_tokens(token_user, user))

    def create_catalog(
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
        return self._run(self._async.create_catalog(catalog, token_user, k, m, ttl))

    def list_catalogs(self, token_user: str) -> builtins.list[CatalogInfo]:
        """Your catalogs, then those shared with you (``owner/name`` reads them)."""
        return self._run(self._async.list_catalogs(token_user))

    def describe_catalog(self, catalog: str, token_user: str) -> CatalogInfo:
        """A catalog with its object count, bytes and readers."""
        return self._run(self._async.describe_catalog(catalog, token_user))

    def delete_catalog(self, catalog: str, token_user: str, force: bool = False) -> int:
        """Delete one of your catalogs; one that holds objects needs ``force`` (evicts them)."""
        return self._run(self._async.delete_catalog(catalog, token_user, force))

    def share(self, catalog: str, with_user: str, token_user: str) -> None:
        """Let ``with_user`` read, list and subscribe to your ``catalog`` (never evict or put)."""
        self._run(self._async.share(catalog, with_user, token_user))

    def unshare(self, catalog: str, with_user: str, token_user: str) -> bool:
        """Take ``with_user``'s access away at once; return whether they had it."""
        return self._run(self._async.unshare(catalog, with_user, token_user))

    def subscribe(
        self, catalog: str, token_user: str, start_revision: int = 0, idle_timeout: float | None = None
    ) -> Generator[Event, None, None]:
        """Events of a catalog as they happen (see :meth:`AsyncClient.subscribe`); close() the iterator to stop."""
        events = self._async.subscribe(catalog, token_user, start_revision, idle_timeout)

        async def next_event() -> Event:
            return await anext(events)

        try:
            while True:
                try:
                    yield self._run(next_event())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(events.aclose())

    def status(self, token_user: str) -> FabricStatus:
        """The fabric at a glance: gateways, etcd members, containers up and down, totals, repair."""
        return self._run(self._async.status(token_user))

    def drain_container(
        self,
        container_id: str,
        token_user: str,
        *,
        bandwidth: int = 0,
        wait: bool = True,
        progress: Callable[[MoveStatus], None] | None = None,
        poll: float = 1.0,
    ) -> MoveStatus:
        """Drain a container (admin); see :meth:`AsyncClient.drain_container`."""
        return self._run(
            self._async.drain_container(
                container_id, token_user, bandwidth=bandwidth, wait=wait, progress=progress, poll=poll
            )
        )

    def stop_drain(self, container_id: str, token_user: str) -> MoveStatus:
        """End a container's drain (admin): it takes new chunks again."""
        return self._run(self._async.stop_drain(container_id, token_user))

    def remove_container(self, container_id: str, token_user: str, force: bool = False) -> int:
        """Forget a stopped, drained container (admin); see :meth:`AsyncClient.remove_container`."""
        return self._run(self._async.remove_container(container_id, token_user, force))

    def rebalance(
        self,
        token_user: str,
        *,
        bandwidth: int = 0,
        wait: bool = True,
        progress: Callable[[MoveStatus], None] | None = None,
        poll: float = 1.0,
    ) -> MoveStatus:
        """Even out used space over the containers (admin); see :meth:`AsyncClient.rebalance`."""
        job = self._async.rebalance(token_user, bandwidth=bandwidth, wait=wait, progress=progress, poll=poll)
        return self._run(job)

    def stop_rebalance(self, token_user: str) -> MoveStatus:
        """Stop a rebalance (admin)."""
        return self._run(self._async.stop_rebalance(token_user))

    def rotate_ticket_key(self, token_user: str, grace_seconds: int = 0) -> str:
        """Make the gateways sign chunk tickets with a new key (admin); return its id."""
        return self._run(self._async.rotate_ticket_key(token_user, grace_seconds))

    def revoke_token(self, token_id: str, token_user: str) -> None:
        """Revoke a token by id; it stops working at once (on other gateways, within milliseconds)."""
        self._run(self._async.revoke_token(token_id, token_user))
