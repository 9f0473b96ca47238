"""Concurrent single calls of one client, gathered into batches against a real fabric: each gets its own outcome."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from dynostore.client import AsyncClient
from dynostore.errors import InvalidArgument, NotFound, PermissionDenied
from tests.integration.conftest import Session

pytestmark = pytest.mark.integration


def test_concurrent_puts_gets_and_exists_are_batched_and_fail_alone(shared: Session) -> None:
    s = shared
    other = s.fabric.create_user(f"stranger{os.getpid()}")
    foreign = s.client.put(data=b"not yours", token_user=other, catalog="theirs")
    datas = [os.urandom(n) for n in [100, 5000, 70_000, 300_000] * 8]

    async def main() -> None:
        async with AsyncClient(s.fabric.gateway, tls_ca=s.fabric.tls_ca) as client:
            puts = [client.put(d, token_user=s.token, catalog="coalesced", name=f"o{i}") for i, d in enumerate(datas)]
            puts.append(client.put(b"x", token_user=s.token, catalog="coalesced", name="bad\x00name"))
            outcomes = await asyncio.gather(*puts, return_exceptions=True)
            assert isinstance(outcomes[-1], InvalidArgument)  # it failed alone
            keys = [k for k in outcomes[:-1] if isinstance(k, str)]
            assert len(keys) == len(datas), outcomes
            assert client._puts.batches >= 1  # all were submitted before any ended

            missing = "0" * 32
            gets = await asyncio.gather(
                *(client.get(k, token_user=s.token) for k in [*keys, missing, foreign]), return_exceptions=True
            )
            assert gets[: len(datas)] == datas
            assert isinstance(gets[-2], NotFound)
            assert isinstance(gets[-1], PermissionDenied)
            assert client._gets.batches >= 1

            exists = await asyncio.gather(*(client.exists(k, token_user=s.token) for k in [*keys, missing, foreign]))
            assert exists == [True] * len(keys) + [False, False]
            assert client._exists.batches >= 1

    asyncio.run(main())
    # Each object was committed once, under its own name.
    listed = [o for o in s.client.list("coalesced", token_user=s.token) if o.name.startswith("o")]
    assert sorted(o.name for o in listed) == sorted(f"o{i}" for i in range(len(datas)))


def test_many_threads_of_one_client(shared: Session) -> None:
    s = shared

    def work(i: int) -> None:
        data = os.urandom(1000 + i)
        key = s.client.put(data, token_user=s.token, catalog="threads")
        assert s.client.get(key, token_user=s.token) == data
        assert s.client.exists(key, token_user=s.token)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(160)))
    assert len(list(s.client.list("threads", token_user=s.token))) == 160


def test_concurrent_evicts_are_batched_fail_alone_and_keep_usage_exact(shared: Session) -> None:
    s = shared
    name = f"evicter{os.getpid()}"
    token = s.fabric.create_user(name)
    other = s.fabric.create_user(f"bystander{os.getpid()}")
    foreign = s.client.put(data=b"not yours", token_user=other, catalog="theirs")
    sizes = [100, 5000, 70_000] * 10
    keys = s.client.put_batch([os.urandom(n) for n in sizes], token_user=token, catalog="evicted")
    kept = s.client.put(b"stays", token_user=token, catalog="evicted")

    async def main() -> list[bool | BaseException]:
        async with AsyncClient(s.fabric.gateway, tls_ca=s.fabric.tls_ca) as client:
            calls = [client.evict(k, token_user=token) for k in [*keys, keys[0], "0" * 32, foreign]]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert client._evicts.batches >= 1
            return outcomes

    outcomes = asyncio.run(main())
    assert outcomes[1 : len(keys)] == [True] * (len(keys) - 1)
    # The same key twice at once: evicted once, by one of the two calls (a lone call and a batch run
    # side by side, so either may land first).
    assert {outcomes[0], outcomes[len(keys)]} == {False, True}
    assert outcomes[-2] is False  # no such object
    assert isinstance(outcomes[-1], PermissionDenied)  # failed alone
    assert s.client.exists(foreign, token_user=other)
    assert [o.key for o in s.client.list("evicted", token_user=token)] == [kept]
    (user,) = [u for u in s.client.list_users(token_user=s.fabric.admin_token) if u.name == name]
    assert user.usage is not None
    assert (user.usage.objects, user.usage.bytes) == (1, len(b"stays"))
