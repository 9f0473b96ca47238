"""Scrubbing: a container re-reads its chunks now and then and reports the damaged ones.

Every ``interval`` seconds the scrubber reads every stored chunk in full (the
backend verifies each fragment's CRC-32). Chunks that fail are reported to the
gateway (``ReportDamage``), which records them as missing so that repair
rebuilds them on other containers; once reported, the damaged copies are
deleted. Reads go one chunk at a time, so a scrub yields to serving.
"""

from __future__ import annotations

import asyncio
import logging

from dynostore._proto import gateway_pb2, gateway_pb2_grpc
from dynostore.container.backends import Backend
from dynostore.errors import DataLoss, NotFound
from dynostore.rpc import auth_metadata, open_channel
from dynostore.rpc.tls import Tls

log = logging.getLogger(__name__)
# Damaged chunks are reported this many at a time.
REPORT_BATCH = 500


class Scrubber:
    """Re-verifies a backend's chunks every ``interval`` seconds."""

    def __init__(
        self, backend: Backend, container_id: str, gateway: str, token: str, tls: Tls | None, interval: float
    ) -> None:
        """Scrub ``backend`` (container ``container_id``), reporting to ``gateway`` with ``token``."""
        self.backend = backend
        self.container_id = container_id
        self.gateway = gateway
        self.token = token
        self.tls = tls
        self.interval = interval

    async def run(self) -> None:
        """Scrub until cancelled; a failed scrub is logged and tried again at the next interval."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.scrub()
            except Exception:
                log.exception("Scrub failed; the next one is in %.0f s.", self.interval)

    async def scrub(self) -> tuple[int, int]:
        """One pass over every chunk: ``(chunks checked, damaged chunks reported)``."""
        checked = 0
        damaged: list[tuple[str, int]] = []
        async for key, index in self.backend.list_chunks():
            checked += 1
            try:
                async for _ in self.backend.read(key, index):
                    pass
            except DataLoss as exc:
                log.warning("Chunk %d of %s is damaged: %s", index, key, exc)
                damaged.append((key, index))
            except NotFound:
                continue  # deleted since it was listed
        if damaged:
            await self._report(damaged)
        log.info("Scrub: %d chunk(s) checked, %d damaged", checked, len(damaged))
        return checked, len(damaged)

    async def _report(self, damaged: list[tuple[str, int]]) -> None:
        """Tell the gateway, then delete the damaged copies (worthless, and rebuilt elsewhere)."""
        async with open_channel(self.gateway, self.tls) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            for start in range(0, len(damaged), REPORT_BATCH):
                batch = damaged[start : start + REPORT_BATCH]
                request = gateway_pb2.ReportDamageRequest(
                    container_id=self.container_id,
                    chunks=[gateway_pb2.DamagedChunk(key=key, index=index) for key, index in batch],
                )
                await stub.ReportDamage(request, metadata=auth_metadata(self.token), timeout=30)
                for key, index in batch:
                    await self.backend.delete(key, index)
