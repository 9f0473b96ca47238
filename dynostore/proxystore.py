"""A ProxyStore connector for DynoStore (the ``Connector`` protocol of proxystore 1.1).

```python
from proxystore.store import Store
from dynostore.proxystore import DynoConnector

connector = DynoConnector(apigateway="127.0.0.1:8095", token_user=token, catalog="proxystore")
with Store("my-store", connector) as store:
    proxy = store.proxy(3)
    assert proxy**2 == 9
```

The connector wraps the SDK's :class:`~dynostore.client.Client`; batch calls
use the SDK's batch path (one round of control calls per 256 objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, NamedTuple

from dynostore import validation
from dynostore.client import Client, Reservation
from dynostore.client.aio import BytesLike


class DynoKey(NamedTuple):
    """Key of an object in DynoStore.

    Attributes:
        key: the object key (32 hex digits).
        plan_ticket: set only on keys made by :meth:`DynoConnector.new_key`
            and not yet given an object; lets :meth:`DynoConnector.set` commit it.
        chunk_ticket: likewise, lets :meth:`DynoConnector.set` write its chunks.
    """

    key: str
    plan_ticket: str = ""
    chunk_ticket: str = ""


class DynoConnector:
    """ProxyStore connector that stores objects in a DynoStore catalog.

    Objects are durable once put (erasure-coded over the fabric's
    containers); :meth:`close` closes connections and deletes nothing.
    """

    def __init__(
        self,
        apigateway: str | Sequence[str],
        token_user: str,
        catalog: str,
        *,
        k: int = 0,
        m: int = 0,
        timeout: float = 30.0,
        tls_ca: str | None = None,
        relay: bool = False,
        ttl: float | None = None,
    ) -> None:
        """Connect to the gateway at ``apigateway`` as the owner of ``token_user``.

        Args:
            apigateway: gateway address, ``host:port``, or several (a list, or
                comma-separated), as for :class:`~dynostore.client.Client`.
            token_user: the user's token.
            catalog: catalog that receives the objects.
            k: data fragments per segment (0: the catalog's policy, else the gateway's default).
            m: parity fragments per segment (used when ``k`` is set).
            timeout: seconds allowed for each control call.
            tls_ca: CA certificate (PEM file) of a fabric that runs TLS.
            relay: move the bytes through the gateway (for workers that cannot reach the containers).
            ttl: seconds each object lives (None: the catalog's default TTL, else forever); an
                expired object reads as missing and the gateway's sweep evicts it.

        Raises:
            InvalidArgument: ``ttl`` is negative or not a number.
        """
        self._client: Client | None = Client(apigateway, timeout=timeout, k=k, m=m, tls_ca=tls_ca, relay=relay)
        # Comma-separated, so the config stays a plain string.
        self.apigateway = self._client.gateway
        self.token_user = token_user
        self.catalog = catalog
        self.k, self.m = k, m
        self.timeout = timeout
        self.tls_ca = tls_ca
        self.relay = relay
        self.ttl = None if ttl is None else validation.ttl(ttl)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(apigateway={self.apigateway!r}, catalog={self.catalog!r})"

    def __enter__(self) -> DynoConnector:
        """Return the connector itself."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the connector."""
        self.close()

    @property
    def client(self) -> Client:
        """The SDK client underneath.

        Raises:
            RuntimeError: the connector is closed.
        """
        if self._client is None:
            raise RuntimeError("This DynoConnector is closed.")
        return self._client

    def close(self) -> None:
        """Close connections (idempotent); stored objects stay."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, enough to rebuild this connector elsewhere."""
        return {
            "apigateway": self.apigateway,
            "token_user": self.token_user,
            "catalog": self.catalog,
            "k": self.k,
            "m": self.m,
            "timeout": self.timeout,
            "tls_ca": self.tls_ca,
            "relay": self.relay,
            "ttl": self.ttl,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DynoConnector:
        """A connector built from :meth:`config`'s output."""
        return cls(**config)

    def put(self, obj: BytesLike) -> DynoKey:
        """Store serialized bytes and return their key."""
        return DynoKey(self.client.put(data=obj, token_user=self.token_user, catalog=self.catalog, ttl=self.ttl))

    def put_batch(self, objs: Sequence[BytesLike]) -> list[DynoKey]:
        """Store many objects with one round of control calls; keys in order."""
        keys = self.client.put_batch(list(objs), token_user=self.token_user, catalog=self.catalog, ttl=self.ttl)
        return [DynoKey(k) for k in keys]

    def get(self, key: DynoKey) -> bytes | None:
        """The bytes stored under ``key``, or None if there are none."""
        try:
            return self.client.get(key=key.key, token_user=self.token_user)
        except KeyError:
            return None

    def get_batch(self, keys: Sequence[DynoKey]) -> list[BytesLike | None]:
        """Bytes of many keys in order, None where a key has no object."""
        found: list[BytesLike | None] = []
        found += self.client.get_batch([k.key for k in keys], token_user=self.token_user)
        return found

    def exists(self, key: DynoKey) -> bool:
        """Whether an object is stored under ``key``."""
        return self.client.exists(key=key.key, token_user=self.token_user)

    def evict(self, key: DynoKey) -> None:
        """Remove the object under ``key`` (nothing happens if there is none).

        ProxyStore evicts an owned proxy's object when the proxy is collected; the
        garbage collector may do that on the client's own thread, where no call can
        wait for its answer: the eviction then goes on in the background.
        """
        if self.client._on_loop_thread():
            self.client._evict_soon(key.key, self.token_user)
            return
        self.client.evict(key=key.key, token_user=self.token_user)

    def new_key(self, obj: bytes | None = None) -> DynoKey:
        """A key to give an object later with :meth:`set` (within 6 hours)."""
        (planned,) = self.client.plan_keys(1, token_user=self.token_user)
        return DynoKey(planned.key, planned.plan_ticket, planned.chunk_ticket)

    def set(self, key: DynoKey, obj: BytesLike) -> None:
        """Store ``obj`` under ``key``, replacing what it holds (as ProxyStore's own connectors do).

        ``key`` comes from :meth:`new_key` (its first set gives it an object)
        or from :meth:`put`; readers see the old bytes or the new, never a mix.

        Raises:
            NotFound: ``key`` came from :meth:`put` and its object was evicted.
        """
        reservation = Reservation(key.key, key.plan_ticket, key.chunk_ticket) if key.plan_ticket else None
        self.client.put(
            data=obj,
            token_user=self.token_user,
            catalog=self.catalog,
            planned=reservation,
            ttl=self.ttl,
            replace=True,
            key=key.key,
        )
