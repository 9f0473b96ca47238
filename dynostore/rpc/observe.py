"""Watch how every call a server answers ends: its method, final status code and duration.

:class:`ObservingInterceptor` wraps each method's behavior so that a recorder
hears of each call once, when it ends (a stream when it ends), with the status
the error mapping chose: a call that returned is ``OK`` (or the code the
servicer set), an aborted one has the abort's code, a cancelled one is
``CANCELLED``. Such interceptors go first in a server's interceptors, outside
:class:`~dynostore.rpc.errors.ErrorMappingInterceptor`. The metrics
(:mod:`dynostore.metrics.rpc`) and the access log (:class:`AccessLogInterceptor`)
are two. Synchronous handlers (none of DynoStore's) are passed through unobserved.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc

from dynostore.rpc.errors import WrappingInterceptor

log = logging.getLogger(__name__)
Behavior = Callable[[Any, Any], Any]


class Recorder(Protocol):
    """Hears how each call of one method ended."""

    def record(self, started: float, context: grpc.aio.ServicerContext, code: str) -> None:
        """A call that began at ``started`` (``time.perf_counter``) ended with status ``code``."""


def status_name(context: grpc.aio.ServicerContext, default: str) -> str:
    """The name of the status code the call ended with (``default`` when none was set)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # some grpc versions give the number
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), default)
    return default


def _outcome(exc: BaseException) -> str:
    """The code to record for a call that raised ``exc`` and set no code."""
    return "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"


def _observed(behavior: Behavior, recorder: Recorder) -> Behavior:
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
                recorder.record(started, context, status_name(context, default))

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
                recorder.record(started, context, status_name(context, default))

        return call

    return behavior


class ObservingInterceptor(WrappingInterceptor):
    """Tell a recorder made per method (:meth:`recorder`) how every call ended."""

    def recorder(self, method: str) -> Recorder:
        """The recorder of ``method``'s calls."""
        raise NotImplementedError

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler with every behavior observed."""
        recorder = self.recorder(method)
        changes = {
            kind: _observed(getattr(handler, kind), recorder)
            for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
            if getattr(handler, kind) is not None
        }
        return handler._replace(**changes)


class _AccessLog:
    def __init__(self, method: str) -> None:
        self.method = method

    def record(self, started: float, context: grpc.aio.ServicerContext, code: str) -> None:
        log.info("%s %s %.1f ms", self.method, code, 1000 * (time.perf_counter() - started))


class AccessLogInterceptor(ObservingInterceptor):
    """One log line per call: method, final status, duration (and, through the log format, its request id)."""

    def recorder(self, method: str) -> Recorder:
        """An access-log writer for ``method``."""
        return _AccessLog(method)
