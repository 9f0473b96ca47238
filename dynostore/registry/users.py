"""Users, their tokens, quotas and usage."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict
from typing import Any

from dynostore.errors import AlreadyExists, FailedPrecondition, NotFound, Unauthenticated, Unavailable
from dynostore.registry import keys
from dynostore.registry.base import CAS_ATTEMPTS, MAX_TXN_OPS, RegistryBase, etcd_errors
from dynostore.registry.records import TokenInfo, User, dumps
from dynostore.registry.usage import Usage

# A token's public id: this many hex digits of its SHA-256.
TOKEN_ID_CHARS = 16


def hash_token(token: str) -> str:
    """The SHA-256 under which a token is stored; tokens themselves never are."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return "dyn_" + secrets.token_urlsafe(32)


class UserCalls(RegistryBase):
    """Users and tokens: create, authenticate, revoke, remove; quotas and usage."""

    def _put_token(self, token: str, user: str) -> tuple[Any, TokenInfo]:
        token_hash = hash_token(token)
        info = TokenInfo(id=token_hash[:TOKEN_ID_CHARS], user=user, created=time.time())
        return self._tx.put(keys.token(token_hash), dumps(asdict(info))), info

    @etcd_errors
    async def ensure_admin(self, name: str, token: str) -> None:
        """Create admin ``name`` with ``token`` unless that token is known already."""
        user = User(name=name, admin=True, created=time.time())
        put_token, _ = self._put_token(token, name)
        await self.etcd.transaction(
            compare=[self._tx.create(keys.token(hash_token(token))) == 0],
            success=[self._tx.put(keys.user(name), dumps(asdict(user))), put_token],
            failure=[],
        )

    @etcd_errors
    async def create_user(self, name: str, admin: bool = False, container: bool = False) -> str:
        """Create a user and return its first token (shown once, stored hashed).

        Raises:
            AlreadyExists: a user of that name exists.
        """
        token = new_token()
        user = User(name=name, admin=admin, created=time.time(), container=container)
        put_token, _ = self._put_token(token, name)
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.user(name)) == 0],
            success=[self._tx.put(keys.user(name), dumps(asdict(user))), put_token],
            failure=[],
        )
        if not ok:
            raise AlreadyExists(f"User {name!r} exists already.")
        return token

    @etcd_errors
    async def list_users(self) -> list[User]:
        """Every user, by name."""
        return [User(**json.loads(kv.value)) for kv in await self.etcd.get_prefix(keys.user(""))]

    @etcd_errors
    async def get_user(self, name: str) -> User:
        """One user.

        Raises:
            NotFound: there is no such user.
        """
        found = await self.etcd.get(keys.user(name))
        if found is None:
            raise NotFound(f"There is no user {name!r}.")
        return User(**json.loads(found.value))

    @etcd_errors
    async def set_quota(self, name: str, quota_bytes: int, quota_objects: int) -> User:
        """Set a user's quota (0: unlimited) and return the user.

        Raises:
            NotFound: there is no such user.
            FailedPrecondition: the user is a container credential (it stores nothing).
        """
        for _ in range(CAS_ATTEMPTS):
            found = await self.etcd.get(keys.user(name))
            if found is None:
                raise NotFound(f"There is no user {name!r}.")
            user = User(**json.loads(found.value))
            if user.container:
                raise FailedPrecondition(f"{name!r} is a container credential; it stores no objects to limit.")
            changed = User(**{**asdict(user), "quota_bytes": quota_bytes, "quota_objects": quota_objects})
            ok, _ = await self.etcd.transaction(
                compare=[self._tx.mod(keys.user(name)) == found.mod_revision],
                success=[self._tx.put(keys.user(name), dumps(asdict(changed)))],
                failure=[],
            )
            if ok:
                return changed
        raise Unavailable(f"User {name!r} kept changing; set the quota again.")

    async def usage(self, name: str) -> Usage:
        """What the objects of user ``name`` take now (expired ones count until they are evicted)."""
        (usage,) = await self.usages([name])
        return usage

    @etcd_errors
    async def usages(self, names: list[str]) -> list[Usage]:
        """:meth:`usage` of each user, in order, read in few round trips."""
        for start in range(0, len(names), MAX_TXN_OPS):
            await self._read_again([keys.usage(n) for n in names[start : start + MAX_TXN_OPS]])
        return [self._usage_seen(n) for n in names]

    async def _tokens(self, prefix: str = "") -> list[tuple[bytes, TokenInfo]]:
        found = await self.etcd.get_prefix(keys.token(prefix))
        return [(kv.key, TokenInfo(**json.loads(kv.value))) for kv in found]

    @etcd_errors
    async def remove_user(self, name: str) -> int:
        """Remove a user, its tokens, its containers' ids and the grants made to it (at once if etcd takes it).

        Returns how many tokens went. The catalogs the user owns stay.

        Raises:
            NotFound: there is no such user.
            FailedPrecondition: the user is an admin.
        """
        found = await self.etcd.get(keys.user(name))
        if found is None:
            raise NotFound(f"There is no user {name!r}.")
        if User(**json.loads(found.value)).admin:
            raise FailedPrecondition(f"{name!r} is an admin; admins cannot be removed.")
        tokens = [key for key, info in await self._tokens() if info.user == name]
        owners = await self.etcd.get_prefix(keys.container_owners_prefix())
        owned = [kv.key for kv in owners if kv.value == name.encode()]
        # A user created again under this name must not inherit what was shared with this one.
        grants = []
        for owner, catalog in await self._shared_with(name):
            grants += [keys.shared_with(name, owner, catalog), keys.share(owner, catalog, name)]
        # One transaction if etcd takes it; else what does not fit goes first, the
        # tokens last, so that they die with the user record as far as they can.
        doomed = [self._tx.delete(k) for k in grants + owned + tokens]
        first, last = doomed[: -(MAX_TXN_OPS - 1)], doomed[-(MAX_TXN_OPS - 1) :]
        for start in range(0, len(first), MAX_TXN_OPS):
            await self.etcd.transaction(compare=[], success=first[start : start + MAX_TXN_OPS], failure=[])
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.mod(keys.user(name)) == found.mod_revision],
            success=[self._tx.delete(keys.user(name)), *last],
            failure=[],
        )
        if not ok:
            raise FailedPrecondition(f"User {name!r} changed during removal; try again.")
        return len(tokens)

    @etcd_errors
    async def create_token(self, user: str) -> tuple[str, TokenInfo]:
        """A new token of ``user``: ``(token, info)``; the token is shown only now.

        Raises:
            NotFound: there is no such user.
        """
        token = new_token()
        put_token, info = self._put_token(token, user)
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(keys.user(user)) > 0], success=[put_token], failure=[]
        )
        if not ok:
            raise NotFound(f"There is no user {user!r}.")
        return token, info

    @etcd_errors
    async def list_tokens(self, user: str) -> list[TokenInfo]:
        """Ids and creation times of a user's tokens."""
        return [info for _, info in await self._tokens() if info.user == user]

    @etcd_errors
    async def revoke_token(self, token_id: str, requester: User) -> None:
        """Revoke the token with this id; it stops working on every gateway at once.

        Raises:
            NotFound: no token of the requester (or of anyone, for an admin) has this id.
        """
        matches = [(k, i) for k, i in await self._tokens(token_id) if requester.admin or i.user == requester.name]
        if len(matches) != 1:
            raise NotFound(f"No token of yours has the id {token_id!r}.")
        deleted = await self.etcd.delete(matches[0][0])
        if deleted is not None:  # this gateway refuses it at once, not only once its watch reports the delete
            self._auth_cache.changed(None, deleted.header.revision)

    @etcd_errors
    async def authenticate(self, token: str) -> User:
        """The user a token belongs to (cached while :meth:`watch` runs).

        Raises:
            Unauthenticated: the token is unknown or its user is gone.
        """
        token_hash = hash_token(token)
        cached = self._auth_cache.get(token_hash)
        if cached is not None:
            return cached
        owner = await self.etcd.get(keys.token(token_hash))
        if owner is None:
            raise Unauthenticated("The token is not valid (unknown or revoked); ask an admin for a new one.")
        record = await self.etcd.get(keys.user(TokenInfo(**json.loads(owner.value)).user))
        if record is None:
            raise Unauthenticated("The token's user no longer exists.")
        user = User(**json.loads(record.value))
        self._auth_cache.put(token_hash, user, owner.header.revision)
        return user
