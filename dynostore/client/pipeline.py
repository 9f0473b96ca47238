"""The put/get pipeline: erasure-code, place, move chunks in parallel, verify.

This is the one implementation of the data path; :class:`AsyncClient`, the
synchronous :class:`Client`, the gateway's relay and repair sweeps are thin
layers over it. It is split by stage, one module each: :mod:`.connection`
(channels and control calls), :mod:`.upload` (put), :mod:`.download` (get),
:mod:`.repair` (rebuild); :class:`Pipeline` joins them. Objects of one
segment travel as whole chunks, batched per container; larger objects stream
each chunk segment by segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from dynostore import validation
from dynostore._proto import common_pb2, gateway_pb2
from dynostore.client.connection import (
    GROUP,
    RELAY_MESSAGE,
    RELAY_MIN_RATE,
    Progress,
    SegmentSource,
    _RetriedIntoError,
)
from dynostore.client.download import Downloader, _inline_bytes
from dynostore.client.repair import repair as repair_object
from dynostore.client.upload import PLAN_POOL_SECONDS, PLAN_POOL_SIZE, PutItem, Reservation, Uploader
from dynostore.errors import DynoStoreError, error_for_code
from dynostore.rpc import auth_metadata, from_rpc_error


@dataclass(frozen=True)
class ObjectInfo:
    """What :meth:`Client.list` yields for each object."""

    key: str
    name: str
    catalog: str
    owner: str
    size: int
    created: float
    # When its lifetime ends (seconds since the epoch; 0: never).
    expires: float = 0.0
    # The key this version's chunks are under, if a put replaced the object by key ("": ``key``).
    version: str = ""


def object_info(message: common_pb2.ObjectInfo) -> ObjectInfo:
    """Convert the wire message into the public type."""
    return ObjectInfo(
        key=message.key,
        name=message.name,
        catalog=message.catalog,
        owner=message.owner,
        size=message.size,
        created=message.created,
        expires=message.expires,
        version=message.version,
    )


class Pipeline(Uploader, Downloader):
    """Async data path against one gateway; owns channels to the gateway and containers.

    Arguments as for :class:`~dynostore.client.connection.GatewayConnection`.
    """

    # repair -----------------------------------------------------------------

    async def repair(self, key: str, token: str, progress: Progress | None = None, *, verify: bool = False) -> int:
        """Rebuild the chunks of an object that are missing, on dead containers or (``verify``) damaged.

        See :func:`dynostore.client.repair.repair`.
        """
        return await repair_object(self, key, token, progress, verify=verify)

    # other calls --------------------------------------------------------------

    async def exists(self, key: str, token: str) -> bool:
        """Whether ``key`` names an object the token may read."""
        validation.key(key)
        validation.token(token)
        reply = await self.call(self._gateway().Exists, gateway_pb2.ExistsRequest(key=key), token)
        return reply.exists

    async def evict(self, key: str, token: str) -> bool:
        """Remove an object; return whether it existed."""
        validation.key(key)
        validation.token(token)
        reply = await self.call(self._gateway().Evict, gateway_pb2.EvictRequest(key=key), token)
        return reply.existed

    async def evict_many(self, keys: Sequence[str], token: str) -> list[bool | DynoStoreError]:
        """Remove several objects with one gateway call per ``GROUP``; for each, whether it existed, or its error."""
        for key in keys:
            validation.key(key)
        validation.token(token)
        outcomes: list[bool | DynoStoreError] = []
        for start in range(0, len(keys), GROUP):
            request = gateway_pb2.EvictRequest(keys=keys[start : start + GROUP])
            reply = await self.call(self._gateway().Evict, request, token)
            outcomes += [error_for_code(r.code, r.message) if r.code else r.existed for r in reply.results]
        return outcomes

    async def list(self, catalog: str, token: str, name: str = "") -> list[ObjectInfo]:
        """Objects of a catalog (``name``, or ``owner/name`` for one shared with you); only those called ``name``."""
        validation.catalog_ref(catalog, "")
        validation.token(token)
        validation.object_name(name)
        call = self._gateway().List(
            gateway_pb2.ListRequest(catalog=catalog, name=name), metadata=auth_metadata(token), timeout=self.timeout
        )
        try:
            return [object_info(m) async for m in call]
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def create_user(self, name: str, token: str, container: bool = False) -> str:
        """Create a user (admin token needed) and return its token; ``container``: a container credential."""
        validation.user_name(name)
        validation.token(token)
        request = gateway_pb2.CreateUserRequest(name=name, container=container)
        reply = await self.call(self._gateway().CreateUser, request, token)
        return reply.token


__all__ = [
    "GROUP",
    "PLAN_POOL_SECONDS",
    "PLAN_POOL_SIZE",
    "RELAY_MESSAGE",
    "RELAY_MIN_RATE",
    "ObjectInfo",
    "Pipeline",
    "Progress",
    "PutItem",
    "Reservation",
    "SegmentSource",
    "_RetriedIntoError",
    "_inline_bytes",
    "object_info",
]
