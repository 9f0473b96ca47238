"""Control calls retry an unavailable gateway with backoff, and nothing else."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dynostore.client.pipeline import Pipeline, _RetriedIntoError
from dynostore.errors import AlreadyExists, DynoStoreError, InvalidArgument, Unavailable


def failure(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="boom")


class Flaky:
    def __init__(self, failures: list[grpc.StatusCode]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, request: object, **kwargs: object) -> str:
        self.calls += 1
        if self.failures:
            raise failure(self.failures.pop(0))
        return "ok"


def call(pipeline: Pipeline, method: Flaky) -> str:
    return asyncio.run(pipeline.call(method, object(), "token"))


def test_unavailable_is_retried_until_it_works() -> None:
    method = Flaky([grpc.StatusCode.UNAVAILABLE] * 2)
    assert call(Pipeline("127.0.0.1:1", retries=3), method) == "ok"
    assert method.calls == 3


def test_retries_run_out() -> None:
    method = Flaky([grpc.StatusCode.UNAVAILABLE] * 5)
    with pytest.raises(Unavailable, match="boom"):
        call(Pipeline("127.0.0.1:1", retries=2), method)
    assert method.calls == 3


def test_other_errors_are_not_retried() -> None:
    method = Flaky([grpc.StatusCode.INVALID_ARGUMENT])
    with pytest.raises(InvalidArgument):
        call(Pipeline("127.0.0.1:1", retries=3), method)
    assert method.calls == 1


def test_backoff_waits_longer_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits double from 0.1 s, with up to as much again of jitter; none after the last try."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    method = Flaky([grpc.StatusCode.UNAVAILABLE] * 9)
    with pytest.raises(Unavailable):
        call(Pipeline("127.0.0.1:1", retries=4), method)
    assert method.calls == 5
    assert len(waits) == 4
    for attempt, wait in enumerate(waits):
        assert 0.1 * 2**attempt <= wait <= 0.2 * 2**attempt


class LandedThenLost:
    """CommitPut whose first attempt lands but loses its answer; the retry finds the key taken."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: object, **kwargs: object) -> str:
        self.calls += 1
        if self.calls == 1:
            raise failure(grpc.StatusCode.UNAVAILABLE)
        raise failure(grpc.StatusCode.ALREADY_EXISTS)


def test_a_retry_that_meets_its_own_landed_commit_is_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """AlreadyExists on a retry raises _RetriedIntoError carrying it: the caller must find out whose it is."""
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    method = LandedThenLost()
    with pytest.raises(_RetriedIntoError) as raised:
        asyncio.run(Pipeline("127.0.0.1:1").call(method, object(), "token", tolerate_after_retry=DynoStoreError))
    assert isinstance(raised.value.error, AlreadyExists)
    assert method.calls == 2
    method = LandedThenLost()  # without tolerance, the AlreadyExists of the retry is what the caller sees
    with pytest.raises(AlreadyExists):
        asyncio.run(Pipeline("127.0.0.1:1").call(method, object(), "token"))


async def _no_sleep(seconds: float) -> None:
    return None


def test_a_call_cancelled_by_a_gateway_shutting_down_is_retried() -> None:
    method = Flaky([grpc.StatusCode.CANCELLED])
    assert call(Pipeline("127.0.0.1:1", retries=3), method) == "ok"
    assert method.calls == 2
