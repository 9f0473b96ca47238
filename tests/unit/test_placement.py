import random
from collections import Counter

import pytest

from dynostore._proto.common_pb2 import ContainerInfo
from dynostore.client.placement import PlacementPolicy, SpreadPlacement
from dynostore.errors import ResourceExhausted

GiB = 1 << 30


def containers(sites: list[str], free: int = 100 * GiB) -> list[ContainerInfo]:
    return [
        ContainerInfo(id=f"c{i}", address=f"127.0.0.1:{1000 + i}", site=s, capacity_bytes=free, free_bytes=free)
        for i, s in enumerate(sites)
    ]


def test_is_a_placement_policy() -> None:
    assert isinstance(SpreadPlacement(), PlacementPolicy)


def test_distinct_containers_when_enough() -> None:
    chosen = SpreadPlacement(random.Random(1)).place(containers(["a", "b", "c", "d", "e", "f"]), 5, 1)
    assert len({c.id for c in chosen}) == 5


def test_spreads_over_sites() -> None:
    pool = containers(["a", "a", "a", "b", "b", "b", "c", "c", "c"])
    for seed in range(20):
        chosen = SpreadPlacement(random.Random(seed)).place(pool, 5, 1)
        per_site = Counter(c.site for c in chosen)
        assert max(per_site.values()) == 2, per_site  # 5 chunks over 3 sites: 2+2+1


def test_full_containers_are_skipped() -> None:
    pool = containers(["a", "b", "c", "d", "e"]) + containers(["f"], free=10)
    for seed in range(20):
        chosen = SpreadPlacement(random.Random(seed)).place(pool, 5, 1000)
        assert all(c.free_bytes >= 1000 for c in chosen)


def test_prefers_free_space() -> None:
    pool = containers(["a"], free=1000 * GiB) + containers(["a"], free=1 * GiB)
    pool[1].id = "small"
    picks = Counter(SpreadPlacement(random.Random(s)).place(pool, 1, 1)[0].id for s in range(200))
    assert picks["c0"] > 150


def test_reuses_containers_when_too_few() -> None:
    chosen = SpreadPlacement(random.Random(0)).place(containers(["a", "b"]), 5, 1)
    assert len(chosen) == 5
    assert {c.id for c in chosen} == {"c0", "c1"}


def test_no_room_anywhere_is_a_clear_error() -> None:
    with pytest.raises(ResourceExhausted, match="No live container has room"):
        SpreadPlacement().place(containers(["a"], free=10), 5, 1000)
    with pytest.raises(ResourceExhausted):
        SpreadPlacement().place([], 5, 1)
