"""Placement policies: which container stores which chunk of an object."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from dynostore._proto.common_pb2 import ContainerInfo
from dynostore.errors import ResourceExhausted


@runtime_checkable
class PlacementPolicy(Protocol):
    """Chooses a container for each of the ``n`` chunks of an object."""

    def place(self, containers: Sequence[ContainerInfo], n: int, chunk_bytes: int) -> list[ContainerInfo]:
        """Return ``n`` containers; entry ``i`` receives chunk ``i``."""
        ...


class SpreadPlacement:
    """Distinct containers where possible, spread over sites, weighted by free space.

    Each chunk goes to the site holding the fewest chunks of this object so
    far; within a site, containers are drawn at random with probability
    proportional to free space. Containers without room for a chunk are
    skipped. With fewer containers than chunks, containers are reused (the
    object then survives fewer losses).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        """Use ``rng`` for the weighted draws (a seeded one makes tests repeatable)."""
        self._rng = rng or random.Random()

    def place(self, containers: Sequence[ContainerInfo], n: int, chunk_bytes: int) -> list[ContainerInfo]:
        """Choose containers for ``n`` chunks of ``chunk_bytes`` each.

        Raises:
            ResourceExhausted: no container is live and has room.
        """
        usable = [c for c in containers if c.capacity_bytes == 0 or c.free_bytes >= chunk_bytes]
        if not usable:
            raise ResourceExhausted(
                f"No live container has room for a chunk of {chunk_bytes} bytes "
                f"({len(containers)} containers registered)."
            )
        chosen: list[ContainerInfo] = []
        while len(chosen) < n:
            chosen.extend(self._round(usable, n - len(chosen)))
        return chosen

    def _round(self, usable: Sequence[ContainerInfo], n: int) -> list[ContainerInfo]:
        """Up to ``n`` distinct containers, balanced over sites."""
        by_site: dict[str, list[ContainerInfo]] = defaultdict(list)
        for c in usable:
            by_site[c.site].append(c)
        used_per_site: dict[str, int] = dict.fromkeys(by_site, 0)
        out: list[ContainerInfo] = []
        while len(out) < n and any(by_site.values()):
            open_sites = [s for s, cs in by_site.items() if cs]
            fewest = min(used_per_site[s] for s in open_sites)
            site = self._rng.choice([s for s in open_sites if used_per_site[s] == fewest])
            candidates = by_site[site]
            weights = [max(c.free_bytes, 1) for c in candidates]
            pick = self._rng.choices(range(len(candidates)), weights=weights)[0]
            out.append(candidates.pop(pick))
            used_per_site[site] += 1
        return out
