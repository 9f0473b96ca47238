"""Request ids: what a server accepts from a caller, and how log lines carry them."""

from __future__ import annotations

import io
import json
import logging

from dynostore.rpc.channels import auth_metadata
from dynostore.rpc.requests import (
    GRPC_CORE_LOGGER,
    METADATA_KEY,
    CallGoneFilter,
    JsonFormatter,
    RequestIdFilter,
    current_request_id,
    from_metadata,
    request_scope,
)


def test_a_sensible_id_is_kept_and_anything_else_replaced() -> None:
    assert from_metadata([("authorization", "x"), (METADATA_KEY, "put-42.a:b")]) == "put-42.a:b"
    for hostile in ("", "x" * 65, "a b", "../etc", "id\nforged log line", "☃"):
        made = from_metadata([(METADATA_KEY, hostile)])
        assert made != hostile
        assert len(made) == 16
    assert len(from_metadata(None)) == 16


def test_scopes_nest_and_calls_carry_the_id() -> None:
    assert current_request_id() is None
    assert auth_metadata("t") == (("authorization", "Bearer t"),)
    with request_scope() as outer:
        assert auth_metadata("t") == (("authorization", "Bearer t"), (METADATA_KEY, outer))
        with request_scope() as inner:
            assert inner == outer  # an operation inside an operation keeps its id
        with request_scope("given") as given:
            assert given == "given"
        assert current_request_id() == outer
    assert current_request_id() is None


def test_log_records_get_the_id_as_text_and_json() -> None:
    record = logging.LogRecord("dynostore.x", logging.WARNING, __file__, 1, "chunk %d gone", (3,), None)
    with request_scope("req-1"):
        assert RequestIdFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req-1"
    assert entry["message"] == "chunk 3 gone"
    assert entry["level"] == "WARNING"
    assert entry["time"].endswith("Z")


def _logged_by_grpc(level: int) -> str:
    """What a text log at ``level`` shows of grpc's report of a reply it could not send."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root, core = logging.getLogger(), logging.getLogger(GRPC_CORE_LOGGER)
    saved = root.level, root.handlers[:]
    root.handlers, gone = [handler], CallGoneFilter()
    root.setLevel(level)
    core.addFilter(gone)
    try:
        try:
            raise RuntimeError('Failed "execute_batch": (<SendMessageOperation>,)')
        except RuntimeError:
            core.exception(
                "ExecuteBatchError raised in core by servicer method [%s]", "/dynostore.v1.Container/ReadChunks"
            )
        core.warning("Something else")
    finally:
        core.removeFilter(gone)
        root.setLevel(saved[0])
        root.handlers = saved[1]
    return stream.getvalue()


def test_a_reply_whose_caller_had_gone_is_one_info_line() -> None:
    shown = _logged_by_grpc(logging.INFO)
    assert shown.splitlines() == [
        f"INFO {GRPC_CORE_LOGGER}: The reply to /dynostore.v1.Container/ReadChunks was not sent: its caller had gone.",
        f"WARNING {GRPC_CORE_LOGGER}: Something else",
    ]
    assert "Traceback" not in shown
    assert _logged_by_grpc(logging.WARNING).splitlines() == [f"WARNING {GRPC_CORE_LOGGER}: Something else"]
