"""Request ids: one id per SDK operation, carried from the client through gateways and containers.

A client operation runs in a :func:`request_scope`; every call it makes sends
the id as the ``x-request-id`` gRPC metadata entry. A server takes the id it
was sent (or makes one), keeps it for the call's duration, passes it on with
the calls it makes for it (the relay, chunk deletions), puts it in every log
line the call writes and in the details of an internal error. So one failed
put can be followed across processes: ``grep ID`` in each log.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

METADATA_KEY = "x-request-id"
# What a client may send as an id (anything else is replaced by a new one).
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("dynostore_request_id", default=None)


def new_request_id() -> str:
    """A fresh id: 16 hex digits."""
    return secrets.token_hex(8)


def current_request_id() -> str | None:
    """The id of the operation this code runs for, if any."""
    return _current.get()


@contextmanager
def request_scope(request_id: str | None = None) -> Iterator[str]:
    """Run the block as one operation: with ``request_id``, the current one if there is one, or a new one."""
    chosen = request_id or _current.get() or new_request_id()
    token = _current.set(chosen)
    try:
        yield chosen
    finally:
        _current.reset(token)


def set_request_id(request_id: str) -> None:
    """Make ``request_id`` current for the rest of this task (a server does this at the start of each call)."""
    _current.set(request_id)


def request_metadata() -> tuple[tuple[str, str], ...]:
    """The metadata entry that passes the current id on (none outside an operation)."""
    current = _current.get()
    return ((METADATA_KEY, current),) if current else ()


def from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The id a caller sent, if it is a sensible one; else a new id."""
    for name, value in metadata or ():
        if name == METADATA_KEY:
            text = str(value)
            if _VALID.fullmatch(text):
                return text
            break
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """Give every log record the current request id (``-`` outside a request) as ``record.request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get() or "-"
        return True


class CallGoneFilter(logging.Filter):
    """grpc's report of a reply it could not send, its caller gone, as one info line without a traceback.

    When a caller cancels a call (a hedged read giving up on a loser), times
    out or disconnects just as its servicer returns, grpc's server logs
    ``ExecuteBatchError raised in core by servicer method [...]`` as an error
    with its traceback: nothing went wrong on the server, and the caller
    already has its answer.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("ExecuteBatchError raised in core"):
            return True
        method = message.partition("[")[2].rstrip("]") or "?"
        record.msg, record.args = f"The reply to {method} was not sent: its caller had gone.", ()
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


# The logger grpc's server reports through.
GRPC_CORE_LOGGER = "grpc._cython.cygrpc"

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or _current.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: int, log_format: str = "text") -> None:
    """Log to stderr at ``level``, as text lines or (``json``) one JSON object per line, with request ids."""
    if log_format not in ("text", "json"):
        raise ValueError(f"The log format is text or json, not {log_format!r}.")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    grpc_core = logging.getLogger(GRPC_CORE_LOGGER)
    if not any(isinstance(f, CallGoneFilter) for f in grpc_core.filters):
        grpc_core.addFilter(CallGoneFilter())
