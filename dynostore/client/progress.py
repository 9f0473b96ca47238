"""Progress reporting for transfers: a callback, or a tqdm bar when asked with ``True``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressArg = bool | Callable[[int], None] | None


@contextmanager
def progress_callback(progress: ProgressArg, total: int, desc: str) -> Iterator[Callable[[int], None] | None]:
    """Yield a callback taking byte counts: the caller's, a tqdm bar's (``True``), or None."""
    if progress is None or progress is False:
        yield None
    elif progress is True:
        from tqdm import tqdm

        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc) as bar:
            yield bar.update
    else:
        yield progress
