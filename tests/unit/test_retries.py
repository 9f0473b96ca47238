"""Control calls retry an unavailable gateway with backoff, and nothing else."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dynostore.client.pipeline import Pipeline
from dynostore.errors import InvalidArgument, Unavailable


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
