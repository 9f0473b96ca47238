"""The error hierarchy, its mapping from status codes, and the server interceptor (in-process server)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from dynostore import errors
from dynostore.rpc import from_rpc_error, start_server
from dynostore.rpc.errors import LogLimiter


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (errors.NotFound, KeyError),
        (errors.PermissionDenied, PermissionError),
        (errors.InvalidArgument, ValueError),
        (errors.Unavailable, ConnectionError),
        (errors.DeadlineExceeded, TimeoutError),
    ],
)
def test_errors_are_also_builtin_errors(cls: type[errors.DynoStoreError], base: type[Exception]) -> None:
    assert issubclass(cls, base)
    assert issubclass(cls, errors.DynoStoreError)


def test_every_class_maps_back_from_its_code() -> None:
    for cls in errors.DynoStoreError.__subclasses__():
        again = errors.error_for_status(cls.code, "message")
        assert type(again) is cls
        assert str(again) == "message"


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK], ids=lambda c: c.name)
def test_every_status_code_maps_to_a_subclass(code: grpc.StatusCode) -> None:
    for message in ("The server says why.", ""):
        err = errors.error_for_status(code, message)
        assert type(err) is not errors.DynoStoreError
        assert type(err) in errors.DynoStoreError.__subclasses__()
        assert str(err).endswith(".")
        assert message in str(err)
        number = errors.error_for_code(code.value[0], message)
        assert type(number) is type(err)
        assert str(number) == str(err)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.CANCELLED, errors.Unavailable),
        (grpc.StatusCode.UNKNOWN, errors.Internal),
        (grpc.StatusCode.ABORTED, errors.FailedPrecondition),
        (grpc.StatusCode.OUT_OF_RANGE, errors.InvalidArgument),
        (grpc.StatusCode.UNIMPLEMENTED, errors.FailedPrecondition),
    ],
)
def test_codes_without_a_class_take_the_closest(code: grpc.StatusCode, cls: type[errors.DynoStoreError]) -> None:
    assert type(errors.error_for_status(code, "")) is cls


def test_a_cancelled_call_says_the_server_cancelled_it() -> None:
    err = errors.error_for_status(grpc.StatusCode.CANCELLED, "Cancelled")
    assert isinstance(err, ConnectionError)
    assert "server cancelled the call" in str(err)
    assert "shutting down" in str(err)
    assert str(err).endswith("Cancelled")


def test_an_unknown_numeric_code_is_internal() -> None:
    assert type(errors.error_for_code(999, "What?")) is errors.Internal


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode | None, details: str | None) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details


def test_from_rpc_error_never_gives_the_root() -> None:
    assert type(from_rpc_error(_Failed(grpc.StatusCode.CANCELLED, None))) is errors.Unavailable
    assert type(from_rpc_error(_Failed(None, None))) is errors.Internal
    assert type(from_rpc_error(grpc.RpcError())) is errors.Internal
    assert str(from_rpc_error(_Failed(grpc.StatusCode.NOT_FOUND, "No object x."))) == "No object x."


def test_not_found_message_is_not_quoted() -> None:
    assert str(errors.NotFound("No object has the key x.")) == "No object has the key x."


def test_log_limiter_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    limiter = LogLimiter(10.0, clock=lambda: now[0])
    assert limiter.allow("a") == 0
    assert [limiter.allow("a") for _ in range(5)] == [None] * 5
    assert limiter.allow("b") == 0
    now[0] += 10.0
    assert limiter.allow("a") == 5
    assert limiter.allow("a") is None
    now[0] += 10.0
    assert limiter.allow("a") == 1


# The interceptor, on a real (in-process) grpc.aio server --------------------------------

SERVICE = "dynostore.test.Probe"
PARSE = health_pb2.HealthCheckRequest.FromString
GARBAGE = b"\xff\xff\xff"


async def _boom(request: Any, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("a bug with a secret in its message")


async def _chosen(request: Any, context: grpc.aio.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.UNIMPLEMENTED)
    context.set_details("Not here.")
    raise NotImplementedError("Not here.")


def _chosen_sync(request: Any, context: grpc.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
    context.set_details("Too many.")
    raise RuntimeError("Too many.")


def _not_implemented_sync(request: Any, context: grpc.ServicerContext) -> bytes:
    raise NotImplementedError


def _aborts_sync(request: Any, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "No such thing.")
    raise AssertionError("unreachable")


def _stream_sync(request: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"one"
    raise errors.DataLoss("The second one is lost.")


async def _count_async(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> bytes:
    return str(len([r async for r in requests])).encode()


def _count_sync(requests: Iterator[Any], context: grpc.ServicerContext) -> bytes:
    return str(len(list(requests))).encode()


async def _echo_async(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield b"echo"


def _echo_sync(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[bytes]:
    for _ in requests:
        yield b"echo"


def _handlers() -> dict[str, grpc.RpcMethodHandler]:
    unary, stream_unary = grpc.unary_unary_rpc_method_handler, grpc.stream_unary_rpc_method_handler
    return {
        "Boom": unary(_boom, request_deserializer=PARSE),
        "Chosen": unary(_chosen, request_deserializer=PARSE),
        "ChosenSync": unary(_chosen_sync, request_deserializer=PARSE),
        "NotImplementedSync": unary(_not_implemented_sync, request_deserializer=PARSE),
        "AbortsSync": unary(_aborts_sync, request_deserializer=PARSE),
        "StreamSync": grpc.unary_stream_rpc_method_handler(_stream_sync, request_deserializer=PARSE),
        "CountAsync": stream_unary(_count_async, request_deserializer=PARSE),
        "CountSync": stream_unary(_count_sync, request_deserializer=PARSE),
        "EchoAsync": grpc.stream_stream_rpc_method_handler(_echo_async, request_deserializer=PARSE),
        "EchoSync": grpc.stream_stream_rpc_method_handler(_echo_sync, request_deserializer=PARSE),
    }


def _serve(test: Callable[[grpc.aio.Channel], Awaitable[None]]) -> None:
    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, _handlers()),))

    async def go() -> None:
        server, port = await start_server("127.0.0.1:0", register, [SERVICE])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await test(channel)
        finally:
            await server.stop(None)

    asyncio.run(go())


async def _status(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


def test_unexpected_errors_are_internal_and_logged_in_full_once(caplog: pytest.LogCaptureFixture) -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        for _ in range(20):
            code, details = await _status(channel.unary_unary(f"/{SERVICE}/Boom")(b""))
            assert code == grpc.StatusCode.INTERNAL
            assert "secret" not in details

    with caplog.at_level(logging.INFO, logger="dynostore.rpc.errors"):
        _serve(test)
    records = [r for r in caplog.records if r.name == "dynostore.rpc.errors"]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert "Boom" in records[0].getMessage()


def test_codes_the_servicer_chose_are_kept(caplog: pytest.LogCaptureFixture) -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        missing = f"The server does not implement /{SERVICE}/NotImplementedSync."
        expected = {
            "Chosen": (grpc.StatusCode.UNIMPLEMENTED, "Not here."),
            "ChosenSync": (grpc.StatusCode.RESOURCE_EXHAUSTED, "Too many."),
            "NotImplementedSync": (grpc.StatusCode.UNIMPLEMENTED, missing),
            "AbortsSync": (grpc.StatusCode.NOT_FOUND, "No such thing."),
        }
        for name, status in expected.items():
            assert await _status(channel.unary_unary(f"/{SERVICE}/{name}")(b"")) == status, name
        call = channel.unary_stream(f"/{SERVICE}/StreamSync")(b"")
        assert await call.read() == b"one"
        assert await _status(call.read()) == (grpc.StatusCode.DATA_LOSS, "The second one is lost.")

    with caplog.at_level(logging.INFO):
        _serve(test)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_malformed_requests_are_invalid_arguments_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    valid = health_pb2.HealthCheckRequest(service="x").SerializeToString()
    invalid = (
        grpc.StatusCode.INVALID_ARGUMENT,
        "The request is not a valid grpc.health.v1.HealthCheckRequest message.",
    )

    async def test(channel: grpc.aio.Channel) -> None:
        for _ in range(10):
            assert await _status(channel.unary_unary(f"/{SERVICE}/Boom")(GARBAGE)) == invalid
            assert await _status(channel.unary_unary(f"/{SERVICE}/ChosenSync")(GARBAGE)) == invalid
            for name in ("CountAsync", "CountSync"):
                assert await channel.stream_unary(f"/{SERVICE}/{name}")(iter([valid, valid])) == b"2"
                assert await _status(channel.stream_unary(f"/{SERVICE}/{name}")(iter([valid, GARBAGE]))) == invalid
            for name in ("EchoAsync", "EchoSync"):
                call = channel.stream_stream(f"/{SERVICE}/{name}")(iter([valid, valid, GARBAGE, valid]))
                assert await call.read() == b"echo"
                assert await call.read() == b"echo"
                assert await _status(call.read()) == invalid

    with caplog.at_level(logging.INFO):
        _serve(test)
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 6, caplog.text
    assert all(r.exc_info is None and "malformed" in r.getMessage() for r in records)
    assert "Traceback" not in caplog.text
