"""Expiry decisions on a fake clock, the quota check and its message, and the size syntax of the CLI."""

from __future__ import annotations

import math

import pytest

from dynostore import validation
from dynostore.errors import InvalidArgument, ResourceExhausted
from dynostore.registry import ObjectRecord, Usage
from dynostore.registry.registry import entry_expired, expiry
from dynostore.registry.usage import check_quota, format_size, parse_count, parse_size

GIB = 1024**3


class Clock:
    """A clock that moves only when told."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(expires: float) -> ObjectRecord:
    return ObjectRecord(
        key="a" * 32, owner="o", catalog="c", name="", size=1, k=0, m=0, segment_size=0, expires=expires
    )


def test_an_object_expires_at_its_expiry_and_never_without_one() -> None:
    clock = Clock(1000.0)
    created = clock()
    lived = record(expiry(created, 30.0, None))
    forever = record(expiry(created, 0.0, None))
    assert lived.expires == 1030.0
    assert not lived.expired(clock())
    clock.now = 1029.999
    assert not lived.expired(clock())
    clock.now = 1030.0
    assert lived.expired(clock())
    clock.now = 1e12
    assert not forever.expired(clock())
    assert entry_expired(lived.index_entry(), clock())
    assert "expires" not in forever.index_entry()
    assert not entry_expired(forever.index_entry(), clock())


def test_a_put_ttl_beats_the_catalog_default() -> None:
    assert expiry(100.0, 0.0, {"ttl": 50.0}) == 150.0
    assert expiry(100.0, 5.0, {"ttl": 50.0}) == 105.0
    assert expiry(100.0, 0.0, {"owner": "o"}) == 0.0


def test_record_expiry_round_trips_and_old_records_never_expire() -> None:
    lived = record(42.5)
    assert ObjectRecord.from_json(lived.to_json()).expires == 42.5
    old = lived.to_json().replace(b',"expires":42.5', b"")
    assert ObjectRecord.from_json(old).expires == 0.0


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "10", True, 1e12])
def test_ttls_are_checked(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        validation.ttl(bad)


def test_the_quota_check_says_what_is_used_and_needed() -> None:
    used = Usage(bytes=round(9.8 * GIB), objects=10)
    check_quota("alice", 0, 0, used, 10**15, 10**9)  # unlimited
    check_quota("alice", 10 * GIB, 11, used, round(0.2 * GIB), 1)  # exactly up to it
    with pytest.raises(ResourceExhausted) as refused:
        check_quota("alice", 10 * GIB, 0, used, round(0.3 * GIB), 1)
    assert str(refused.value) == "alice's quota of 10 GiB would be exceeded: 9.8 GiB used, this put needs 0.3 GiB."
    with pytest.raises(
        ResourceExhausted, match=r"alice's quota of 11 objects would be exceeded: 10 stored, this put adds 2\."
    ):
        check_quota("alice", 0, 11, used, 0, 2)


def test_usage_never_goes_below_zero() -> None:
    assert Usage(10, 1).add(-20, -2) == Usage(0, 0)
    assert Usage.from_json(Usage(5, 2).to_json()) == Usage(5, 2)


def test_sizes_and_counts() -> None:
    assert parse_size("10G") == parse_size("10GiB") == parse_size("10gb") == 10 * GIB
    assert parse_size("1.5T") == 3 * 1024**4 // 2
    assert parse_size("512") == 512
    assert parse_size("0") == 0
    assert parse_count("1e6") == 1_000_000
    assert format_size(round(9.8 * GIB)) == "9.8 GiB"
    assert format_size(10 * GIB) == "10 GiB"
    assert format_size(300) == "300 B"
    assert format_size(300, like=10 * GIB) == "300 B"  # not 0.0 GiB
    assert format_size(6 * 1024, like=10 * 1024) == "6 KiB"
    for bad in ("ten", "-1G", "1.5X"):
        with pytest.raises(InvalidArgument):
            parse_size(bad)
    for bad in ("1.5", "-3", "x"):
        with pytest.raises(InvalidArgument):
            parse_count(bad)
