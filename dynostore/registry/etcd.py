"""The connection to etcd: aetcd's client with keepalive, in plain text or over TLS, to one member or several.

aetcd (1.0) only ever opens a plain-text channel to one ``host:port``;
:class:`EtcdClient` opens its own channel instead: over TLS when given
credentials (the CA that signed etcd's certificate, and the gateway's own
certificate when etcd runs with ``--client-cert-auth``), and to every member
of a cluster when given several endpoints: one channel over them all (see
:mod:`dynostore.rpc.channels`). A call in flight on a member that dies fails
``UNAVAILABLE``, which the registry reports as
:class:`~dynostore.errors.Unavailable`, and the next calls go to the other
members. Watches end with their member, and the registry opens them again on
another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher

from dynostore.errors import InvalidArgument
from dynostore.rpc.channels import balancing_options, channel_target, endpoint_list
from dynostore.rpc.tls import Tls

# gRPC keepalive on the etcd connection: a ping every 10 s, with or without
# data (the watches stay open and may be quiet for hours), and a connection
# whose ping goes unanswered for 5 s (etcd frozen, a network partition) is
# dropped, which ends the watches and empties the caches they vouch for.
# etcd refuses pings more often than every 5 s.
ETCD_CHANNEL_OPTIONS = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.http2.ping_timeout_ms": 5_000,
    "grpc.http2.max_pings_without_data": 0,
    # A restarted etcd is found again within a second, not after gRPC's default backoff (up to 120 s).
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}
log = logging.getLogger(__name__)


# Per attempt bound on one etcd call (seconds): a member that died, is frozen or
# has no leader costs this much before the call goes to the next member.
CALL_TIMEOUT = 1.5
# How long a member may take to tell its status when a call moves on from another (seconds).
STATUS_TIMEOUT = 0.3
# Codes after which a call goes to the next member: down, frozen or without a leader.
_FAILOVER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# The most versions of one key searched in etcd's history for a transaction whose answer was lost.
HISTORY_VERSIONS = 64
# Reads in one transaction of that search (etcd's default --max-txn-ops).
_READS_PER_TXN = 128


def _as_timeout(exc: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
    """``exc``, or DEADLINE_EXCEEDED where etcd reports its own request deadline as UNKNOWN.

    A member whose leader died while it served a request answers UNKNOWN
    "context deadline exceeded": the request's fate is as unknown as after
    a deadline of ours, and the next member may well serve it.
    """
    if exc.code() is grpc.StatusCode.UNKNOWN and "deadline exceeded" in (exc.details() or ""):
        return grpc.aio.AioRpcError(
            grpc.StatusCode.DEADLINE_EXCEEDED, exc.initial_metadata(), exc.trailing_metadata(), exc.details()
        )
    return exc


_TXN_COMPARED = ("mod_revision", "version", "create_revision")


def _write_keys(ops: Sequence[Any]) -> tuple[dict[bytes, bytes], set[bytes]]:
    """Keys ``ops`` put (with their values) and delete; nested transactions count as writes of unknown keys."""
    puts: dict[bytes, bytes] = {}
    deletes: set[bytes] = set()
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            puts[op.request_put.key] = op.request_put.value
        elif kind == "request_delete_range":
            deletes.add(op.request_delete_range.key)
        elif kind == "request_txn":
            deletes.add(b"")  # not checked: such a transaction is never retried
    return puts, deletes


def _applies_once(request: Any) -> bool:
    """Whether a transaction can apply at most once however often it is sent.

    True when it writes nothing, or when its compares pin the revision (or
    absence) of a key its success branch writes: once applied, that compare
    is false, so a second copy changes nothing.
    """
    puts, deletes = _write_keys(request.success)
    failure_puts, failure_deletes = _write_keys(request.failure)
    if failure_puts or failure_deletes:
        return False
    if not puts and not deletes:
        return True
    if b"" in deletes:
        return False
    written = set(puts) | deletes
    return any(
        c.key in written and c.target in (rpc.Compare.MOD, rpc.Compare.VERSION, rpc.Compare.CREATE)
        for c in request.compare
    )


class MemberLeft(grpc.aio.AioRpcError):
    """A stream (a watch, lease keepalives) ended because calls moved on from its member; UNAVAILABLE."""

    def __init__(self, index: int) -> None:
        """The stream of member ``index`` ended."""
        empty = grpc.aio.Metadata()
        details = f"etcd calls moved on from member {index} after a failure; this stream ended with them"
        super().__init__(grpc.StatusCode.UNAVAILABLE, empty, empty, details)


class _Endpoints:
    """The members' channels, and which one calls go to now (the next, after a failure).

    ``left[i]`` is set when calls move on from member ``i``: its streams end
    then (:func:`_streaming_on`), so that watches opened there are opened
    again on the member the other calls go to, and do not go quiet on one
    that lost the cluster while its connection still answers pings.
    """

    def __init__(self, channels: list[grpc.aio.Channel]) -> None:
        self.channels = channels
        self.current = 0
        self.left = [asyncio.Event() for _ in channels]

    def _move(self, to: int) -> None:
        if to != self.current:
            left, self.left[self.current] = self.left[self.current], asyncio.Event()
            self.current = to
            left.set()

    def failed(self, index: int) -> None:
        """Send the next calls to the member after ``index`` (unless another call moved on already)."""
        if self.current == index:
            self._move((index + 1) % len(self.channels))

    async def choose_after(self, index: int, metadata: Any) -> None:
        """After a call failed on ``index``: send the next calls to a member that answers and knows a leader.

        Every other member is asked for its status at once, within
        ``STATUS_TIMEOUT``: a frozen member does not answer, a dead one
        fails at once, and one without a leader says so. The first that
        knows a leader is chosen, else the first that answered, else simply
        the next after ``index``.
        """
        self.failed(index)
        others = [i for i in range(len(self.channels)) if i != index]
        if not others:
            return
        statuses = await asyncio.gather(*(self._status(i, metadata) for i in others))
        answered = [i for i, status in zip(others, statuses, strict=True) if status is not None]
        led = [i for i, status in zip(others, statuses, strict=True) if status is not None and status.leader]
        if led or answered:
            self._move((led or answered)[0])

    async def _status(self, index: int, metadata: Any) -> Any:
        """Member ``index``'s status, or None if it does not answer in time."""
        try:
            stub = rpc.MaintenanceStub(self.channels[index])
            return await stub.Status(rpc.StatusRequest(), timeout=STATUS_TIMEOUT, metadata=metadata)
        except grpc.aio.AioRpcError:
            return None


class _FailoverKV:
    """etcd's KV service over every member: each attempt within ``call_timeout``, then the next member.

    Reads are retried, and transactions that apply at most once (see
    :func:`_applies_once`): a retry that finds its compares false after an
    attempt whose fate is unknown finds out whether that attempt landed (see
    :meth:`_landed`), and reports success only if it did. Other writes
    (plain puts, deletes, unguarded transactions) are not retried: the error
    goes to the caller, and the next call goes to the next member.
    """

    def __init__(self, endpoints: _Endpoints, call_timeout: float) -> None:
        self._endpoints = endpoints
        self._call_timeout = call_timeout
        self._revision = 0  # the newest store revision an answer told of

    def _saw(self, reply: Any) -> Any:
        """Note the store revision ``reply`` tells of; return it."""
        self._revision = max(self._revision, reply.header.revision)
        return reply

    def _stub(self, index: int) -> rpc.KVStub:
        return rpc.KVStub(self._endpoints.channels[index])

    async def _attempts(self, method: str, request: Any, timeout: float | None, metadata: Any, retry: bool) -> Any:
        """Call ``method`` on the current member, and on the next ones while ``retry`` and time is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else 10 * self._call_timeout)
        while True:
            index = self._endpoints.current
            left = deadline - loop.time()
            try:
                call = getattr(self._stub(index), method)
                return self._saw(
                    await call(request, timeout=max(0.01, min(self._call_timeout, left)), metadata=metadata)
                )
            except grpc.aio.AioRpcError as raw:
                exc = _as_timeout(raw)
                if exc.code() not in _FAILOVER_CODES:
                    raise
                if not retry or deadline - loop.time() <= 0:
                    self._endpoints.failed(index)
                    raise exc from None
                await self._endpoints.choose_after(index, metadata)
                log.info("etcd %s failed on member %d (%s); trying the next.", method, index, exc.code().name)

    async def Range(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:  # noqa: N802
        """A read: retried on the next member."""
        return await self._attempts("Range", request, timeout, metadata, retry=True)

    async def Put(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:  # noqa: N802
        """A plain put: not retried."""
        return await self._attempts("Put", request, timeout, metadata, retry=False)

    async def DeleteRange(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:  # noqa: N802
        """A delete: not retried (its count of deleted keys would not say what the first attempt did)."""
        return await self._attempts("DeleteRange", request, timeout, metadata, retry=False)

    async def Compact(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:  # noqa: N802
        """A compaction: idempotent, retried."""
        return await self._attempts("Compact", request, timeout, metadata, retry=True)

    async def Txn(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Any:  # noqa: N802
        """A transaction: retried on the next member if it applies at most once, and its outcome then found out."""
        if not _applies_once(request):
            return await self._attempts("Txn", request, timeout, metadata, retry=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else 10 * self._call_timeout)
        unknown = False  # an attempt failed without saying whether it applied
        floor = self._revision  # this transaction can only apply at a later revision
        while True:
            index = self._endpoints.current
            left = deadline - loop.time()
            try:
                reply = self._saw(
                    await self._stub(index).Txn(
                        request, timeout=max(0.01, min(self._call_timeout, left)), metadata=metadata
                    )
                )
            except grpc.aio.AioRpcError as raw:
                exc = _as_timeout(raw)
                if exc.code() not in _FAILOVER_CODES:
                    raise
                if deadline - loop.time() <= 0:
                    self._endpoints.failed(index)
                    raise exc from None
                await self._endpoints.choose_after(index, metadata)
                log.info("etcd Txn failed on member %d (%s); trying the next.", index, exc.code().name)
                unknown = True
                continue
            if reply.succeeded or not unknown:
                return reply
            landed = await self._landed(request, floor, deadline, metadata)
            return landed if landed is not None else reply

    async def _landed(self, request: Any, floor: int, deadline: float, metadata: Any) -> Any:
        """The reply of a transaction that already applied, at a revision after ``floor``; or None.

        First the keys it writes are read as they are now: its puts holding its
        values, all written at one revision, and its deleted keys absent. Where
        a later transaction changed one of them (a usage counter that other
        gateways change too), etcd's history is searched instead (see
        :meth:`_applied_in_history`).
        """
        puts, deletes = _write_keys(request.success)
        ranged = any(op.request_delete_range.range_end for op in request.success if op.HasField("request_delete_range"))
        if not puts or request.failure or ranged:
            return None
        written = [*puts, *deletes]
        found = await self._reads([rpc.RangeRequest(key=k) for k in written], deadline, metadata)
        revisions = {kvs[0].mod_revision for kvs in found[: len(puts)] if kvs}
        now = dict(zip(written, found, strict=True))
        if _holds(puts, deletes, now) and len(revisions) == 1:
            return _applied_reply(request, revisions.pop())
        revision = await self._applied_in_history(puts, deletes, floor, deadline, metadata)
        return None if revision is None else _applied_reply(request, revision)

    async def _applied_in_history(
        self, puts: dict[bytes, bytes], deletes: set[bytes], floor: int, deadline: float, metadata: Any
    ) -> int | None:
        """The revision after ``floor`` at which one transaction wrote ``puts`` and removed ``deletes``; or None.

        Walks back through the versions of one key it puts (at most
        ``HISTORY_VERSIONS``) and, at each that holds its value, reads the
        other keys as they were at that revision (and the deleted ones just
        before it). None when no revision fits, or the history was compacted.
        """
        key = next(iter(puts))
        revision = 0  # now
        try:
            for _ in range(HISTORY_VERSIONS):
                (kvs,) = await self._reads([rpc.RangeRequest(key=key, revision=revision)], deadline, metadata)
                if not kvs or kvs[0].mod_revision <= floor or (revision and kvs[0].mod_revision > revision):
                    return None  # absent then (deleted and made again since), before the floor, or no history kept
                revision = kvs[0].mod_revision
                if kvs[0].value == puts[key] and await self._written_at(revision, puts, deletes, deadline, metadata):
                    return revision
                revision -= 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.OUT_OF_RANGE:  # compacted
                return None
            raise
        return None

    async def _written_at(
        self, revision: int, puts: dict[bytes, bytes], deletes: set[bytes], deadline: float, metadata: Any
    ) -> bool:
        """Whether ``puts`` were all written at ``revision``, and ``deletes`` all removed by it."""
        reads = [rpc.RangeRequest(key=k, revision=revision) for k in [*puts, *deletes]]
        reads += [rpc.RangeRequest(key=k, revision=revision - 1) for k in deletes]
        found = await self._reads(reads, deadline, metadata)
        at = dict(zip([*puts, *deletes], found, strict=False))
        before = found[len(puts) + len(deletes) :]
        return (
            _holds(puts, deletes, at)
            and all(kvs[0].mod_revision == revision for kvs in found[: len(puts)])
            and all(before)
        )

    async def _reads(self, reads: list[Any], deadline: float, metadata: Any) -> list[Any]:
        """The key-values each of ``reads`` finds, read in few transactions, retried on the next member."""
        found: list[Any] = []
        for start in range(0, len(reads), _READS_PER_TXN):
            ops = [rpc.RequestOp(request_range=r) for r in reads[start : start + _READS_PER_TXN]]
            left = max(deadline - asyncio.get_running_loop().time(), 0.01)
            reply = await self._attempts("Txn", rpc.TxnRequest(success=ops), left, metadata, retry=True)
            found += [op.response_range.kvs for op in reply.responses]
        return found


def _holds(puts: dict[bytes, bytes], deletes: set[bytes], found: dict[bytes, Any]) -> bool:
    """Whether ``found`` (key-values per key) holds the values ``puts`` writes, and none of ``deletes``."""
    return all(found[k] and found[k][0].value == v for k, v in puts.items()) and not any(found[k] for k in deletes)


def _applied_reply(request: Any, revision: int) -> Any:
    """The reply etcd would have given to ``request`` (puts and deletes only) that applied at ``revision``."""
    header = rpc.ResponseHeader(revision=revision)
    responses = []
    for op in request.success:
        if op.WhichOneof("request") == "request_put":
            responses.append(rpc.ResponseOp(response_put=rpc.PutResponse(header=header)))
        else:
            responses.append(rpc.ResponseOp(response_delete_range=rpc.DeleteRangeResponse(header=header, deleted=1)))
    return rpc.TxnResponse(header=header, succeeded=True, responses=responses)


class _Current:
    """A stub of the member calls go to now, for any other service (leases, watches, maintenance).

    Calls other than watches are bounded by ``call_timeout`` (given no
    timeout, or a longer one) and move calls on to the next member after a
    failure; they are not retried here (the registry retries lease
    keepalives and reopens watches on its own).
    """

    def __init__(self, endpoints: _Endpoints, stub: type, call_timeout: float) -> None:
        self._endpoints = endpoints
        self._stubs = [stub(channel) for channel in endpoints.channels]
        self._call_timeout = call_timeout

    def __getattr__(self, method: str) -> Any:
        index = self._endpoints.current
        call = getattr(self._stubs[index], method)
        endpoints, call_timeout = self._endpoints, self._call_timeout

        def bounded(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
            if method != "Watch":  # lease keepalives too: one on a frozen member would wait for ever
                timeout = call_timeout if timeout is None else min(timeout, call_timeout)
            made = call(*args, timeout=timeout, **kwargs)
            if isinstance(made, grpc.aio.UnaryUnaryCall):
                return _moving_on(made, endpoints, index)
            return _streaming_on(made, endpoints, index)

        return bounded


async def _moving_on(call: Any, endpoints: _Endpoints, index: int) -> Any:
    """Await a unary ``call``; if it fails for want of its member, the next calls go to the next member."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if _as_timeout(exc).code() in _FAILOVER_CODES:
            endpoints.failed(index)
        raise


async def _streaming_on(call: Any, endpoints: _Endpoints, index: int) -> AsyncIterator[Any]:
    """The replies of a streaming ``call``; if it fails for want of its member, the next calls go to the next.

    It ends with :class:`MemberLeft` when calls move on from its member.
    """
    left = endpoints.left[index]
    moved_on = False

    async def end_when_left() -> None:
        nonlocal moved_on
        await left.wait()
        moved_on = True
        call.cancel()

    guard = asyncio.create_task(end_when_left())
    try:
        async for reply in call:
            yield reply
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if moved_on and task is not None and not task.cancelling():
            raise MemberLeft(index) from None
        raise
    except grpc.aio.AioRpcError as exc:
        if _as_timeout(exc).code() in _FAILOVER_CODES:
            endpoints.failed(index)
        raise
    finally:
        guard.cancel()
        call.cancel()


class EtcdClient(aetcd.Client):
    """An aetcd client of one etcd member or several, speaking TLS when ``tls`` is given.

    Each member has its own channel; calls go to one member until it fails
    (down, frozen, without a leader: UNAVAILABLE or over ``call_timeout``),
    then to the next. Reads and transactions that apply at most once are
    retried on the next member within the call's whole timeout (see
    :class:`_FailoverKV`).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        tls: Tls | None = None,
        call_timeout: float = CALL_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        """Connect (lazily) to etcd at ``host:port`` endpoints (a list, or comma-separated).

        Over TLS, it presents ``tls``'s certificate if it has one; with several
        endpoints, every member's certificate must be valid for the first
        endpoint's host (one certificate naming every member does).

        Raises:
            InvalidArgument: see :func:`endpoint_list` and :func:`channel_target`; a ``call_timeout`` not above 0.
        """
        if not call_timeout > 0:
            raise InvalidArgument(f"The etcd call timeout must be above 0 seconds, not {call_timeout}.")
        self.endpoints = endpoint_list(endpoints)
        self.tls = tls
        self.call_timeout = call_timeout
        options = {**ETCD_CHANNEL_OPTIONS, **balancing_options(self.endpoints, tls is not None, spread=False)}
        super().__init__(options=options, **kwargs)
        self._targets = [channel_target([e]) for e in self.endpoints]
        self._credentials = tls.channel_credentials(present_certificate=True) if tls else None
        self._channels: list[grpc.aio.Channel] = []

    def _open(self, target: str) -> grpc.aio.Channel:
        options = list(self._options.items())
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, self._credentials, options=options)

    async def connect(self) -> None:
        """Open a channel (TLS or plain text) to every endpoint, and stubs that fail over between them."""
        if self._connected.is_set():
            return None
        # Nothing here awaits, so no other task can see a half-made connection.
        self._channels = [self._open(target) for target in self._targets]
        endpoints = _Endpoints(self._channels)
        self.channel = self._channels[0]
        self.kvstub = _FailoverKV(endpoints, self.call_timeout)
        self.clusterstub = _Current(endpoints, rpc.ClusterStub, self.call_timeout)
        self.leasestub = _Current(endpoints, rpc.LeaseStub, self.call_timeout)
        self.maintenancestub = _Current(endpoints, rpc.MaintenanceStub, self.call_timeout)
        watches = _Current(endpoints, rpc.WatchStub, self.call_timeout)
        # A member that loses its leader (cut off from the others) ends the watches opened
        # with this, rather than keeping them open and quiet while the cluster goes on.
        require_leader = (*(self.metadata or ()), ("hasleader", "true"))
        self._watcher = watcher.Watcher(watches, timeout=self._timeout, metadata=require_leader)
        self._connected.set()
        return None

    async def member_status(self, endpoint: str, timeout: float) -> Any:
        """Etcd's Status reply of member ``endpoint`` (one of :attr:`endpoints`), asked on that member's channel."""
        await self.connect()
        stub = rpc.MaintenanceStub(self._channels[self.endpoints.index(endpoint)])
        return await stub.Status(rpc.StatusRequest(), timeout=timeout)

    async def close(self) -> None:
        """Close every member's channel (aetcd's ``close`` closes the first and the watcher)."""
        others = self._channels[1:]
        self._channels = []
        await super().close()
        for channel in others:
            await channel.close()
