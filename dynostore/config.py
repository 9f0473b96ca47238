"""Settings files: TOML tables mapped onto frozen dataclasses, unknown keys rejected.

A daemon's settings come, in rising priority, from the dataclass defaults, the
file given with ``--config`` (table ``[gateway]`` or ``[container]``), and
command-line flags. Secrets (tokens) come from the environment or from a file
named in the settings, never from the settings file itself.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from dynostore.errors import InvalidArgument

T = TypeVar("T")


def load_table(path: Path, table: str) -> dict[str, Any]:
    """The ``[table]`` of a TOML file.

    Raises:
        InvalidArgument: the file is unreadable, not TOML, or has other tables.
    """
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"Cannot read settings file {path}: {exc}") from None
    others = set(data) - {table}
    if others:
        raise InvalidArgument(f"{path}: unexpected top-level entries {sorted(others)}; put settings under [{table}].")
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise InvalidArgument(f"{path}: [{table}] must be a table.")
    return section


def _coerce(name: str, kind: Any, value: Any, source: str) -> Any:
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is Path and isinstance(value, str | Path):
            return Path(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option in (str, bool) and isinstance(value, option):
            return value
        if option == list[str] and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    expected = " or ".join(str(o) if typing.get_args(o) else getattr(o, "__name__", str(o)) for o in options)
    raise InvalidArgument(f"{source}: setting {name!r} must be {expected}, not {value!r}.")


def build(cls: type[T], values: Mapping[str, Any], source: str) -> T:
    """Make settings of type ``cls`` from ``values``, checking names and types.

    Raises:
        InvalidArgument: a setting is unknown, of the wrong type, or required and missing.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InvalidArgument(f"{source}: unknown setting(s) {unknown}; known settings: {sorted(fields)}.")
    converted = {name: _coerce(name, hints[name], value, source) for name, value in values.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in converted and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise InvalidArgument(f"{source}: required setting(s) {missing} are missing.")
    return cls(**converted)


def settings_from(cls: type[T], config: Path | None, table: str, flags: Mapping[str, Any]) -> T:
    """Settings from an optional file, overridden by the flags that were given (not None)."""
    values = load_table(config, table) if config else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return build(cls, values, str(config) if config else "command line")


def read_secret(env_value: str | None, path: Path | None, what: str) -> str:
    """A secret from the environment, else from a file.

    Raises:
        InvalidArgument: neither is set, or the file is unreadable or empty.
    """
    if env_value:
        return env_value
    if path is None:
        raise InvalidArgument(f"No {what}: set the environment variable or the *_file setting.")
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise InvalidArgument(f"Cannot read the {what} from {path}: {exc}") from None
    if not secret:
        raise InvalidArgument(f"{path} is empty; it should hold the {what}.")
    return secret
