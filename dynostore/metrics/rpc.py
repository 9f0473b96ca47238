"""Count and time every RPC a server answers, by service, method and final status code.

:class:`MetricsInterceptor` goes first in a server's interceptors, outside
:class:`~dynostore.rpc.errors.ErrorMappingInterceptor`, so it sees the status
that mapping chose: a call that returned is ``OK`` (or the code the servicer
set), an aborted one has the abort's code, a cancelled one is ``CANCELLED``.
A stream counts once, when it ends. Methods no servicer registered are not
counted (grpc answers them ``UNIMPLEMENTED`` itself), so the labels take only
the values the servers define. Synchronous handlers (none of DynoStore's) are
passed through uncounted.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from dynostore.metrics import RPC_DURATION, RPC_REQUESTS
from dynostore.rpc.errors import WrappingInterceptor

Behavior = Callable[[Any, Any], Any]


def _code(context: grpc.aio.ServicerContext, default: str) -> str:
    """The name of the status code the call ended with (``default`` when none was set)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # some grpc versions give the number
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), default)
    return default


class _Recorder:
    """Records the calls of one method."""

    def __init__(self, method: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self.labels = (service, name)

    def record(self, started: float, context: grpc.aio.ServicerContext, default: str) -> None:
        code = _code(context, default)
        RPC_REQUESTS.labels(*self.labels, code).inc()
        RPC_DURATION.labels(*self.labels, code).observe(time.perf_counter() - started)


def _outcome(exc: BaseException) -> str:
    """The code to record for a call that raised ``exc`` and set no code."""
    return "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"


def _wrap(behavior: Behavior, recorder: _Recorder) -> Behavior:
    """``behavior``, recorded, of the same kind (grpc.aio tells the kinds apart)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            default = "OK"
            try:
                async for reply in behavior(request, context):
                    yield reply
            except BaseException as exc:
                default = _outcome(exc)
                raise
            finally:
                recorder.record(started, context, default)

        return stream

    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            default = "OK"
            try:
                return await behavior(request, context)
            except BaseException as exc:
                default = _outcome(exc)
                raise
            finally:
                recorder.record(started, context, default)

        return call

    return behavior


class MetricsInterceptor(WrappingInterceptor):
    """Record ``dynostore_rpc_requests_total`` and ``dynostore_rpc_duration_seconds`` for every call."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler with every behavior counted and timed."""
        recorder = _Recorder(method)
        changes = {
            kind: _wrap(getattr(handler, kind), recorder)
            for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
            if getattr(handler, kind) is not None
        }
        return handler._replace(**changes)
