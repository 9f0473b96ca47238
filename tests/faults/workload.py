"""The workload threads of a fault scenario: puts of every kind, replacements, reads, evicts, repairs, in the ledger."""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from dynostore.client import Client
from dynostore.errors import AlreadyExists, NotFound
from tests.faults.ledger import CATALOG, INLINE_MAX, SEGMENT, Ledger, MiB, error_name

WORKERS = 6
# Puts stop after this many objects (reads, evicts and repairs go on), and after
# this many large ones, so that the checks after the run stay short.
MAX_OBJECTS = 150
MAX_LARGE = 14
MAX_OPS_PER_WORKER = 300


def object_size(rng: random.Random, kind: str) -> int:
    """A size of the given kind: ``inline`` (no chunks), ``whole`` (one segment) or ``large`` (streamed)."""
    if kind == "inline":
        return rng.choice([0, 1, INLINE_MAX, rng.randint(2, INLINE_MAX)])
    if kind == "whole":
        return rng.choice([INLINE_MAX + 1, SEGMENT, rng.randint(INLINE_MAX + 1, 256 * 1024), rng.randint(1, SEGMENT)])
    return rng.choice([SEGMENT + 1, rng.randint(SEGMENT + 1, 7 * MiB)])


class Drawing(threading.Thread):
    """A workload thread: draws operations from ``ops`` by weight until ``deadline`` or ``max_ops``.

    A crash of the thread is a violation in ``ledger``.
    """

    def __init__(self, name: str, ledger: Ledger, seed: int, deadline: float, max_ops: int) -> None:
        super().__init__(name=name, daemon=True)
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.max_ops = max_ops
        self.ops: list[tuple[Callable[[], None], int]] = []

    def run(self) -> None:
        try:
            for _ in range(self.max_ops):
                if time.monotonic() >= self.deadline:
                    return
                (op,) = self.rng.choices([o for o, _ in self.ops], weights=[w for _, w in self.ops])
                op()
        except BaseException as exc:
            self.ledger.violation(f"{self.name} crashed: {exc!r}\n{traceback.format_exc()}")


class Worker(Drawing):
    """One thread of the SDK workload: puts of every kind, replacements, reads, evicts and repairs."""

    def __init__(
        self, number: int, client: Client, token: str, ledger: Ledger, seed: int, files: Path, deadline: float
    ) -> None:
        super().__init__(f"fault-worker{number}", ledger, seed, deadline, MAX_OPS_PER_WORKER)
        self.number = number
        self.client = client
        self.token = token
        self.files = files
        self._made = 0
        self.ops = [
            (self.put, 18),
            (self.put_batch, 7),
            (self.put_planned, 7),
            (self.put_large, 5),
            (self.replace, 6),
            (self.get, 26),
            (self.get_batch, 10),
            (self.exists, 5),
            (self.evict, 5),
            (self.repair, 6),
            (self.read_unplaced, 3),
        ]

    # helpers

    def _next_name(self) -> str:
        self._made += 1
        return f"w{self.number}-{self._made}"

    def _room(self, count: int = 1, large: bool = False) -> bool:
        """Whether the run may put ``count`` more objects."""
        if large and self.ledger.large >= MAX_LARGE:
            return False
        return self.ledger.objects + count <= MAX_OBJECTS

    def _kind(self) -> str:
        return self.rng.choices(["inline", "whole", "large"], weights=[3, 6, 1])[0]

    # puts

    def put(self) -> None:
        kind = self._kind()
        if not self._room(large=kind == "large"):
            return self.get()
        data = self.rng.randbytes(object_size(self.rng, kind))
        attempt = self.ledger.begin(self._next_name(), data)
        try:
            key = self.client.put(data=data, token_user=self.token, catalog=CATALOG, name=attempt.name)
        except Exception as exc:
            self.ledger.put_failed("put", [attempt], exc)
        else:
            self.ledger.returned("put", attempt, key)

    def put_batch(self) -> None:
        count = self.rng.randint(2, 6)
        if not self._room(count):
            return self.get_batch()
        datas = [self.rng.randbytes(object_size(self.rng, self.rng.choice(["inline", "whole"]))) for _ in range(count)]
        attempts = [self.ledger.begin(self._next_name(), data) for data in datas]
        names = [a.name for a in attempts]
        try:
            keys = self.client.put_batch(datas, token_user=self.token, catalog=CATALOG, names=names)
        except Exception as exc:
            self.ledger.put_failed("put_batch", attempts, exc)
            return
        if len(keys) != count or len(set(keys)) != count:
            self.ledger.violation(f"put_batch of {names} returned keys {keys}")
        for attempt, key in zip(attempts, keys, strict=False):
            self.ledger.returned("put_batch", attempt, key)

    def put_planned(self) -> None:
        count = self.rng.randint(1, 3)
        if not self._room(count):
            return self.get()
        try:
            reservations = self.client.plan_keys(count, token_user=self.token)
        except Exception as exc:
            self.ledger.error("plan_keys", "-", exc)
            return
        self.ledger.count("plan_keys")
        for reservation in reservations:
            kind = self._kind()
            if kind == "large" and not self._room(large=True):
                kind = "whole"
            data = self.rng.randbytes(object_size(self.rng, kind))
            attempt = self.ledger.begin(self._next_name(), data, planned=reservation.key)
            for retry in (False, True):
                op = "planned_retry" if retry else "planned"
                try:
                    key = self.client.put(
                        data=data, token_user=self.token, catalog=CATALOG, name=attempt.name, planned=reservation
                    )
                except AlreadyExists as exc:
                    attempt.error, attempt.landed = error_name(exc), retry
                    self.ledger.count(op, error_name(exc))
                    break
                except Exception as exc:
                    self.ledger.put_failed(op, [attempt], exc)
                    if retry or self.rng.random() < 0.5:
                        break  # half of the failed ones are tried again with their reservation
                else:
                    self.ledger.returned(op, attempt, key)
                    break

    def put_large(self) -> None:
        """A streamed put of several segments: from a file, or from bytes."""
        if not self._room(large=True):
            return self.get()
        data = self.rng.randbytes(object_size(self.rng, "large"))
        attempt = self.ledger.begin(self._next_name(), data)
        from_file = self.rng.random() < 0.5
        op = "put_file" if from_file else "put_large"
        path = self.files / attempt.name
        try:
            if from_file:
                path.write_bytes(data)
                key = self.client.put_file(path, token_user=self.token, catalog=CATALOG, name=attempt.name)
            else:
                key = self.client.put(data=data, token_user=self.token, catalog=CATALOG, name=attempt.name)
        except Exception as exc:
            self.ledger.put_failed(op, [attempt], exc)
        else:
            self.ledger.returned(op, attempt, key)
        finally:
            path.unlink(missing_ok=True)

    def replace(self) -> None:
        """Replace a stored object by key with new bytes of any kind (streamed ones while there is room)."""
        kind = self._kind()
        if kind == "large" and not self._room(large=True):
            kind = "whole"
        data = self.rng.randbytes(object_size(self.rng, kind))
        picked = self.ledger.replace_started(self.rng, data)
        if picked is None:
            return self.get()
        key, version = picked
        name = self.ledger.expected(key).name
        try:
            returned = self.client.put(
                data=data, token_user=self.token, catalog=CATALOG, name=name, key=key, replace=True
            )
        except Exception as exc:
            self.ledger.replace_ended(key, version, None)
            self.ledger.error("replace", key, exc)
        else:
            self.ledger.replace_ended(key, version, returned)

    # reads

    def get(self) -> None:
        key = self.ledger.pick_key(self.rng)
        if key is None:
            return
        started = time.monotonic()
        try:
            data = self.client.get(key=key, token_user=self.token)
        except NotFound:
            self.ledger.check_read("get", key, None, started)
        except Exception as exc:
            self.ledger.error("get", key, exc)
        else:
            self.ledger.check_read("get", key, data, started)

    def get_batch(self) -> None:
        keys = self.ledger.pick_keys(self.rng, self.rng.randint(2, 8))
        if (unplaced := self.ledger.pick_unplaced(self.rng)) and unplaced not in keys:
            keys.append(unplaced)
        if not keys:
            return
        started = time.monotonic()
        try:
            datas = self.client.get_batch(keys, token_user=self.token)
        except Exception as exc:
            self.ledger.error("get_batch", ",".join(keys), exc)
            return
        if len(datas) != len(keys):
            self.ledger.violation(f"get_batch of {len(keys)} keys returned {len(datas)} results")
        for key, data in zip(keys, datas, strict=False):
            self.ledger.check_read("get_batch", key, data, started)

    def exists(self) -> None:
        key = self.ledger.pick_key(self.rng)
        if key is None:
            return
        started = time.monotonic()
        try:
            found = self.client.exists(key=key, token_user=self.token)
        except Exception as exc:
            self.ledger.error("exists", key, exc)
        else:
            self.ledger.check_exists(key, found, started)

    def read_unplaced(self) -> None:
        """Read the reserved key of a planned put that raised: absent, or the object whole."""
        key = self.ledger.pick_unplaced(self.rng)
        if key is None:
            return self.get()
        started = time.monotonic()
        try:
            data = self.client.get(key=key, token_user=self.token)
        except NotFound:
            self.ledger.check_read("get_unplaced", key, None, started)
        except Exception as exc:
            self.ledger.error("get_unplaced", key, exc)
        else:
            self.ledger.check_read("get_unplaced", key, data, started)

    # evicts and repairs

    def evict(self) -> None:
        key = self.ledger.pick_key(self.rng, evictable=True)
        if key is None:
            return
        try:
            self.client.evict(key=key, token_user=self.token)
        except Exception as exc:
            self.ledger.error("evict", key, exc)
        else:
            self.ledger.evict_returned(key)

    def repair(self) -> None:
        key = self.ledger.pick_key(self.rng)
        if key is None:
            return
        try:
            self.client.repair(key, token_user=self.token, verify=True)
        except Exception as exc:
            self.ledger.error("repair", key, exc)
        else:
            self.ledger.count("repair")
