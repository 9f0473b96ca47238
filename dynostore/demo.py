"""A short demo: start a local fabric, put and get objects, survive lost containers."""

from __future__ import annotations

import os
import time

from dynostore.client import Client
from dynostore.local import LocalFabric


def run_demo(root: str | None = None) -> None:
    """Run the demo and print what happens."""
    print("Starting a local fabric: etcd, a gateway and 5 containers...", flush=True)
    started = time.perf_counter()
    with LocalFabric(containers=5, root=root) as fabric:
        print(f"  up in {time.perf_counter() - started:.1f} s; gateway at {fabric.gateway}")
        token = fabric.create_user("demo")
        with Client(fabric.gateway) as client:
            key = client.put(data=b"Hello, World!", token_user=token, catalog="catalog-0", name="hello")
            print(f"put b'Hello, World!' -> key {key}")
            print(f"get -> {client.get(key=key, token_user=token)!r}")
            payload = os.urandom(32 * 1024 * 1024)
            t = time.perf_counter()
            big = client.put(data=payload, token_user=token, catalog="catalog-0", name="random-32MiB")
            put_s = time.perf_counter() - t
            print(f"put 32 MiB in {put_s:.2f} s (k=3 data + m=2 parity chunks over 5 containers)")
            for container in fabric.containers[:2]:
                container.kill()
            print("killed 2 of 5 containers")
            t = time.perf_counter()
            same = client.get(key=big, token_user=token) == payload
            print(f"get 32 MiB from the 3 left in {time.perf_counter() - t:.2f} s: identical={same}")
            print("objects in catalog-0:")
            for info in client.list(catalog="catalog-0", token_user=token):
                print(f"  {info.key}  {info.size:>10}  {info.name}")
            if not same:
                raise SystemExit("The demo read back different bytes.")
    print("Fabric stopped. Demo done.")
