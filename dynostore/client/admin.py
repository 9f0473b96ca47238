"""The SDK's calls about users, tokens and S3 keys, and about the fabric: status, drains, rebalancing, ticket keys.

:class:`AdminCalls` is one base of :class:`~dynostore.client.aio.AsyncClient`;
every call is one control call to the gateway (through ``_control``).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from typing import Any

from dynostore import validation
from dynostore._proto import gateway_pb2
from dynostore.client.pipeline import Pipeline
from dynostore.client.records import (
    TokenInfo,
    UserInfo,
    UserRemoval,
    UserUsage,
    _user_info,
    _user_usage,
)
from dynostore.client.status import FabricStatus, MoveStatus, fabric_status, move_status
from dynostore.errors import InvalidArgument, NotFound


class AdminCalls:
    """Users, tokens, S3 keys; the fabric's status, drains, rebalancing and ticket keys."""

    _pipeline: Pipeline

    async def _control(self, method: str, request: Any, token_user: str) -> Any:
        """Call ``method`` of the gateway with ``request`` and the token (AsyncClient's own)."""
        raise NotImplementedError

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

    # the fabric -------------------------------------------------------------

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
