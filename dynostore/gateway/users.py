"""The gateway's user and token RPCs."""

from __future__ import annotations

import logging

import grpc

from dynostore import validation
from dynostore._proto import gateway_pb2
from dynostore.errors import InvalidArgument, NotFound, PermissionDenied
from dynostore.gateway.base import (
    TOKEN_ID_PATTERN,
    GatewayCalls,
    _timestamp,
)
from dynostore.registry import Usage, User
from dynostore.registry.registry import TokenInfo

log = logging.getLogger(__name__)


class UserCalls(GatewayCalls):
    """The gateway's user and token RPCs."""

    async def CreateUser(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateUserResponse:
        await self._admin(context)
        name = validation.user_name(request.name)
        token = await self.registry.create_user(name, container=request.container)
        return gateway_pb2.CreateUserResponse(name=name, token=token)

    async def WhoAmI(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.WhoAmIResponse:
        user = await self._caller(context)
        usage = None if user.container else _usage(user, await self.registry.usage(user.name))
        return gateway_pb2.WhoAmIResponse(name=user.name, admin=user.admin, container=user.container, usage=usage)

    async def ListUsers(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListUsersResponse:
        await self._admin(context)
        users = await self.registry.list_users()
        usages = await self.registry.usages([u.name for u in users])
        return gateway_pb2.ListUsersResponse(
            users=[_user_info(u, None if u.container else usage) for u, usage in zip(users, usages, strict=True)]
        )

    async def SetQuota(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.SetQuotaRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.UserInfo:
        await self._admin(context)
        name = validation.user_name(request.name)
        user = await self.registry.set_quota(name, request.bytes, request.objects)
        log.info("Quota of %s set to %d bytes, %d objects (0: unlimited).", name, request.bytes, request.objects)
        return _user_info(user, await self.registry.usage(name))

    async def RemoveUser(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RemoveUserRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RemoveUserResponse:
        await self._admin(context)
        name = validation.user_name(request.name)
        existed = True
        try:
            revoked = await self.registry.remove_user(name)
        except NotFound:
            if not request.purge:
                raise
            revoked, existed = 0, False  # removed before: purge what it left
        evicted = 0
        if request.purge:
            owned = [c["name"] for c in await self.registry.catalogs(name) if c["owner"] == name]
            if not existed and not owned:
                raise NotFound(f"There is no user {name!r}, and no catalog of that name is left.")
            for catalog in owned:
                evicted += await self._delete_catalog(name, catalog, force=True)
            log.info("Purged user %s: %d catalog(s), %d object(s) evicted.", name, len(owned), evicted)
        return gateway_pb2.RemoveUserResponse(tokens_revoked=revoked, objects_evicted=evicted)

    async def _token_owner(self, context: grpc.aio.ServicerContext, name: str) -> str:
        """The user whose tokens a call manages: the caller, or anyone for an admin."""
        user = await self._user(context)
        if not name or name == user.name:
            return user.name
        if not user.admin:
            raise PermissionDenied("Only an admin may manage another user's tokens.")
        return (await self.registry.get_user(validation.user_name(name))).name

    async def CreateToken(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CreateTokenResponse:
        owner = await self._token_owner(context, request.user)
        token, info = await self.registry.create_token(owner)
        return gateway_pb2.CreateTokenResponse(token=token, info=_token_info(info))

    async def ListTokens(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListTokensResponse:
        owner = await self._token_owner(context, request.user)
        return gateway_pb2.ListTokensResponse(tokens=[_token_info(i) for i in await self.registry.list_tokens(owner)])

    async def RevokeToken(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RevokeTokenResponse:
        user = await self._user(context)
        if not TOKEN_ID_PATTERN.fullmatch(request.id):
            raise InvalidArgument(f"{request.id[:40]!r} is not a token id (16 hex digits).")
        await self.registry.revoke_token(request.id, user)
        return gateway_pb2.RevokeTokenResponse()


def _usage(user: User, usage: Usage) -> gateway_pb2.Usage:
    return gateway_pb2.Usage(
        bytes=usage.bytes, objects=usage.objects, quota_bytes=user.quota_bytes, quota_objects=user.quota_objects
    )


def _user_info(user: User, usage: Usage | None) -> gateway_pb2.UserInfo:
    """A user with its quota and usage (``usage`` None: a container credential, which stores nothing)."""
    return gateway_pb2.UserInfo(
        name=user.name,
        admin=user.admin,
        created=user.created,
        created_at=_timestamp(user.created),
        container=user.container,
        usage=None if usage is None else _usage(user, usage),
    )


def _token_info(info: TokenInfo) -> gateway_pb2.TokenInfo:
    return gateway_pb2.TokenInfo(id=info.id, user=info.user, created=info.created, created_at=_timestamp(info.created))
