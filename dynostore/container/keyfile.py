"""The chunk-ticket keys shared by the workers of one container (``dynostore container --workers N``).

Worker 0 registers with the gateway and heartbeats; the gateway's answers
carry the public keys that tickets are signed with. Worker 0 writes them to
``ticket-keys.json`` under the container's root (public keys only: nothing
secret), and the other workers read that file whenever it changes. The
gateway publishes a new key a container lease before it signs with it, so
the half second a follower may lag costs nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from dynostore.tickets import TicketVerifier

log = logging.getLogger(__name__)

KEYS_FILE = "ticket-keys.json"
POLL_SECONDS = 0.5


def publish_keys(path: Path, keys: Mapping[str, bytes]) -> None:
    """Write ``keys`` (id -> raw public key) to ``path`` at once: a reader sees the old file or the new one."""
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps({kid: base64.b64encode(raw).decode() for kid, raw in keys.items()}))
    temp.replace(path)


def read_keys(path: Path) -> dict[str, bytes] | None:
    """The keys in ``path``; None if it is missing or unreadable (worker 0 has not written it yet)."""
    try:
        entries = json.loads(path.read_text())
        return {str(kid): base64.b64decode(raw) for kid, raw in entries.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _version(path: Path) -> tuple[int, int] | None:
    """What tells one write of ``path`` from the next (each write renames a new file over it)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_ino


async def follow_keys(path: Path, verifier: TicketVerifier, ready: asyncio.Event) -> None:
    """Hand the keys in ``path`` to ``verifier`` each time the file changes; set ``ready`` at the first."""
    seen: tuple[int, int] | None = None
    while True:
        version = _version(path)
        if version is not None and version != seen:
            keys = read_keys(path)
            if keys:
                verifier.set_keys(keys)
                seen = version
                if not ready.is_set():
                    log.info("Ticket keys read from %s", path)
                ready.set()
        await asyncio.sleep(POLL_SECONDS)
