"""A gRPC server that does nothing: the floor of any call to a Python gRPC server.

Usage: python -m bench.idle_server READY_FILE

It is started like the gateway and the containers (``dynostore.rpc.start_server``:
health checking, reflection, the error-mapping interceptor) but serves no
service of its own; a ``grpc.health.v1.Health/Check`` call to it costs only
gRPC's own machinery. Writes ``host:port`` to READY_FILE once serving, and runs
until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from dynostore.rpc import start_server


async def serve(ready: Path) -> None:
    server, port = await start_server("127.0.0.1:0", lambda _: None, [])
    temp = ready.with_name(ready.name + ".tmp")
    temp.write_text(f"127.0.0.1:{port}")
    temp.replace(ready)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(grace=1)


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
