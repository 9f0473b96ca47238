"""Request validators shared by the client, gateway and containers.

Each returns the value when it is acceptable and raises
:class:`~dynostore.errors.InvalidArgument` with a full sentence otherwise.
"""

from __future__ import annotations

import re
from typing import Any

from dynostore.errors import InvalidArgument, Unauthenticated

KEY_PATTERN = re.compile(r"[0-9a-f]{32}")
# Key-space shards: keys by their first two hex digits (record scans go one shard at a time).
KEY_SHARDS = 256
_CATALOG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_USER_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_CONTAINER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_NAME_CHARS = 1024
MAX_K = 32
MAX_M = 16


_DECIMAL = re.compile(r"[0-9]{1,19}")


def decimal(text: str) -> int | None:
    """``text`` as a number if it is 1-19 ASCII digits (an expiry, a count, an event id), else None.

    For numbers inside tickets and headers: ``str.isdigit`` also takes other
    scripts' digits, and ``int`` refuses strings of more than 4,300 digits.
    """
    return int(text) if _DECIMAL.fullmatch(text) else None


def _require_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"The {what} must be a string, not {type(value).__name__}.")
    return value


def key(value: Any) -> str:
    """An object key: 32 lower-case hex digits, as returned by put."""
    value = _require_str(value, "key")
    if not KEY_PATTERN.fullmatch(value):
        raise InvalidArgument(f"{value[:80]!r} is not a DynoStore key; keys are the 32 hex digits that put returned.")
    return value


def catalog(value: Any) -> str:
    """A catalog name: 1-128 letters, digits, '.', '_' or '-', not starting with a symbol."""
    value = _require_str(value, "catalog")
    if not _CATALOG_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{value[:80]!r} is not a valid catalog name; use 1-128 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit."
        )
    return value


def catalog_ref(value: Any, user: str) -> tuple[str, str]:
    """``(owner, name)`` of a catalog named ``name`` (the user's) or ``owner/name``."""
    value = _require_str(value, "catalog")
    owner, slash, name = value.rpartition("/")
    if not slash:
        return user, catalog(value)
    return user_name(owner), catalog(name)


def user_name(value: Any) -> str:
    """A user name: lower-case letter first, then letters, digits, '_' or '-'."""
    value = _require_str(value, "user name")
    if not _USER_PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"{value[:80]!r} is not a valid user name; use 1-64 lower-case letters, digits, "
            "'_' or '-', starting with a letter."
        )
    return value


def object_name(value: Any) -> str:
    """A display name for an object: printable text of at most 1024 characters."""
    value = _require_str(value, "object name")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidArgument(f"Object names may have at most {MAX_NAME_CHARS} characters.")
    if any(not ch.isprintable() for ch in value):
        raise InvalidArgument("Object names may not contain control characters.")
    return value


def container_id(value: Any) -> str:
    """A container id: 1-64 letters, digits, '.', '_' or '-'."""
    value = _require_str(value, "container id")
    if not _CONTAINER_ID_PATTERN.fullmatch(value):
        raise InvalidArgument(f"{value[:80]!r} is not a valid container id.")
    return value


def token(value: Any) -> str:
    """A token as presented by a caller (any non-empty printable ASCII).

    Raises:
        Unauthenticated: the token is missing, empty or malformed.
    """
    if not isinstance(value, str) or not value:
        raise Unauthenticated("A token (token_user) is required and must be a non-empty string.")
    if len(value) > 512 or not value.isascii() or not value.isprintable():
        raise Unauthenticated("The token (token_user) is malformed.")
    return value


def ec_params(k: int, m: int) -> tuple[int, int]:
    """An erasure-coding policy: 1 <= k <= 32 data and 0 <= m <= 16 parity fragments."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidArgument(f"k must be an integer from 1 to {MAX_K}, not {k!r}.")
    if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= MAX_M:
        raise InvalidArgument(f"m must be an integer from 0 to {MAX_M}, not {m!r}.")
    return k, m


def chunk_index(value: int, total: int) -> int:
    """A chunk index below ``total``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < total:
        raise InvalidArgument(f"Chunk index {value!r} is out of range 0..{total - 1}.")
    return value


# The longest lifetime an object or catalog default may be given: 100 years.
MAX_TTL_SECONDS = 100 * 365 * 86400.0


def ttl(value: Any) -> float:
    """An object lifetime in seconds: 0 (none given) or a positive number of at most 100 years."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"A TTL is a number of seconds, not {type(value).__name__}.")
    seconds = float(value)
    if not 0 <= seconds <= MAX_TTL_SECONDS:  # also refuses NaN
        raise InvalidArgument(f"A TTL must be 0 (none) to {MAX_TTL_SECONDS:.0f} seconds (100 years), not {value}.")
    return seconds
