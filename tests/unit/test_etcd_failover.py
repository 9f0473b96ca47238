"""The etcd client's failover: which calls go again to another member, and how a retried commit learns its fate."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pytest
from aetcd import rpc

from dynostore.registry.etcd import (
    MemberLeft,
    _applies_once,
    _Current,
    _Endpoints,
    _FailoverKV,
    _moving_on,
    _streaming_on,
)


def _failure(code: grpc.StatusCode, details: str = "injected") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


# What etcd answers when its leader died while it served a request.
SERVER_DEADLINE = _failure(grpc.StatusCode.UNKNOWN, "context deadline exceeded")


def _put(key: bytes, value: bytes) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))


def _absent(key: bytes) -> Any:
    return rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)


class Member:
    """One etcd member of a shared store: applies transactions (create compares, puts, ranges) or fails."""

    def __init__(self, store: dict[bytes, tuple[bytes, int]], failures: list[grpc.StatusCode | str | None]) -> None:
        self.store = store
        # Per call: None answers; a code fails; "apply" applies, then fails DEADLINE_EXCEEDED (the answer lost);
        # "server apply" applies, then fails as etcd does when its own deadline passed (UNKNOWN).
        self.failures = failures
        self.calls: list[str] = []

    async def Txn(self, request: Any, timeout: float, metadata: Any) -> Any:
        self.calls.append("Txn")
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None and failure not in ("apply", "server apply"):
            raise _failure(cast(grpc.StatusCode, failure))
        succeeded = all((c.key not in self.store) for c in request.compare)
        revision = max((r for _, r in self.store.values()), default=0) + 1
        responses = []
        for op in request.success if succeeded else request.failure:
            if op.WhichOneof("request") == "request_put":
                self.store[op.request_put.key] = (op.request_put.value, revision)
                responses.append(rpc.ResponseOp(response_put=rpc.PutResponse()))
            else:
                found = self.store.get(op.request_range.key)
                kvs = [rpc.KeyValue(key=op.request_range.key, value=found[0], mod_revision=found[1])] if found else []
                responses.append(rpc.ResponseOp(response_range=rpc.RangeResponse(kvs=kvs)))
        if failure == "apply":
            raise _failure(grpc.StatusCode.DEADLINE_EXCEEDED)
        if failure == "server apply":
            raise SERVER_DEADLINE
        return rpc.TxnResponse(succeeded=succeeded, responses=responses)

    async def Range(self, request: Any, timeout: float, metadata: Any) -> Any:
        self.calls.append("Range")
        if self.failures and (failure := self.failures.pop(0)) is not None:
            raise SERVER_DEADLINE if failure == "server apply" else _failure(grpc.StatusCode.UNAVAILABLE)
        return rpc.RangeResponse()

    async def Put(self, request: Any, timeout: float, metadata: Any) -> Any:
        self.calls.append("Put")
        raise _failure(grpc.StatusCode.UNAVAILABLE)


def _kv(members: list[Member], monkeypatch: pytest.MonkeyPatch) -> tuple[_FailoverKV, _Endpoints]:
    endpoints = _Endpoints([object()] * len(members))

    async def no_status(index: int, metadata: Any) -> None:
        return None

    monkeypatch.setattr(endpoints, "_status", no_status)
    kv = _FailoverKV(endpoints, call_timeout=0.5)
    monkeypatch.setattr(kv, "_stub", lambda index: members[index])
    return kv, endpoints


def test_only_transactions_that_apply_at_most_once_are_retried() -> None:
    commit = rpc.TxnRequest(compare=[_absent(b"k")], success=[_put(b"k", b"v"), _put(b"usage", b"1")])
    assert _applies_once(commit)
    assert _applies_once(rpc.TxnRequest(success=[rpc.RequestOp(request_range=rpc.RangeRequest(key=b"k"))]))
    assert not _applies_once(rpc.TxnRequest(success=[_put(b"k", b"v")]))  # unguarded
    assert not _applies_once(rpc.TxnRequest(compare=[_absent(b"other")], success=[_put(b"k", b"v")]))
    assert not _applies_once(
        rpc.TxnRequest(compare=[_absent(b"k")], success=[_put(b"k", b"v")], failure=[_put(b"x", b"")])
    )


def test_a_commit_whose_answer_was_lost_is_reported_done_once(monkeypatch: pytest.MonkeyPatch) -> None:
    store: dict[bytes, tuple[bytes, int]] = {}
    members = [Member(store, ["apply"]), Member(store, [])]
    kv, endpoints = _kv(members, monkeypatch)
    commit = rpc.TxnRequest(compare=[_absent(b"k")], success=[_put(b"k", b"v"), _put(b"usage", b"1")])
    reply = asyncio.run(kv.Txn(commit, timeout=5))
    assert reply.succeeded
    assert reply.responses[0].response_put.header.revision == store[b"k"][1]
    assert store == {b"k": (b"v", 1), b"usage": (b"1", 1)}  # applied once
    assert endpoints.current == 1
    assert members[1].calls == ["Txn", "Txn"]  # the retry (its compare false), then the read of what it writes


def test_a_commit_that_did_not_land_is_not_reported_done(monkeypatch: pytest.MonkeyPatch) -> None:
    store = {b"k": (b"someone else's", 7)}
    members = [Member(store, [grpc.StatusCode.UNAVAILABLE]), Member(store, [])]
    kv, _ = _kv(members, monkeypatch)
    commit = rpc.TxnRequest(compare=[_absent(b"k")], success=[_put(b"k", b"v")])
    assert not asyncio.run(kv.Txn(commit, timeout=5)).succeeded
    assert store == {b"k": (b"someone else's", 7)}


@pytest.mark.parametrize("first", ["apply", "server apply"])
def test_a_commit_or_read_that_met_an_etcd_deadline_goes_on_to_the_next_member(
    monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """etcd's own deadline (UNKNOWN "context deadline exceeded") counts as ours: next member, outcome found out."""
    store: dict[bytes, tuple[bytes, int]] = {}
    members = [Member(store, [first, first]), Member(store, [])]
    kv, endpoints = _kv(members, monkeypatch)
    commit = rpc.TxnRequest(compare=[_absent(b"k")], success=[_put(b"k", b"v")])
    assert asyncio.run(kv.Txn(commit, timeout=5)).succeeded
    assert store == {b"k": (b"v", 1)}
    endpoints.current = 0
    asyncio.run(kv.Range(rpc.RangeRequest(key=b"k"), timeout=5))
    assert members[0].calls == ["Txn", "Range"]


def test_reads_go_to_the_next_member_and_plain_puts_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    members = [Member({}, [grpc.StatusCode.UNAVAILABLE]), Member({}, [])]
    kv, endpoints = _kv(members, monkeypatch)
    asyncio.run(kv.Range(rpc.RangeRequest(key=b"k"), timeout=5))
    assert (members[0].calls, members[1].calls, endpoints.current) == (["Range"], ["Range"], 1)
    with pytest.raises(grpc.aio.AioRpcError):
        asyncio.run(kv.Put(rpc.PutRequest(key=b"k", value=b"v"), timeout=5))
    assert members[1].calls[-1] == "Put"
    assert members[0].calls == ["Range"]  # not tried again
    assert endpoints.current == 0  # the next call goes elsewhere


class Stream:
    """A streaming call: its replies, then quiet until cancelled, when it ends as gRPC's do (CancelledError)."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.cancelled = asyncio.Event()

    def cancel(self) -> bool:
        self.cancelled.set()
        return True

    async def __aiter__(self) -> Any:
        for reply in self.replies:
            yield reply
        await self.cancelled.wait()
        raise asyncio.CancelledError()


def test_a_stream_ends_unavailable_when_calls_move_on_from_its_member() -> None:
    """A quiet watch on a member the other calls left (it lost the cluster) ends, to be opened on the next."""

    async def main() -> None:
        endpoints = _Endpoints([object(), object(), object()])
        got: list[str] = []

        async def consume(call: Stream, index: int) -> None:
            async for reply in _streaming_on(call, endpoints, index):
                got.append(reply)

        on_first = asyncio.create_task(consume(Stream(["a"]), 0))
        await asyncio.sleep(0.05)
        assert not on_first.done()  # quiet, not ended
        endpoints.failed(0)  # another call failed on member 0: calls go to member 1 now
        with pytest.raises(MemberLeft) as caught:
            await on_first
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert got == ["a"]
        assert endpoints.current == 1

        # A stream on the member calls go to now is not ended by a stale failure report of member 0,
        # and a stream whose consumer is cancelled ends cancelled (not as if its member had been left).
        on_second = asyncio.create_task(consume(Stream(["b"]), 1))
        await asyncio.sleep(0.05)
        endpoints.failed(0)
        await asyncio.sleep(0.05)
        assert not on_second.done()
        assert endpoints.current == 1
        on_second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await on_second
        assert got == ["a", "b"]

    asyncio.run(main())


def test_lease_and_other_calls_are_bounded_but_watches_are_not() -> None:
    """A lease keepalive given no timeout (aetcd's default) must not wait for ever on a frozen member."""
    asked: dict[str, float | None] = {}

    class Stub:
        def __init__(self, channel: object) -> None:
            pass

        def __getattr__(self, method: str) -> Any:
            def call(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
                asked[method] = timeout
                return Stream([])

            return call

    current = _Current(_Endpoints([object()]), Stub, call_timeout=1.5)
    current.LeaseKeepAlive(iter([]))
    current.LeaseGrant(object(), timeout=60)
    current.LeaseRevoke(object(), timeout=0.2)
    current.Watch(iter([]))
    assert asked == {"LeaseKeepAlive": 1.5, "LeaseGrant": 1.5, "LeaseRevoke": 0.2, "Watch": None}


def test_a_lease_call_that_met_an_etcd_deadline_moves_the_calls_on() -> None:
    """The same rule for the other services' calls as for the KV's: etcd's own deadline moves calls on."""

    async def failing() -> None:
        raise SERVER_DEADLINE

    async def main() -> int:
        endpoints = _Endpoints([object(), object()])
        with pytest.raises(grpc.aio.AioRpcError):
            await _moving_on(failing(), endpoints, 0)
        return endpoints.current

    assert asyncio.run(main()) == 1
