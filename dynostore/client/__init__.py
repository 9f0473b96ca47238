"""The DynoStore Python SDK.

```python
from dynostore.client import Client

with Client("127.0.0.1:8095") as client:
    key = client.put(data=b"Hello, World!", token_user=token, catalog="catalog-0")
    assert client.get(key=key, token_user=token) == b"Hello, World!"
```
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from dynostore.client.pipeline import ObjectInfo, Pipeline, Progress
from dynostore.client.placement import PlacementPolicy, SpreadPlacement
from dynostore.errors import InvalidArgument
from dynostore.rpc.tuning import tune_malloc

T = TypeVar("T")

__all__ = ["Client", "ObjectInfo", "PlacementPolicy", "SpreadPlacement"]


class Client:
    """Synchronous, thread-safe client of a DynoStore gateway.

    All calls run on one private event loop thread, so a ``Client`` may be
    shared by many threads. Use it as a context manager, or call
    :meth:`close` when done.
    """

    def __init__(
        self,
        gateway: str,
        *,
        placement: PlacementPolicy | None = None,
        timeout: float = 30.0,
        k: int = 0,
        m: int = 0,
    ) -> None:
        """Connect to the gateway at ``gateway`` (``host:port``).

        Args:
            gateway: address of a DynoStore gateway.
            placement: chooses containers for chunks (default: SpreadPlacement).
            timeout: seconds allowed for each control call.
            k: data fragments per segment for puts (0: the gateway's default).
            m: parity fragments per segment for puts (used when ``k`` is set).
        """
        if not isinstance(gateway, str) or not gateway:
            raise InvalidArgument("The gateway address must be a 'host:port' string.")
        tune_malloc()
        self.gateway = gateway
        self.k, self.m = k, m
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dynostore-client", daemon=True)
        self._thread.start()
        self._pipeline = Pipeline(gateway, placement=placement, timeout=timeout)
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("This Client is closed.")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close channels and stop the client's event loop thread."""
        if self._closed:
            return
        self._run(self._pipeline.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        """Return the client itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the client."""
        self.close()

    # objects ----------------------------------------------------------------

    def put(
        self,
        data: bytes | bytearray | memoryview,
        token_user: str,
        catalog: str,
        name: str | None = None,
    ) -> str:
        """Store ``data`` in ``catalog`` and return the new object's key.

        Raises:
            InvalidArgument: ``data`` is not bytes-like, or a name is malformed.
            Unauthenticated: the token is not valid.
            Unavailable: too few containers could store a chunk.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgument(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}.")
        view = memoryview(data).cast("B")

        async def segments(segment_size: int) -> AsyncIterator[bytes]:
            for start in range(0, max(len(view), 1), segment_size):
                yield bytes(view[start : start + segment_size])

        key = self._run(
            self._pipeline.put(
                segments, len(view), token=token_user, catalog=catalog, name=name or "", k=self.k, m=self.m
            )
        )
        return key

    def get(self, key: str, token_user: str) -> bytes:
        """Return the bytes of object ``key``.

        Raises:
            NotFound: no object has this key (a subclass of KeyError).
            DataLoss: too many chunks are lost or corrupt to rebuild it.
        """

        async def collect() -> bytes:
            return b"".join([s async for s in self._pipeline.get(key, token=token_user)])

        return self._run(collect())

    def exists(self, key: str, token_user: str) -> bool:
        """Whether ``key`` names an object readable with this token."""
        return self._run(self._pipeline.exists(key, token_user))

    def evict(self, key: str, token_user: str) -> None:
        """Remove object ``key``; removing a missing object is not an error."""
        self._run(self._pipeline.evict(key, token_user))

    def list(self, catalog: str, token_user: str) -> Iterator[ObjectInfo]:
        """Yield the objects of ``catalog`` (``.key``, ``.name``, ``.size``...)."""
        yield from self._run(self._pipeline.list(catalog, token_user))

    def put_file(
        self,
        path: str | os.PathLike[str],
        token_user: str,
        catalog: str,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Store a file, streaming it segment by segment, and return its key.

        ``progress`` is called with the number of bytes sent after each segment.
        """
        path = Path(path)
        size = path.stat().st_size

        async def segments(segment_size: int) -> AsyncIterator[bytes]:
            with open(path, "rb") as f:
                while True:
                    segment = await asyncio.to_thread(f.read, segment_size)
                    yield segment
                    if len(segment) < segment_size:
                        return

        return self._run(
            self._pipeline.put(
                segments,
                size,
                token=token_user,
                catalog=catalog,
                name=name if name is not None else path.name,
                k=self.k,
                m=self.m,
                progress=progress,
            )
        )

    def get_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        token_user: str,
        progress: Progress | None = None,
    ) -> None:
        """Write object ``key`` to ``path``, streaming; the file appears only when complete."""
        path = Path(path)
        temp = path.with_name(f".{path.name}.dynostore-partial")

        async def write() -> None:
            with open(temp, "wb") as f:
                async for segment in self._pipeline.get(key, token=token_user, progress=progress):
                    await asyncio.to_thread(f.write, segment)
            os.replace(temp, path)

        try:
            self._run(write())
        finally:
            temp.unlink(missing_ok=True)

    def size(self, key: str, token_user: str) -> int:
        """Size in bytes of object ``key``."""
        return self._run(self._pipeline.locate(key, token_user)).object.size

    # users ------------------------------------------------------------------

    def create_user(self, name: str, token_user: str) -> str:
        """Create user ``name`` (needs an admin token) and return its token."""
        return self._run(self._pipeline.create_user(name, token_user))
