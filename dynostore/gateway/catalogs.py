"""The gateway's catalog RPCs: create, list, describe, delete, share, unshare, subscribe."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from dynostore import validation
from dynostore._proto import gateway_pb2
from dynostore.errors import InvalidArgument
from dynostore.gateway.base import (
    GatewayCalls,
    _timestamp,
)

log = logging.getLogger(__name__)


class CatalogCalls(GatewayCalls):
    """The gateway's catalog RPCs: create, list, describe, delete, share, unshare, subscribe."""

    async def CreateCatalog(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CatalogRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CatalogInfo:
        _, owner, name = await self._catalog(context, request.catalog, own=True)
        k, m = validation.ec_params(request.k, request.m) if request.k or request.m else (0, 0)
        await self.registry.create_catalog(owner, name, k, m, validation.ttl(request.ttl))
        return _catalog_info(await self.registry.describe_catalog(owner, name))

    async def ListCatalogs(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListCatalogsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListCatalogsResponse:
        user = await self._user(context)
        found = await self.registry.catalogs(user.name)
        return gateway_pb2.ListCatalogsResponse(catalogs=[_catalog_info(c) for c in found])

    async def DescribeCatalog(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CatalogRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CatalogInfo:
        _, owner, name = await self._catalog(context, request.catalog, own=False)
        return _catalog_info(await self.registry.describe_catalog(owner, name))

    async def DeleteCatalog(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.DeleteCatalogRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteCatalogResponse:
        _, owner, name = await self._catalog(context, request.catalog, own=True)
        return gateway_pb2.DeleteCatalogResponse(evicted=await self._delete_catalog(owner, name, request.force))

    async def _delete_catalog(self, owner: str, name: str, force: bool) -> int:
        """Delete a catalog (with ``force``, evicting its objects; their chunks go in the background); how many."""
        evicted = await self.registry.delete_catalog(owner, name, force)
        for record in evicted:
            self._in_background(self.delete_chunks(record))
        return len(evicted)

    async def Share(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ShareRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ShareResponse:
        _, owner, name = await self._catalog(context, request.catalog, own=True)
        reader = validation.user_name(request.with_user)
        if reader == owner:
            raise InvalidArgument("A catalog cannot be shared with its owner.")
        await self.registry.share(owner, name, reader)
        return gateway_pb2.ShareResponse(changed=True)

    async def Unshare(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ShareRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ShareResponse:
        _, owner, name = await self._catalog(context, request.catalog, own=True)
        changed = await self.registry.unshare(owner, name, validation.user_name(request.with_user))
        return gateway_pb2.ShareResponse(changed=changed)

    async def Subscribe(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.Event]:
        user, owner, name = await self._existing_catalog(context, request.catalog)
        if request.start_revision < 0:
            raise InvalidArgument("start_revision must not be negative.")
        async for event in self.registry.catalog_events(owner, name, request.start_revision):
            if event.kind == "unshare" and event.user == user.name and owner != user.name:
                return  # access gone: the stream ends
            yield gateway_pb2.Event(
                kind=event.kind,
                key=event.key,
                name=event.name,
                size=event.size,
                time=event.time,
                time_at=_timestamp(event.time),
                revision=event.revision,
                user=event.user,
                owner=owner,
                catalog=name,
                replaced=event.replaced,
            )


def _catalog_info(info: dict[str, Any]) -> gateway_pb2.CatalogInfo:
    return gateway_pb2.CatalogInfo(
        owner=info["owner"],
        name=info["name"],
        created=info["created"],
        created_at=_timestamp(info["created"]),
        objects=info.get("objects", 0),
        bytes=info.get("bytes", 0),
        shared_with=info.get("shared_with", []),
        k=info.get("k", 0),
        m=info.get("m", 0),
        ttl=info.get("ttl", 0.0),
    )
