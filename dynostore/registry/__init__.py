"""The registry: DynoStore's metadata, users and membership in etcd."""

from dynostore.registry.registry import CatalogEvent, ObjectRecord, Registry, TokenInfo, User

__all__ = ["CatalogEvent", "ObjectRecord", "Registry", "TokenInfo", "User"]
