"""Per-user usage and quotas: what a user's objects take, and the check that keeps it under the quota.

The registry keeps each user's usage (bytes and objects) in one etcd key,
changed in the same transaction as every commit and evict, so it is exact.
A commit compares the counter's revision, so two commits racing for the last
bytes of a quota cannot both land: committed usage never exceeds the quota
(unless an admin lowers the quota below it).
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass

from dynostore.errors import InvalidArgument, ResourceExhausted

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


@dataclass(frozen=True)
class Usage:
    """What a user's committed objects take (expired ones count until they are evicted)."""

    bytes: int = 0
    objects: int = 0

    def to_json(self) -> builtins.bytes:
        """Serialize for etcd."""
        return json.dumps({"bytes": self.bytes, "objects": self.objects}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: builtins.bytes) -> Usage:
        """Parse what :meth:`to_json` wrote."""
        data = json.loads(raw)
        return cls(bytes=data["bytes"], objects=data["objects"])

    def add(self, size: int, objects: int) -> Usage:
        """This usage with ``objects`` more objects of ``size`` bytes in all (negative: fewer), never below 0."""
        return Usage(max(0, self.bytes + size), max(0, self.objects + objects))


def check_quota(user: str, quota_bytes: int, quota_objects: int, used: Usage, size: int, objects: int) -> None:
    """Refuse a put of ``objects`` objects of ``size`` bytes in all that would take ``user`` over its quota.

    A quota of 0 is unlimited.

    Raises:
        ResourceExhausted: the put would exceed the quota of bytes or of objects.
    """
    if quota_bytes and used.bytes + size > quota_bytes:
        raise ResourceExhausted(
            f"{user}'s quota of {format_size(quota_bytes)} would be exceeded: "
            f"{format_size(used.bytes, quota_bytes)} used, this put needs {format_size(size, quota_bytes)}."
        )
    if quota_objects and used.objects + objects > quota_objects:
        raise ResourceExhausted(
            f"{user}'s quota of {quota_objects} objects would be exceeded: {used.objects} stored, "
            f"this put adds {objects}."
        )


def format_size(size: int, like: int | None = None) -> str:
    """``size`` bytes in binary units, as ``9.8 GiB`` (below 1 KiB: ``512 B``).

    With ``like``, in the unit that suits ``like`` (so that figures compared
    read alike), unless ``size`` would show as 0 in it.
    """
    unit = _unit(size if like is None else like)
    if unit == "" or (size and round(size / _UNITS[unit], 1) == 0):
        unit = _unit(size)
    if unit == "":
        return f"{size} B"
    return f"{size / _UNITS[unit]:.1f} {unit}iB".replace(".0 ", " ")


def _unit(size: int) -> str:
    """The largest binary unit of which ``size`` holds at least one (empty: bytes)."""
    return next((u for u in ("P", "T", "G", "M", "K") if size >= _UNITS[u]), "")


def parse_size(text: str) -> int:
    """Bytes from ``10G``, ``1.5T``, ``512K``, ``10GiB`` or ``1e6`` (binary units; 0: unlimited).

    Raises:
        InvalidArgument: ``text`` is not a size.
    """
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1] if value and value[-1] in _UNITS else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        raise InvalidArgument(f"{text!r} is not a size; write it as 10G, 512M, 1.5T or a number of bytes.") from None
    if not 0 <= number < 2**63 / _UNITS[unit]:
        raise InvalidArgument(f"A size must be 0 (unlimited) or positive, not {text!r}.")
    return round(number * _UNITS[unit])


def parse_count(text: str) -> int:
    """A whole number of objects, from ``1000000`` or ``1e6`` (0: unlimited).

    Raises:
        InvalidArgument: ``text`` is not a whole non-negative number.
    """
    try:
        number = float(text)
    except ValueError:
        raise InvalidArgument(f"{text!r} is not a number of objects; write it as 1000000 or 1e6.") from None
    if not 0 <= number < 2**63 or number != int(number):
        raise InvalidArgument(f"A number of objects must be a whole number, 0 (unlimited) or more, not {text!r}.")
    return int(number)
