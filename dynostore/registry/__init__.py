"""The registry: DynoStore's metadata, users and membership in etcd."""

from dynostore.registry.registry import CatalogEvent, ObjectRecord, Registry, TokenInfo, User
from dynostore.registry.usage import Usage

__all__ = ["CatalogEvent", "ObjectRecord", "Registry", "TokenInfo", "Usage", "User"]
