"""Run tickets: one signature for the keys a PlanPut hands out together."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dynostore import tickets
from dynostore.errors import PermissionDenied

PREFIX = "ab" * 12


def verifier_for(private: Ed25519PrivateKey, kid: str = "k1") -> tickets.TicketVerifier:
    verifier = tickets.TicketVerifier()
    verifier.set_keys({kid: private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)})
    return verifier


def test_a_run_ticket_allows_exactly_the_keys_of_its_run() -> None:
    private = Ed25519PrivateKey.generate()
    verifier = verifier_for(private)
    keys = tickets.run_keys(PREFIX, 3)
    assert keys == [PREFIX + "00000000", PREFIX + "00000001", PREFIX + "00000002"]
    ticket = tickets.sign_run(private, "k1", PREFIX, 3, "write", 60)
    for key in keys:
        verifier.check(ticket, key, "write")
    for outside in (PREFIX + "00000003", PREFIX + "ffffffff", "cd" * 12 + "00000000"):
        with pytest.raises(PermissionDenied, match="not valid for this object"):
            verifier.check(ticket, outside, "write")
    with pytest.raises(PermissionDenied, match="allows 'write', not 'read'"):
        verifier.check(ticket, keys[0], "read")


def test_a_run_ticket_cannot_be_stretched_or_forged() -> None:
    private = Ed25519PrivateKey.generate()
    verifier = verifier_for(private)
    ticket = tickets.sign_run(private, "k1", PREFIX, 3, "write", 60)
    kid, expires, op, count, signature = ticket.split(".")
    verifier.check(ticket, PREFIX + "00000002", "write")  # verified once: now known to the verifier
    stretched = f"{kid}.{expires}.{op}.9.{signature}"
    with pytest.raises(PermissionDenied, match="not valid for this object"):
        verifier.check(stretched, PREFIX + "00000005", "write")
    later = f"{kid}.{int(expires) + 3600}.{op}.{count}.{signature}"
    with pytest.raises(PermissionDenied, match="not valid for this object"):
        verifier.check(later, PREFIX + "00000001", "write")
    forged = tickets.sign_run(Ed25519PrivateKey.generate(), "k1", PREFIX, 3, "write", 60)
    with pytest.raises(PermissionDenied, match="not valid for this object"):
        verifier.check(forged, PREFIX + "00000001", "write")
    for malformed in (
        f"{kid}.{expires}.{op}.x.{signature}",
        f"{kid}.{expires}.{op}.3.4.{signature}",
        f"{kid}.{expires}.{op}.{'9' * 5000}.{signature}",  # past int()'s limit on digits
        f"{kid}.{'9' * 5000}.{op}.{signature}",
        f"{kid}.{expires}.{op}.\u0663.{signature}",  # a digit to str.isdigit, not a decimal one
    ):
        with pytest.raises(PermissionDenied, match="malformed"):
            verifier.check(malformed, PREFIX + "00000001", "write")


def test_a_verified_ticket_still_expires_and_goes_with_its_key() -> None:
    private = Ed25519PrivateKey.generate()
    verifier = verifier_for(private)
    expired = tickets.sign_run(private, "k1", PREFIX, 2, "write", -1)
    for _ in range(2):
        with pytest.raises(PermissionDenied, match="expired"):
            verifier.check(expired, PREFIX + "00000000", "write")
    ticket = tickets.sign(private, "k1", PREFIX + "00000000", "read", 60)
    verifier.check(ticket, PREFIX + "00000000", "read")
    verifier.set_keys({"k2": Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)})
    with pytest.raises(PermissionDenied, match="does not accept"):
        verifier.check(ticket, PREFIX + "00000000", "read")  # its key retired: no longer accepted
