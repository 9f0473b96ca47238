"""S3 access keys in etcd: which user an access key id acts for, with its secret sealed by the gateway.

```
/dynostore/v1/s3-keys/<access key id>   {"id", "user", "token_id", "created", "sealed"}
```

``sealed`` is what the gateway's :class:`~dynostore.gateway.s3keys.Sealer`
made of the secret access key and the key's own token (AES-GCM, base64): the
registry stores it and never sees either in clear.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dynostore.errors import AlreadyExists, NotFound
from dynostore.registry import keys
from dynostore.registry.base import etcd_errors

if TYPE_CHECKING:
    from dynostore.registry.etcd import EtcdClient


def s3_key(access_key_id: str) -> bytes:
    """Record of one S3 access key."""
    return keys._k("s3-keys", access_key_id)


@dataclass(frozen=True)
class S3KeyRecord:
    """One access key: its user, the id of the token made for it, and the sealed secrets."""

    id: str
    user: str
    token_id: str
    created: float
    sealed: str


class S3KeyRecords:
    """The registry's S3 access-key records (joined into :class:`~dynostore.registry.Registry`)."""

    etcd: EtcdClient
    _tx: Any

    @etcd_errors
    async def put_s3_key(self, access_key_id: str, user: str, token_id: str, sealed: str) -> S3KeyRecord:
        """Store a new access key of ``user``.

        Raises:
            AlreadyExists: the id is taken (ids are random: practically never).
            NotFound: there is no such user.
        """
        record = S3KeyRecord(access_key_id, user, token_id, time.time(), sealed)
        ok, _ = await self.etcd.transaction(
            compare=[self._tx.create(s3_key(access_key_id)) == 0, self._tx.create(keys.user(user)) > 0],
            success=[self._tx.put(s3_key(access_key_id), json.dumps(asdict(record)).encode())],
            failure=[],
        )
        if not ok:
            if await self.etcd.get(keys.user(user)) is None:
                raise NotFound(f"There is no user {user!r}.")
            raise AlreadyExists(f"The access key id {access_key_id} is taken.")
        return record

    @etcd_errors
    async def get_s3_key(self, access_key_id: str) -> S3KeyRecord:
        """The record of an access key.

        Raises:
            NotFound: there is no such access key (or it was revoked).
        """
        found = await self.etcd.get(s3_key(access_key_id))
        if found is None:
            raise NotFound(f"There is no S3 access key {access_key_id}.")
        return S3KeyRecord(**json.loads(found.value))

    @etcd_errors
    async def delete_s3_key(self, access_key_id: str) -> None:
        """Forget an access key (its token is revoked apart)."""
        await self.etcd.delete(s3_key(access_key_id))
