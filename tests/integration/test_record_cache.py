"""The gateway's cache of object records follows every change made in etcd, by any gateway."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable

import aetcd
import pytest

from dynostore.client import Client
from dynostore.errors import NotFound
from tests.integration.conftest import Session

# How long another gateway's change may take to reach this gateway's cache (its etcd watch).
WATCH_DELAY = 2.0


def eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WATCH_DELAY
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def gone(client: Client, key: str, token: str) -> bool:
    try:
        client.get(key=key, token_user=token)
    except NotFound:
        return not client.exists(key=key, token_user=token)
    return False


@pytest.mark.parametrize("size", [100, 5000])  # inline, erasure-coded
def test_an_evict_through_another_gateway_reaches_this_ones_cache(
    shared: Session, second_gateway: str, size: int
) -> None:
    c, token = shared.client, shared.token
    data = os.urandom(size)
    key = c.put(data=data, token_user=token, catalog="cached")
    assert c.get(key=key, token_user=token) == data  # served from the cache from now on
    assert c.exists(key=key, token_user=token)
    with Client(second_gateway, tls_ca=shared.fabric.tls_ca) as other:
        other.evict(key=key, token_user=token)
    assert eventually(lambda: gone(c, key, token))


def test_a_record_changed_in_etcd_is_read_again(shared: Session) -> None:
    c, token = shared.client, shared.token
    key = c.put(data=os.urandom(5000), token_user=token, catalog="cached")
    assert all(chunk.stored for chunk in c.stat(key=key, token_user=token).chunks)

    async def mark_chunk_missing() -> None:  # what another gateway's damage report does
        host, port = shared.fabric.etcd_address.rsplit(":", 1)
        async with aetcd.Client(host=host, port=int(port)) as etcd:
            name = f"/dynostore/v1/objects/{key}".encode()
            record = json.loads((await etcd.get(name)).value)
            record["chunks"][0][1] = False
            await etcd.put(name, json.dumps(record).encode())

    asyncio.run(mark_chunk_missing())
    assert eventually(lambda: not c.stat(key=key, token_user=token).chunks[0].stored)
    assert c.stat(key=key, token_user=token).degraded


def test_the_evicting_gateway_forgets_at_once_the_other_soon(shared: Session, second_gateway: str) -> None:
    c, token = shared.client, shared.token
    key = c.put(data=b"cached or not", token_user=token, catalog="cached")
    with Client(second_gateway, tls_ca=shared.fabric.tls_ca) as other:
        assert other.get(key=key, token_user=token) == b"cached or not"
        other.evict(key=key, token_user=token)
        with pytest.raises(NotFound):  # the gateway that evicts forgets at once
            other.get(key=key, token_user=token)
    assert eventually(lambda: gone(c, key, token))
