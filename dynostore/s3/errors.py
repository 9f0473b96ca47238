"""S3's error codes, and the fabric's errors mapped onto them."""

from __future__ import annotations

from dynostore import errors


class S3Error(Exception):
    """An S3 error response: its code, HTTP status and message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        """Describe the error ``code`` (S3's name) with ``message``, answered with HTTP ``status``."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def no_such_bucket(bucket: str) -> S3Error:
    """The bucket does not exist (or is not readable by the caller)."""
    return S3Error("NoSuchBucket", f"The bucket {bucket!r} does not exist.", 404)


def no_such_key(key: str) -> S3Error:
    """The object does not exist."""
    return S3Error("NoSuchKey", f"The key {key[:200]!r} does not exist.", 404)


def access_denied(message: str = "Access Denied") -> S3Error:
    """The caller may not do this."""
    return S3Error("AccessDenied", message, 403)


def invalid_argument(message: str) -> S3Error:
    """A malformed request parameter."""
    return S3Error("InvalidArgument", message, 400)


def from_fabric(exc: errors.DynoStoreError) -> S3Error:
    """The S3 error that stands for a fabric error."""
    message = str(exc)
    if isinstance(exc, errors.NotFound):
        return S3Error("NoSuchKey", message, 404)
    if isinstance(exc, errors.PermissionDenied | errors.Unauthenticated):
        return access_denied(message)
    if isinstance(exc, errors.InvalidArgument):
        return invalid_argument(message)
    if isinstance(exc, errors.ResourceExhausted):
        return S3Error("QuotaExceeded", message, 403)
    if isinstance(exc, errors.AlreadyExists):
        return S3Error("OperationAborted", message, 409)
    if isinstance(exc, errors.Unavailable | errors.DeadlineExceeded):
        return S3Error("ServiceUnavailable", message, 503)
    return S3Error("InternalError", "We encountered an internal error. Please try again.", 500)
