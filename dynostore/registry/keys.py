"""The etcd key schema (version 1). Every key DynoStore writes is built here.

```
/dynostore/v1/auth/users/<name>                {"name", "admin", "created", "quota_bytes", "quota_objects"}
/dynostore/v1/usage/<name>                     {"bytes", "objects"} of the user's objects (see registry.usage)
/dynostore/v1/auth/tokens/<sha256(token)>      {"id", "user", "created"}  (id: 16 hex digits of the hash)
/dynostore/v1/secrets/plan                     key that signs plan tickets (shared by gateways)
/dynostore/v1/secrets/ticket-keys/<id>         Ed25519 key pair for chunk tickets, with its retirement time
/dynostore/v1/objects/<key>                    object record (JSON, see ObjectRecord)
/dynostore/v1/versions/<version>               key of the object whose current version's chunks are under <version>
/dynostore/v1/names/<owner>/<catalog>/<name>NUL<key>  empty: object <key> of that catalog is named <name>
/dynostore/v1/catalog-list/<owner>/<catalog>   {"owner", "name", "created", "k", "m", "ttl", "names"}
/dynostore/v1/catalogs/<owner>/<catalog>/objects/<key>   {"name", "size", "created", "expires"}
/dynostore/v1/catalogs/<owner>/<catalog>/shares/<reader> {"created"}
/dynostore/v1/shared-with/<reader>/<owner>/<catalog>     {"created"}
/dynostore/v1/containers/<id>                  ContainerInfo (JSON), under a lease
/dynostore/v1/container-owners/<id>            name of the container user that first registered it
/dynostore/v1/s3-keys/<access key id>          S3 access key: user, token id, sealed secret (registry/s3keys.py)
/dynostore/v1/container-seen/<id>              ContainerInfo (JSON) and "last_seen", as of its last heartbeat
/dynostore/v1/gateways/<host:port>             {"address", "started", "version"}, under a lease
/dynostore/v1/status/repair                    progress of the running (or last) repair sweep
/dynostore/v1/drains/<id>                      {"bandwidth", "started"}: the container is being drained
/dynostore/v1/status/drains/<id>               progress of that drain (see registry.moves)
/dynostore/v1/rebalance                        {"bandwidth", "started"}: a rebalance is wanted
/dynostore/v1/status/rebalance                 progress of the running (or last) rebalance
```

Everything that happens to a catalog's contents (puts, evicts, shares) is a
change under ``catalogs/<owner>/<catalog>/``: one etcd watch serves its events.
"""

from __future__ import annotations

PREFIX = "/dynostore/v1/"


def _k(*parts: str) -> bytes:
    return (PREFIX + "/".join(parts)).encode()


def user(name: str) -> bytes:
    """Record of one user."""
    return _k("auth", "users", name)


def usage(name: str) -> bytes:
    """What one user's objects take (bytes and objects), kept with every commit and evict."""
    return _k("usage", name)


def token(token_hash: str) -> bytes:
    """Owner of one token, by the token's SHA-256."""
    return _k("auth", "tokens", token_hash)


def auth_prefix() -> bytes:
    """Prefix of every user and token record."""
    return _k("auth", "")


def ticket_key(kid: str) -> bytes:
    """One chunk-ticket signing key."""
    return _k("secrets", "ticket-keys", kid)


def first_ticket_key() -> bytes:
    """Made with the first chunk-ticket key, so that gateways starting together make only one."""
    return _k("secrets", "ticket-key-first")


def plan_secret() -> bytes:
    """The secret that signs plan tickets."""
    return _k("secrets", "plan")


def obj(key: str) -> bytes:
    """Record of one committed object."""
    return _k("objects", key)


def objects_prefix() -> bytes:
    """Prefix of every object record."""
    return _k("objects", "")


def unused() -> bytes:
    """A key nothing writes: reading it tells etcd's current revision."""
    return _k("revision-probe")


def repair_lock() -> bytes:
    """The lock a gateway holds while it sweeps objects for repair (one sweep at a time)."""
    return _k("locks", "repair")


def version(chunk_key: str) -> bytes:
    """Which object's current version keeps its chunks under ``chunk_key`` (one that replaced it by key)."""
    return _k("versions", chunk_key)


def name_prefix(owner: str, catalog_name: str, name: str) -> bytes:
    """Prefix of the name entries of every object called ``name`` in a catalog (names hold no NUL)."""
    return _k("names", owner, catalog_name, name) + b"\0"


def name_entry(owner: str, catalog_name: str, name: str, key: str) -> bytes:
    """Entry saying that object ``key`` is called ``name`` in its catalog (objects with a name only)."""
    return name_prefix(owner, catalog_name, name) + key.encode()


def inline_data(key: str) -> bytes:
    """The bytes of an object stored inline (small objects kept in etcd, no chunks)."""
    return _k("inline", key)


def catalog(owner: str, name: str) -> bytes:
    """Record of one catalog."""
    return _k("catalog-list", owner, name)


def all_catalogs() -> bytes:
    """Prefix of every catalog record, of every owner."""
    return _k("catalog-list", "")


def catalogs_of(owner: str) -> bytes:
    """Prefix of the records of every catalog of ``owner``."""
    return _k("catalog-list", owner, "")


def catalog_events(owner: str, catalog_name: str) -> bytes:
    """Prefix of everything that changes with a catalog's contents and shares."""
    return _k("catalogs", owner, catalog_name, "")


def owner_events(owner: str) -> bytes:
    """Prefix of the index entries and shares of every catalog of ``owner``."""
    return _k("catalogs", owner, "")


def index_entry(owner: str, catalog_name: str, key: str) -> bytes:
    """Entry of one object in its catalog's index."""
    return _k("catalogs", owner, catalog_name, "objects", key)


def index_prefix(owner: str, catalog_name: str) -> bytes:
    """Prefix of every index entry of a catalog."""
    return _k("catalogs", owner, catalog_name, "objects", "")


def share(owner: str, catalog_name: str, reader: str) -> bytes:
    """Grant of read access to ``reader``."""
    return _k("catalogs", owner, catalog_name, "shares", reader)


def shares_prefix(owner: str, catalog_name: str) -> bytes:
    """Prefix of every grant of a catalog."""
    return _k("catalogs", owner, catalog_name, "shares", "")


def shared_with(reader: str, owner: str = "", catalog_name: str = "") -> bytes:
    """Reverse index of grants: what was shared with ``reader`` (a prefix when names are empty)."""
    if not owner:
        return _k("shared-with", reader, "")
    return _k("shared-with", reader, owner, catalog_name)


def container(container_id: str) -> bytes:
    """Membership record of one container."""
    return _k("containers", container_id)


def containers_prefix() -> bytes:
    """Prefix of every membership record."""
    return _k("containers", "")


def container_owner(container_id: str) -> bytes:
    """Which container user a container id belongs to."""
    return _k("container-owners", container_id)


def container_owners_prefix() -> bytes:
    """Prefix of every container's owner."""
    return _k("container-owners", "")


def container_seen(container_id: str) -> bytes:
    """A container's latest state and when it was last seen, kept after its lease ends."""
    return _k("container-seen", container_id)


def container_seen_prefix() -> bytes:
    """Prefix of every container's last-seen record."""
    return _k("container-seen", "")


def gateway(address: str) -> bytes:
    """Announcement of one serving gateway."""
    return _k("gateways", address)


def gateways_prefix() -> bytes:
    """Prefix of every gateway's announcement."""
    return _k("gateways", "")


def repair_progress() -> bytes:
    """Progress of the fabric's running (or last) repair sweep."""
    return _k("status", "repair")


def drain(container_id: str) -> bytes:
    """The drain flag of a container: no new chunks go there, its chunks move elsewhere."""
    return _k("drains", container_id)


def drains_prefix() -> bytes:
    """Prefix of every drain flag."""
    return _k("drains", "")


def drain_progress(container_id: str) -> bytes:
    """Progress of the drain of one container."""
    return _k("status", "drains", container_id)


def drain_progress_prefix() -> bytes:
    """Prefix of every drain's progress."""
    return _k("status", "drains", "")


def drain_lock(container_id: str) -> bytes:
    """The lock a gateway holds while it drains a container (one gateway per drain)."""
    return _k("locks", "drain", container_id)


def rebalance() -> bytes:
    """The rebalance request: set until used space is even (or it is stopped)."""
    return _k("rebalance")


def rebalance_progress() -> bytes:
    """Progress of the running (or last) rebalance."""
    return _k("status", "rebalance")


def rebalance_lock() -> bytes:
    """The lock a gateway holds while it rebalances."""
    return _k("locks", "rebalance")
