"""One exception hierarchy for DynoStore, mapped one-to-one onto gRPC codes.

Servers raise these; the RPC layer aborts the call with the class's status
code, and the client raises the same class again from the status it receives.
"""

from __future__ import annotations

import grpc


class DynoStoreError(Exception):
    """Root of every error DynoStore raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

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


def error_for_status(code: grpc.StatusCode, message: str) -> DynoStoreError:
    """Return the DynoStore error for a gRPC status code and message."""
    cls = _BY_CODE.get(code, DynoStoreError)
    return cls(message or f"The server answered {code.name}.")


_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_for_code(code: int, message: str) -> DynoStoreError:
    """Return the DynoStore error for a numeric status code (as carried in batch results)."""
    return error_for_status(_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), message)
