"""Map DynoStore errors to gRPC status codes on servers, and back on clients.

On a server, :class:`ErrorMappingInterceptor` wraps every method:

* a :class:`~dynostore.errors.DynoStoreError` aborts the call with its code;
* a code the servicer chose itself (``context.set_code`` before raising, as
  the generated "Method not implemented!" stubs do; ``context.abort``) is kept,
  and a bare ``NotImplementedError`` answers ``UNIMPLEMENTED``;
* a request that does not parse (garbage bytes, a truncated message), whether
  it is the request of a unary call or any message of a request stream, is
  answered ``INVALID_ARGUMENT`` (the request deserializer returns
  :data:`MALFORMED` instead of raising; the request iterator handed to the
  servicer checks for it, but ``context.read()`` would return it as is);
* anything else is a bug: ``INTERNAL``, with no details sent but the call's
  request id (see :mod:`.requests`), which every log line of the call carries.

Clients choose what a server logs, so the log takes at most one line per
method and :data:`LOG_INTERVAL` for malformed requests (a short line), and one
traceback per method, exception type and interval for unexpected errors; each
line counts the ones left out since the last.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Hashable, Iterable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor_pool

from dynostore.errors import DynoStoreError, error_for_status
from dynostore.rpc.requests import current_request_id, from_metadata, set_request_id

log = logging.getLogger(__name__)

# Seconds between two log lines about the same kind of bad call to the same method.
LOG_INTERVAL = 60.0
# Wrapped handlers kept, one per method (a bound against handlers made up per call).
_MAX_CACHED = 1024
Behavior = Callable[[Any, Any], Any]


class _Malformed:
    """What the request deserializer returns for bytes it cannot parse."""

    def __repr__(self) -> str:
        return "<malformed request>"


MALFORMED = _Malformed()


class _MalformedStreamError(Exception):
    """A malformed message in the request stream of a synchronous handler (see ``_Guard._checked_sync``)."""


class LogLimiter:
    """Let one log line per key through per interval, and count the others.

    Safe to use from several threads (synchronous handlers run in a pool).
    """

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        """Allow one line per key every ``interval`` seconds of ``clock``."""
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None if the line for ``key`` must be left out, else how many were left out since the last."""
        now = self._clock()
        with self._lock:
            if now < self._next.get(key, float("-inf")):
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._next[key] = now + self.interval
            return self._suppressed.pop(key, 0)


def _left_out(count: int) -> str:
    return f" (and {count} more like it since the last such line)" if count else ""


def _request_type(method: str, deserializer: Callable[[bytes], Any] | None) -> str:
    """The full name of the request message of ``method`` (``/package.Service/Method``)."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        return str(descriptor_pool.Default().FindMethodByName(f"{service}.{name}").input_type.full_name)
    except KeyError:
        descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
        return str(getattr(descriptor, "full_name", "protobuf"))


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserializer``, returning :data:`MALFORMED` instead of raising.

    grpc.aio deserializes the request of a unary call before the handler
    runs, outside anything an interceptor can catch; it would answer
    ``UNKNOWN`` and log a traceback. A deserializer has only the client's
    bytes to go on, so whatever it raises means they are not a request.
    """

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:
            return MALFORMED

    return deserialize


class _SyncContext:
    """A synchronous handler's context that remembers the code it set and whether the call was aborted.

    grpc's synchronous context cannot tell the code back, unlike the
    asynchronous one; everything else goes to the real context.
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self.aborted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._context.set_code(code)

    def set_details(self, details: str) -> None:
        self._details = details
        self._context.set_details(details)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def abort(self, code: grpc.StatusCode, details: str = "", *args: Any, **kwargs: Any) -> NoReturn:
        self.aborted = True
        self._context.abort(code, details, *args, **kwargs)
        raise AssertionError("context.abort returned.")  # pragma: no cover - it always raises


class _Guard:
    """The error handling of one method."""

    def __init__(self, method: str, request_type: str, request_streaming: bool, limiter: LogLimiter) -> None:
        self.method = method
        self.invalid = f"The request is not a valid {request_type} message."
        self.request_streaming = request_streaming
        self._limiter = limiter

    def _malformed(self, context: Any) -> None:
        """Log one short line (rate-limited) about a request that did not parse."""
        left_out = self._limiter.allow(("malformed", self.method))
        if left_out is not None:
            try:
                peer = context.peer()
            except Exception:
                peer = "an unknown peer"
            log.warning("Rejected a malformed request to %s from %s%s.", self.method, peer, _left_out(left_out))

    def _refused(self, exc: DynoStoreError) -> None:
        """One line (rate-limited per method and code) about a call answered with an error."""
        left_out = self._limiter.allow(("refused", self.method, exc.code))
        if left_out is not None:
            log.info("%s answered %s: %s%s", self.method, exc.code.name, str(exc)[:300], _left_out(left_out))

    def _failure(self, exc: Exception, chosen: Any, details: str) -> tuple[grpc.StatusCode, str]:
        """The status to answer for ``exc``, given the code and details the servicer set, if any."""
        if isinstance(exc, DynoStoreError):
            self._refused(exc)
            return exc.code, str(exc)
        if isinstance(chosen, grpc.StatusCode) and chosen is not grpc.StatusCode.OK:
            return chosen, details or f"The server answered {chosen.name}."
        if isinstance(exc, NotImplementedError):
            return grpc.StatusCode.UNIMPLEMENTED, f"The server does not implement {self.method}."
        left_out = self._limiter.allow(("unexpected", self.method, type(exc)))
        if left_out is not None:
            log.error("Unexpected error in %s%s", self.method, _left_out(left_out), exc_info=exc)
        return grpc.StatusCode.INTERNAL, f"Internal server error; see the server log (request {current_request_id()})."

    # grpc.aio handlers --------------------------------------------------------

    async def admit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The request to hand the servicer: a checked stream, or the request once it parsed.

        The call's request id (sent by the caller, else a new one) is current from here on.
        """
        set_request_id(from_metadata(context.invocation_metadata()))
        if self.request_streaming:
            return self._checked(request, context)
        if request is MALFORMED:
            self._malformed(context)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.invalid)
        return request

    async def _checked(self, requests: AsyncIterable[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if request is MALFORMED:
                # Abort here, not in the handler: whatever the servicer does
                # with the error, the client gets this status.
                self._malformed(context)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.invalid)
            yield request

    async def fail(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        """Abort the call for ``exc``; return if it has its status already."""
        if context.done():
            # Aborted already (a malformed message in the request stream, or
            # an abort the servicer caught); grpc ends the call quietly.
            log.debug("%s raised %r after its status was sent.", self.method, exc)
            return
        code, details = self._failure(exc, context.code(), context.details())
        await context.abort(code, details)

    # synchronous handlers (run in grpc's thread pool) ------------------------

    def admit_sync(self, request: Any, context: _SyncContext) -> Any:
        """Like :meth:`admit`, for a synchronous handler."""
        set_request_id(from_metadata(context.invocation_metadata()))
        if self.request_streaming:
            return self._checked_sync(request, context)
        if request is MALFORMED:
            self._malformed(context)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.invalid)
        return request

    def _checked_sync(self, requests: Iterable[Any], context: _SyncContext) -> Iterator[Any]:
        for request in requests:
            if request is MALFORMED:
                # No abort from here: this thread would race the event loop
                # still writing the handler's replies; fail_sync answers.
                self._malformed(context)
                raise _MalformedStreamError
            yield request

    def fail_sync(self, context: _SyncContext, exc: Exception, streaming: bool) -> None:
        """Like :meth:`fail`, for a synchronous handler, that streams its replies if ``streaming``.

        A stream is not aborted but ends with the status set: grpc.aio sends
        it after the replies the handler yielded, which may still be on their
        way (an abort from the handler's thread would race their writes).
        """
        if context.aborted:
            log.debug("%s raised %r after its status was sent.", self.method, exc)
            return
        if isinstance(exc, _MalformedStreamError):
            code, details = grpc.StatusCode.INVALID_ARGUMENT, self.invalid
        else:
            code, details = self._failure(exc, context.code(), context.details())
        if not streaming:
            context.abort(code, details)
        context.set_code(code)
        context.set_details(details)


def _wrap(behavior: Behavior, guard: _Guard, response_streaming: bool) -> Behavior:
    """``behavior`` with ``guard`` around it, of the same kind (grpc.aio tells the kinds apart)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request = await guard.admit(request, context)
            try:
                async for reply in behavior(request, context):
                    yield reply
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await guard.fail(context, exc)

        return stream

    if inspect.iscoroutinefunction(behavior):
        # A unary reply, or a stream the handler writes with context.write.

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request = await guard.admit(request, context)
            try:
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await guard.fail(context, exc)
                return None

        return call

    if response_streaming:

        def sync_stream(request: Any, context: Any) -> Iterator[Any]:
            recording = _SyncContext(context)
            request = guard.admit_sync(request, recording)
            try:
                yield from behavior(request, recording)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                guard.fail_sync(recording, exc, streaming=True)

        return sync_stream

    def sync_call(request: Any, context: Any) -> Any:
        recording = _SyncContext(context)
        request = guard.admit_sync(request, recording)
        try:
            return behavior(request, recording)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            guard.fail_sync(recording, exc, streaming=False)
            return None

    return sync_call


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps each method's handler once (:meth:`wrap`), cached per method."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method)
        if len(self._handlers) < _MAX_CACHED:
            self._handlers[method] = (handler, wrapped)
        return wrapped

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler to serve ``method`` with instead of ``handler``."""
        raise NotImplementedError


class ErrorMappingInterceptor(WrappingInterceptor):
    """Answer each failure with its status code; see the module docstring for the rules."""

    def __init__(self, log_interval: float = LOG_INTERVAL) -> None:
        """Log at most one line per method and kind of failure every ``log_interval`` seconds."""
        super().__init__()
        self._limiter = LogLimiter(log_interval)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """Tolerant deserializer, guarded behavior (see the module docstring)."""
        deserializer = handler.request_deserializer
        guard = _Guard(method, _request_type(method, deserializer), handler.request_streaming, self._limiter)
        changes: dict[str, Any] = {}
        if deserializer is not None:
            changes["request_deserializer"] = _tolerant(deserializer)
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is not None:
                changes[kind] = _wrap(behavior, guard, handler.response_streaming)
        return handler._replace(**changes)


def from_rpc_error(exc: grpc.RpcError) -> DynoStoreError:
    """Return the DynoStore error that a failed call stands for (a subclass for every code)."""
    code = (exc.code() if hasattr(exc, "code") else None) or grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return error_for_status(code, details or "")
