"""gRPC adapter of the gateway: authenticate, validate, call the registry.

The RPCs are grouped by record kind, one module each: :mod:`.objects`,
:mod:`.catalogs`, :mod:`.users` (and tokens), :mod:`.membership` (containers),
:mod:`.s3keys` (S3 access keys), :mod:`.status` (the fabric at a glance),
:mod:`.drain` (drain, decommission, rebalance);
:mod:`.base` holds what they share. :class:`GatewayServicer` joins them.
"""

from __future__ import annotations

from dynostore.gateway.base import MAX_BATCH, MAX_INLINE_BYTES, MAX_PLANNED_KEYS, GatewayCalls, GatewayPolicy
from dynostore.gateway.catalogs import CatalogCalls
from dynostore.gateway.drain import MoveCalls
from dynostore.gateway.membership import ContainerCalls
from dynostore.gateway.objects import ObjectCalls
from dynostore.gateway.s3keys import S3KeyCalls
from dynostore.gateway.status import StatusCalls
from dynostore.gateway.users import UserCalls


class GatewayServicer(S3KeyCalls, ObjectCalls, CatalogCalls, UserCalls, ContainerCalls, StatusCalls, MoveCalls):
    """The control-path RPCs over one :class:`~dynostore.registry.Registry`."""


__all__ = ["MAX_BATCH", "MAX_INLINE_BYTES", "MAX_PLANNED_KEYS", "GatewayCalls", "GatewayPolicy", "GatewayServicer"]
