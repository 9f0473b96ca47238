"""One exception hierarchy for DynoStore, mapped one-to-one onto gRPC codes.

Servers raise these; the RPC layer aborts the call with the class's status
code, and the client raises the same class again from the status it receives.
A code that no class carries (``CANCELLED``, ``UNKNOWN``, ``ABORTED``...)
becomes the closest class, so a client never sees the bare root.
"""

from __future__ import annotations

import grpc


class DynoStoreError(Exception):
    """Root of every error DynoStore raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    # The id of the operation that failed (set by the SDK's Client): the servers' log lines about it carry it too.
    request_id: str | None = None
    # A put that failed this way may still have been committed (see docs/reliability.md).
    outcome_unknown: bool = False

    def __str__(self) -> str:
        # KeyError quotes its argument; keep messages readable for every class.
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidArgument(DynoStoreError, ValueError):
    """A request argument is malformed (bad key, name, type, range...)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DynoStoreError, KeyError):
    """The object, catalog or user does not exist (or is not visible)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DynoStoreError):
    """The thing to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(DynoStoreError, PermissionError):
    """No token, or a token that belongs to nobody."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DynoStoreError, PermissionError):
    """The token is valid but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(DynoStoreError):
    """The system is not in a state that allows the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(DynoStoreError):
    """Too little space or too many containers lost to place data."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DynoStoreError, ConnectionError):
    """A server cannot be reached now; retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DynoStoreError, TimeoutError):
    """The call did not finish in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DataLoss(DynoStoreError):
    """Stored data is corrupt or too many chunks are lost to decode."""

    code = grpc.StatusCode.DATA_LOSS


class Internal(DynoStoreError):
    """A bug or unexpected failure on a server; details are in its log."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[DynoStoreError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Unauthenticated,
        PermissionDenied,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        DataLoss,
        Internal,
    )
}


# Codes that no class carries, with the class that stands for each and what the code means.
_SUBSTITUTES: dict[grpc.StatusCode, tuple[type[DynoStoreError], str]] = {
    grpc.StatusCode.OK: (Internal, "The server failed the call but answered OK"),
    grpc.StatusCode.CANCELLED: (Unavailable, "The server cancelled the call (it may be shutting down)"),
    grpc.StatusCode.UNKNOWN: (Internal, "The server failed with an unknown error"),
    grpc.StatusCode.ABORTED: (FailedPrecondition, "The server aborted the call (a concurrent change conflicted)"),
    grpc.StatusCode.OUT_OF_RANGE: (InvalidArgument, "An argument is out of range"),
    grpc.StatusCode.UNIMPLEMENTED: (
        FailedPrecondition,
        "The server does not implement this call (it may be older than this client)",
    ),
}


def error_for_status(code: grpc.StatusCode, message: str) -> DynoStoreError:
    """Return the DynoStore error for a gRPC status code and message.

    Every code gives a subclass, never the root: the codes that no class
    carries become the closest class (``CANCELLED``, as sent by a server
    that shuts down, becomes :class:`Unavailable`; ``UNKNOWN`` becomes
    :class:`Internal`...), with a message that says what the code meant.
    """
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message or f"The server answered {code.name}.")
    cls, meaning = _SUBSTITUTES.get(code, (Internal, f"The server answered the unknown status {code}"))
    return cls(f"{meaning}: {message}" if message else f"{meaning}.")


_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_for_code(code: int, message: str) -> DynoStoreError:
    """Return the DynoStore error for a numeric status code (as carried in batch results)."""
    return error_for_status(_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), message)
