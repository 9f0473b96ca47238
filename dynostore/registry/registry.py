"""Registry operations over etcd (through aetcd), used by the gateway.

Every multi-key change is one etcd transaction, so readers never see a
half-made object, user or catalog entry. The operations are grouped by record
kind, one module each: :mod:`.users` (and tokens, quotas), :mod:`.objects` (and :mod:`.commits`),
:mod:`.catalogs` (shares, events), :mod:`.containers` (and ticket keys),
:mod:`.fabric` (gateways, repair progress: the status view), :mod:`.moves`
(drain flags, rebalance requests and their progress), :mod:`.s3keys` (S3 access keys);
:mod:`.base` holds what they share. :class:`Registry` joins them.
"""

from __future__ import annotations

from dynostore.registry.base import CAS_ATTEMPTS, COMMIT_GROUP, MAX_TXN_OPS, etcd_errors
from dynostore.registry.catalogs import CatalogCalls
from dynostore.registry.containers import ContainerCalls
from dynostore.registry.fabric import FabricCalls
from dynostore.registry.moves import MoveCalls
from dynostore.registry.records import (
    CatalogEvent,
    ObjectRecord,
    TicketKeyRecord,
    TokenInfo,
    User,
    entry_expired,
    expiry,
)
from dynostore.registry.s3keys import S3KeyRecords
from dynostore.registry.users import TOKEN_ID_CHARS, UserCalls, hash_token, new_token


class Registry(CatalogCalls, UserCalls, ContainerCalls, FabricCalls, MoveCalls, S3KeyRecords):
    """DynoStore's view of etcd: objects and catalogs, users and tokens, containers and keys."""


__all__ = [
    "CAS_ATTEMPTS",
    "COMMIT_GROUP",
    "MAX_TXN_OPS",
    "TOKEN_ID_CHARS",
    "CatalogEvent",
    "ObjectRecord",
    "Registry",
    "TicketKeyRecord",
    "TokenInfo",
    "User",
    "entry_expired",
    "etcd_errors",
    "expiry",
    "hash_token",
    "new_token",
]
