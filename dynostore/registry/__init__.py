"""The registry: DynoStore's metadata, users and membership in etcd."""

from dynostore.registry.registry import ObjectRecord, Registry, User

__all__ = ["ObjectRecord", "Registry", "User"]
