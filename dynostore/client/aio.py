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
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from dynostore.client.pipeline import ObjectInfo, Pipeline, PutItem, Reservation, SegmentSource
from dynostore.client.placement import PlacementPolicy
from dynostore.client.progress import ProgressArg, progress_callback
from dynostore.errors import InvalidArgument
from dynostore.rpc.tuning import tune_malloc

BytesLike = bytes | bytearray | memoryview


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
        gateway: str,
        *,
        placement: PlacementPolicy | None = None,
        timeout: float = 30.0,
        fragment_timeout: float = 20.0,
        retries: int = 3,
        k: int = 0,
        m: int = 0,
    ) -> None:
        """Prepare a client of the gateway at ``gateway`` (``host:port``); connects lazily.

        Args:
            gateway: address of a DynoStore gateway.
            placement: chooses containers for chunks (default: SpreadPlacement).
            timeout: seconds allowed for each control call and each chunk batch.
            fragment_timeout: seconds a container may stall a chunk stream before it
                counts as failed (reads then use parity; puts record the chunk missing).
            retries: times a control call is retried while the gateway is unavailable.
            k: data fragments per segment for puts (0: the gateway's default).
            m: parity fragments per segment for puts (used when ``k`` is set).

        Raises:
            InvalidArgument: the address or the policy is malformed.
        """
        if not isinstance(gateway, str) or not gateway:
            raise InvalidArgument("The gateway address must be a 'host:port' string.")
        tune_malloc()
        self.gateway = gateway
        self.k, self.m = k, m
        self._pipeline = Pipeline(
            gateway, placement=placement, timeout=timeout, fragment_timeout=fragment_timeout, retries=retries
        )

    async def close(self) -> None:
        """Close the client's channels."""
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
    ) -> str:
        """Store ``data`` in ``catalog`` and return the new object's key.

        ``planned`` gives the key to use, reserved earlier with :meth:`plan_keys`.

        Raises:
            InvalidArgument: ``data`` is not bytes-like, or a name is malformed.
            Unauthenticated: the token is not valid.
            Unavailable: too few containers could store a chunk.
            AlreadyExists: the planned key holds an object already.
        """
        segments, size = bytes_segments(data)
        (key,) = await self._pipeline.put(
            [PutItem(segments, size, name or "")],
            token=token_user,
            catalog=catalog,
            k=self.k,
            m=self.m,
            planned=[planned] if planned else None,
        )
        return key

    async def plan_keys(self, count: int, token_user: str) -> list[Reservation]:
        """Reserve keys for objects to put later (each valid for 6 hours, for this user only)."""
        return await self._pipeline.plan_keys(count, token_user, self.k, self.m)

    async def put_batch(
        self, datas: Sequence[BytesLike], token_user: str, catalog: str, names: Sequence[str] | None = None
    ) -> list[str]:
        """Store many objects with one round of control calls per group of 256; keys in order.

        Raises:
            InvalidArgument: an item is not bytes-like, or ``names`` has another length.
        """
        if names is not None and len(names) != len(datas):
            raise InvalidArgument("put_batch needs one name per object.")
        items = []
        for i, data in enumerate(datas):
            segments, size = bytes_segments(data)
            items.append(PutItem(segments, size, names[i] if names else ""))
        return await self._pipeline.put(items, token=token_user, catalog=catalog, k=self.k, m=self.m)

    async def get(self, key: str, token_user: str) -> bytes:
        """Return the bytes of object ``key``.

        Raises:
            NotFound: no object has this key (a subclass of KeyError).
            PermissionDenied: the object belongs to another user.
            DataLoss: too many chunks are lost or corrupt to rebuild it.
        """
        return b"".join([s async for s in self._pipeline.get(key, token=token_user)])

    async def get_batch(self, keys: Sequence[str], token_user: str) -> list[bytes | None]:
        """Bytes of many objects in order, None for keys with no object; few control calls."""
        return await self._pipeline.get_many(keys, token_user)

    async def exists(self, key: str, token_user: str) -> bool:
        """Whether ``key`` names an object readable with this token."""
        return await self._pipeline.exists(key, token_user)

    async def evict(self, key: str, token_user: str) -> None:
        """Remove object ``key``; removing a missing object is not an error."""
        await self._pipeline.evict(key, token_user)

    async def list(self, catalog: str, token_user: str) -> list[ObjectInfo]:
        """The objects of ``catalog`` (``.key``, ``.name``, ``.size``...)."""
        return await self._pipeline.list(catalog, token_user)

    async def size(self, key: str, token_user: str) -> int:
        """Size in bytes of object ``key``."""
        return (await self._pipeline.locate_one(key, token_user)).object.size

    async def put_file(
        self,
        path: str | os.PathLike[str],
        token_user: str,
        catalog: str,
        name: str | None = None,
        progress: ProgressArg = None,
    ) -> str:
        """Store a file, streaming it segment by segment, and return its key.

        ``progress``: a callable given the bytes sent after each segment, or
        True for a progress bar on stderr.
        """
        path = Path(path)
        size = path.stat().st_size
        item = PutItem(file_segments(path), size, name if name is not None else path.name)
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

    async def create_user(self, name: str, token_user: str) -> str:
        """Create user ``name`` (needs an admin token) and return its token."""
        return await self._pipeline.create_user(name, token_user)
