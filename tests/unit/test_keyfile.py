"""The ticket keys a container's worker 0 writes for its other workers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dynostore import tickets
from dynostore.container.keyfile import follow_keys, publish_keys, read_keys
from dynostore.errors import PermissionDenied, Unavailable
from dynostore.tickets import TicketVerifier

KEY = "0123456789abcdef0123456789abcdef"


def _pair() -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _accepts(verifier: TicketVerifier, private: Ed25519PrivateKey, kid: str) -> bool:
    try:
        verifier.check(tickets.sign(private, kid, KEY, "read", 60), KEY, "read")
    except PermissionDenied:
        return False
    return True


def test_keys_round_trip_and_a_bad_file_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert read_keys(path) is None
    publish_keys(path, {"k1": b"\x01" * 32})
    assert read_keys(path) == {"k1": b"\x01" * 32}
    path.write_text("[not a mapping")
    assert read_keys(path) is None
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_a_follower_takes_the_keys_and_each_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dynostore.container.keyfile.POLL_SECONDS", 0.01)
    path = tmp_path / "keys.json"
    old_private, old_public = _pair()
    new_private, new_public = _pair()
    verifier = TicketVerifier()

    async def scenario() -> None:
        ready = asyncio.Event()
        follower = asyncio.create_task(follow_keys(path, verifier, ready))
        try:
            await asyncio.sleep(0.05)
            assert not ready.is_set()  # no file yet: no keys, not ready
            with pytest.raises(Unavailable):
                _accepts(verifier, old_private, "old")
            publish_keys(path, {"old": old_public})
            await asyncio.wait_for(ready.wait(), 5)
            assert _accepts(verifier, old_private, "old")
            publish_keys(path, {"new": new_public})  # the old key retired
            for _ in range(500):
                if not _accepts(verifier, old_private, "old"):
                    break
                await asyncio.sleep(0.01)
            assert not _accepts(verifier, old_private, "old")
            assert _accepts(verifier, new_private, "new")
        finally:
            follower.cancel()

    asyncio.run(scenario())
