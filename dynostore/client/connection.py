"""The gateway connection every stage of the client pipeline shares: channels, stubs, control calls.

One object per gateway owns the channels to the gateway and to the
containers; :class:`GatewayConnection` makes control calls with retries and
the locate calls both the put and the get stages need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from dynostore import validation
from dynostore._proto import container_pb2, container_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from dynostore.client.chunks import ContainerStub
from dynostore.client.latency import HedgeCounts, HedgePolicy, LatencyTracker
from dynostore.client.placement import PlacementPolicy, SpreadPlacement
from dynostore.errors import DynoStoreError, error_for_code
from dynostore.rpc import auth_metadata, from_rpc_error, open_channel
from dynostore.rpc.requests import request_metadata
from dynostore.rpc.tls import Tls

log = logging.getLogger(__name__)
T = TypeVar("T")

# put_many and get_many work in groups of this many objects (one control call each).
GROUP = 256
# Relayed objects travel in messages of this many bytes; a relayed put may take
# the control timeout plus one second per RELAY_MIN_RATE bytes.
RELAY_MESSAGE = 1024 * 1024
RELAY_MIN_RATE = 4 * 1024 * 1024
# Codes of a gateway that is down, starting or shutting down (it cancels the calls in flight): tried again.
_RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

# Segments are produced by the caller: an async iterator of bytes, each
# ``segment_size`` long except the last.
SegmentSource = Callable[[int], AsyncIterator[bytes]]
Progress = Callable[[int], None]


class _RetriedIntoError(Exception):
    """A retried call met an error (``error``) its first attempt may have caused."""

    def __init__(self, error: DynoStoreError) -> None:
        super().__init__(str(error))
        self.error = error


class GatewayConnection:
    """Channels to the gateway (or gateways) and the containers, and control calls to the gateway."""

    def __init__(
        self,
        gateway: str,
        *,
        placement: PlacementPolicy | None = None,
        timeout: float = 30.0,
        fragment_timeout: float = 20.0,
        retry_timeout: float = 3.0,
        retries: int = 3,
        queue_depth: int = 2,
        tls: Tls | None = None,
        relay: bool = False,
        hedging: bool = True,
        hedge: HedgePolicy | None = None,
    ) -> None:
        """Talk to ``gateway``; control calls time out after ``timeout`` seconds.

        ``gateway`` may name several gateways, comma-separated: one channel
        then keeps to one of them, taken in a random order (see
        :mod:`dynostore.rpc.channels`), and the retries of a call that found
        it unavailable go to the next.

        ``fragment_timeout`` bounds the wait for any one fragment from or to a
        container, so a hung container costs at most that long before parity
        is used instead. A container that could not be reached gets one more
        try, waiting up to ``retry_timeout`` for its connection, before a get
        gives up or a put records its chunk as missing. Control calls that
        find the gateway unavailable are retried ``retries`` times with
        exponential backoff. With ``tls``, every channel (gateway and
        containers) uses TLS and trusts its CA. With ``relay``, object bytes
        go through the gateway (``RelayPut``/``RelayGet``), for clients that
        cannot reach the containers.

        With ``hedging``, gets read from the containers expected to answer
        first (a per-container latency estimate shared by all calls) and read
        one more chunk when one lags past ``hedge``'s deadline; puts stop
        waiting for chunks that lag once k + 1 are durable, and record them
        missing (see :mod:`dynostore.client.latency`).
        """
        self.gateway_address = gateway
        self.tls = tls
        self.placement = placement or SpreadPlacement()
        self.timeout = timeout
        self.fragment_timeout = fragment_timeout
        self.retry_timeout = retry_timeout
        self.retries = retries
        self.queue_depth = queue_depth
        self.relay = relay
        self.hedging = hedging
        self.hedge = hedge or HedgePolicy()
        self.latency = LatencyTracker()
        self.hedge_counts = HedgeCounts()
        self._channels: dict[str, grpc.aio.Channel] = {}
        # Stubs are made once per channel: a stub binds every method of its service.
        self._gateway_stub: gateway_pb2_grpc.GatewayStub | None = None
        self._container_stubs: dict[str, container_pb2_grpc.ContainerStub] = {}
        # Reads left running after they lost a race, to be timed (see Downloader._measure_loser).
        self._measuring: set[asyncio.Future[Any]] = set()

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self.tls)
        return channel

    def _gateway(self) -> gateway_pb2_grpc.GatewayStub:
        if self._gateway_stub is None:
            self._gateway_stub = gateway_pb2_grpc.GatewayStub(self._channel(self.gateway_address))
        return self._gateway_stub

    def gateway_stub(self) -> gateway_pb2_grpc.GatewayStub:
        """The gateway's stub, for control calls made through :meth:`call`."""
        return self._gateway()

    def _container(self, address: str) -> container_pb2_grpc.ContainerStub:
        stub = self._container_stubs.get(address)
        if stub is None:
            stub = self._container_stubs[address] = ContainerStub(self._channel(address))
        return stub

    def container_stub(self, address: str) -> container_pb2_grpc.ContainerStub:
        """The stub of the container at ``address`` (one channel per address)."""
        return self._container(address)

    def _stubs(self, addresses: Sequence[str]) -> dict[str, container_pb2_grpc.ContainerStub]:
        return {a: self._container(a) for a in set(addresses)}

    async def close(self) -> None:
        """Let the reads being timed end (each within ``HedgePolicy.cap``), then close every channel."""
        if self._measuring:
            await asyncio.wait(set(self._measuring))
        channels, self._channels = self._channels, {}
        self._gateway_stub, self._container_stubs = None, {}
        for channel in channels.values():
            await channel.close()

    async def call(
        self,
        method: Callable[..., Awaitable[T]],
        request: object,
        token: str,
        *,
        tolerate_after_retry: type[DynoStoreError] | None = None,
    ) -> T:
        """Make one control call to the gateway, mapping failures to DynoStore errors.

        An unavailable gateway, or one that cancelled the call as it shut
        down, is retried with exponential backoff and jitter.
        An error of type ``tolerate_after_retry`` met on a retry (the first
        attempt may have done the work) raises ``_RetriedIntoError`` instead.
        """
        for attempt in range(self.retries + 1):
            try:
                return await method(request, metadata=auth_metadata(token), timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if attempt and tolerate_after_retry and isinstance(error, tolerate_after_retry):
                    raise _RetriedIntoError(error) from error
                if exc.code() not in _RETRIED_CODES or attempt == self.retries:
                    raise error from None
                delay = 0.1 * 2**attempt * (1 + random.random())
                log.info("Gateway unavailable (%s); retrying in %.2f s.", exc.details(), delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def delete_chunks(self, key: str, ticket: str, chunks: Sequence[tuple[int, str]]) -> None:
        """Best effort removal of chunks ``(index, container address)`` of ``key``."""

        async def delete(index: int, address: str) -> None:
            request = container_pb2.DeleteChunkRequest(key=key, index=index, ticket=ticket)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._container(address).DeleteChunk(request, timeout=5, metadata=request_metadata())

        await asyncio.gather(*(delete(index, address) for index, address in chunks))

    async def locate(self, keys: Sequence[str], token: str, *, fresh: bool = False) -> list[gateway_pb2.Location]:
        """Object metadata and chunk locations, one per key (``code`` says why one is missing).

        ``fresh``: the gateway reads the records from etcd, not from its cache.
        """
        for key in keys:
            validation.key(key)
        validation.token(token)
        found: list[gateway_pb2.Location] = []
        for start in range(0, len(keys), GROUP):
            request = gateway_pb2.LocateRequest(keys=keys[start : start + GROUP], fresh=fresh)
            found += (await self.call(self._gateway().Locate, request, token)).locations
        return found

    async def locate_one(self, key: str, token: str, *, fresh: bool = False) -> gateway_pb2.Location:
        """Metadata and chunk locations of one object (``fresh``: see :meth:`locate`).

        Raises:
            NotFound: no object has this key.
            PermissionDenied: the object belongs to another user.
        """
        (location,) = await self.locate([key], token, fresh=fresh)
        if location.code:
            raise error_for_code(location.code, location.message)
        return location
