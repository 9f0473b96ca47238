"""What a local fabric runs: container specs, and fabric settings files (``dynostore up --config``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dynostore.local.processes import Placement


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a :class:`LocalFabric`: its backend, site and further settings.

    Attributes:
        backend: ``fs``, ``memory``, ``s3`` or ``rados``.
        site: site label (default: a site of its own).
        settings: more ``[container]`` settings, e.g. ``s3_bucket`` or ``rados_pool``.
        env: extra environment variables of the process (e.g. ``AWS_ACCESS_KEY_ID``).
        placement: where it runs (default: 127.0.0.1 of this machine).
    """

    backend: str = "fs"
    site: str | None = None
    settings: Mapping[str, str | int | bool | Path] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    placement: Placement = field(default_factory=Placement)


def _toml_value(value: str | int | bool | Path) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(os.fspath(value))  # a JSON string is a valid TOML basic string


# Settings LocalFabric sets itself for each container.
_FABRIC_OWNED = frozenset({"gateway", "root", "listen", "ready_file", "token_file", "container_id"})


@dataclass(frozen=True)
class FabricConfig:
    """A local fabric described in a TOML file (``dynostore up --config FILE``)."""

    containers: list[ContainerSpec]
    root: str | None = None
    k: int = 3
    m: int = 2


def load_fabric_config(path: Path) -> FabricConfig:
    """Read a ``[fabric]`` table with one ``[[fabric.containers]]`` table per container.

    Each container table holds ``backend``, ``site`` and any further container
    setting (``s3_bucket``, ``rados_pool``...), checked as ``dynostore container``
    checks them. Example: ``fabric/mixed.toml``.

    Raises:
        InvalidArgument: the file is unreadable, or a setting is unknown, mistyped or not allowed here.
    """
    from dynostore.config import build, load_table
    from dynostore.container.server import ContainerSettings
    from dynostore.errors import InvalidArgument

    table = load_table(path, "fabric")
    unknown = sorted(set(table) - {"root", "k", "m", "containers"})
    if unknown:
        raise InvalidArgument(f"{path}: unknown fabric setting(s) {unknown}; known: containers, k, m, root.")
    entries = table.get("containers", [])
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise InvalidArgument(f"{path}: give each container as a [[fabric.containers]] table.")
    specs = []
    for number, entry in enumerate(entries):
        owned = sorted(set(entry) & _FABRIC_OWNED)
        if owned:
            raise InvalidArgument(f"{path}: container {number} sets {owned}; the local fabric sets those itself.")
        build(ContainerSettings, {"gateway": "-", **entry}, f"{path}: container {number}")
        settings = {k: v for k, v in entry.items() if k not in ("backend", "site")}
        specs.append(ContainerSpec(str(entry.get("backend", "fs")), entry.get("site"), settings))
    for name in ("k", "m"):
        if name in table and (not isinstance(table[name], int) or isinstance(table[name], bool)):
            raise InvalidArgument(f"{path}: setting {name!r} must be int, not {table[name]!r}.")
    root = table.get("root")
    if root is not None and not isinstance(root, str):
        raise InvalidArgument(f"{path}: setting 'root' must be str, not {root!r}.")
    return FabricConfig(specs, root, int(table.get("k", 3)), int(table.get("m", 2)))
