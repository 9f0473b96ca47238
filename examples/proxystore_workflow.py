"""A small workflow: tasks in other processes receive ProxyStore proxies backed by DynoStore.

Run it against a fabric (`dynostore up` prints the two variables):

    DYNOSTORE_GATEWAY=127.0.0.1:8095 DYNOSTORE_TOKEN=... python examples/proxystore_workflow.py

The main process puts a NumPy array and a dict into DynoStore through a
ProxyStore ``Store``; worker processes get only small proxies, and each proxy
fetches its object from DynoStore the first time a worker touches it.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from proxystore.store import Store

from dynostore.proxystore import DynoConnector


def summarize(array: Any, meta: Any) -> str:
    """A task: runs in a worker process and resolves the proxies there."""
    return f"{meta['name']}: mean={float(array.mean()):.4f} shape={array.shape} (pid {os.getpid()})"


def main() -> None:
    """Put two objects, fan tasks out to processes, print their results."""
    connector = DynoConnector(
        apigateway=os.environ["DYNOSTORE_GATEWAY"],
        token_user=os.environ["DYNOSTORE_TOKEN"],
        catalog="workflow",
        tls_ca=os.environ.get("DYNOSTORE_TLS_CA"),  # set for a fabric that runs TLS
    )
    with Store("dynostore-workflow", connector, register=True) as store:
        array = store.proxy(np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000))
        metas = [store.proxy({"name": f"task-{i}"}) for i in range(4)]
        # gRPC does not survive fork(): start workers with "spawn" (or "forkserver").
        with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
            for line in pool.map(summarize, [array] * 4, metas):
                print(line)


if __name__ == "__main__":
    main()
