"""The etcd key schema (version 1). Every key DynoStore writes is built here.

```
/dynostore/v1/auth/users/<name>                {"name", "admin", "created"}
/dynostore/v1/auth/tokens/<sha256(token)>      user name
/dynostore/v1/secrets/plan                     key that signs plan tickets (shared by gateways)
/dynostore/v1/objects/<key>                    object record (JSON, see ObjectRecord)
/dynostore/v1/catalogs/<owner>/<catalog>       {"owner", "name", "created"}
/dynostore/v1/index/<owner>/<catalog>/<key>    {"name", "size", "created"}
/dynostore/v1/containers/<id>                  ContainerInfo (JSON), under a lease
```
"""

from __future__ import annotations

PREFIX = "/dynostore/v1/"


def _k(*parts: str) -> bytes:
    return (PREFIX + "/".join(parts)).encode()


def user(name: str) -> bytes:
    """Record of one user."""
    return _k("auth", "users", name)


def token(token_hash: str) -> bytes:
    """Owner of one token, by the token's SHA-256."""
    return _k("auth", "tokens", token_hash)


def auth_prefix() -> bytes:
    """Prefix of every user and token record."""
    return _k("auth", "")


def plan_secret() -> bytes:
    """The secret that signs plan tickets."""
    return _k("secrets", "plan")


def obj(key: str) -> bytes:
    """Record of one committed object."""
    return _k("objects", key)


def catalog(owner: str, name: str) -> bytes:
    """Record of one catalog."""
    return _k("catalogs", owner, name)


def index_entry(owner: str, catalog_name: str, key: str) -> bytes:
    """Entry of one object in its catalog's index."""
    return _k("index", owner, catalog_name, key)


def index_prefix(owner: str, catalog_name: str) -> bytes:
    """Prefix of every index entry of a catalog."""
    return _k("index", owner, catalog_name, "")


def container(container_id: str) -> bytes:
    """Membership record of one container."""
    return _k("containers", container_id)


def containers_prefix() -> bytes:
    """Prefix of every membership record."""
    return _k("containers", "")
