"""One conformance suite for every ProxyStore connector surface.

ProxyStore keeps its shared connector tests out of its wheel; this suite
checks the same protocol (proxystore 1.1 ``Connector`` and, where offered,
``DeferrableConnector``) in its own words. A test module imports these test
functions and provides a ``connector`` fixture.
"""

from __future__ import annotations

import inspect
import os
import pickle
import uuid
from typing import Any

import pytest
from proxystore.connectors.protocols import Connector, DeferrableConnector
from proxystore.store import Store, unregister_store
from proxystore.store.ref import update
from proxystore.store.utils import get_key


def _missing_key(connector: Any) -> Any:
    """A key with no object: put one, then evict it."""
    key = connector.put(b"soon gone")
    connector.evict(key)
    return key


def test_satisfies_the_protocol(connector: Any) -> None:
    assert isinstance(connector, Connector)


def test_put_get_round_trip(connector: Any) -> None:
    data = os.urandom(4096)
    key = connector.put(data)
    assert bytes(connector.get(key)) == data


def test_bytes_like_inputs(connector: Any) -> None:
    data = os.urandom(1000)
    for wrapped in (bytearray(data), memoryview(data)):
        assert bytes(connector.get(connector.put(wrapped))) == data


def test_empty_and_large_objects(connector: Any) -> None:
    for data in (b"", os.urandom(5 * 1024 * 1024 + 3)):
        assert bytes(connector.get(connector.put(data))) == data


def test_keys_are_picklable_named_tuples(connector: Any) -> None:
    key = connector.put(b"x")
    assert isinstance(key, tuple)
    assert hasattr(type(key), "_fields")
    assert pickle.loads(pickle.dumps(key)) == key
    assert bytes(connector.get(pickle.loads(pickle.dumps(key)))) == b"x"


def test_exists_and_evict(connector: Any) -> None:
    key = connector.put(b"here")
    assert connector.exists(key)
    connector.evict(key)
    assert not connector.exists(key)
    assert connector.get(key) is None
    connector.evict(key)  # evicting again is not an error


def test_missing_keys_read_as_none(connector: Any) -> None:
    assert connector.get(_missing_key(connector)) is None


def test_batches_keep_order(connector: Any) -> None:
    objects = [os.urandom(n) for n in (0, 1, 100, 10_000, 70_000)]
    keys = connector.put_batch(objects)
    assert len(keys) == len(objects)
    assert [bytes(b) for b in connector.get_batch(keys)] == objects
    missing = _missing_key(connector)
    got = connector.get_batch([keys[1], missing, keys[0]])
    assert [None if g is None else bytes(g) for g in got] == [objects[1], None, objects[0]]


def test_config_is_the_constructor_keywords(connector: Any) -> None:
    config = connector.config()
    parameters = set(inspect.signature(type(connector)).parameters)
    assert set(config) <= parameters
    required = {
        name
        for name, p in inspect.signature(type(connector)).parameters.items()
        if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }
    assert required <= set(config)
    twin = type(connector).from_config(config)
    try:
        assert twin.config() == config
    finally:
        twin.close()


def test_a_copy_from_config_reads_the_same_objects(connector: Any) -> None:
    if connector.config().get("include_data_in_config") is False:
        pytest.skip("an in-process store shares nothing with its copies")
    key = connector.put(b"shared")
    twin = type(connector).from_config(connector.config())
    try:
        assert bytes(twin.get(key)) == b"shared"
    finally:
        twin.close()


def test_deferred_set(connector: Any) -> None:
    if not isinstance(connector, DeferrableConnector):
        pytest.skip(f"{type(connector).__name__} does not defer keys (no new_key/set)")
    deferrable: Any = connector
    key = deferrable.new_key()
    assert not deferrable.exists(key)
    deferrable.set(key, b"later")
    assert bytes(deferrable.get(key)) == b"later"


def test_set_twice_keeps_the_second(connector: Any) -> None:
    """A deferred key set twice holds the second object (ProxyStore's connector tests set a key twice)."""
    if not isinstance(connector, DeferrableConnector):
        pytest.skip(f"{type(connector).__name__} does not defer keys (no new_key/set)")
    deferrable: Any = connector
    key = deferrable.new_key()
    deferrable.set(key, b"first")
    deferrable.set(key, b"second, and longer")
    assert bytes(deferrable.get(key)) == b"second, and longer"
    assert deferrable.exists(key)


def test_set_overwrites_a_put_object(connector: Any) -> None:
    """``set`` on a key made by ``put`` replaces its object: what ``Store`` does to write a proxy back."""
    if not isinstance(connector, DeferrableConnector):
        pytest.skip(f"{type(connector).__name__} does not defer keys (no new_key/set)")
    deferrable: Any = connector
    key = deferrable.put(b"old")
    deferrable.set(key, os.urandom(9000))
    replacement = b"new" * 3000
    deferrable.set(key, replacement)
    assert bytes(deferrable.get(key)) == replacement
    assert [bytes(b) if b is not None else None for b in deferrable.get_batch([key])] == [replacement]


def test_an_owned_proxy_written_back_with_update(connector: Any) -> None:
    """ProxyStore's ``update()`` of an owned proxy stores the changed target under the same key."""
    if not isinstance(connector, DeferrableConnector):
        pytest.skip(f"{type(connector).__name__} does not defer keys (no new_key/set)")
    deferrable: Any = connector
    # Registered, so that the proxy's factory finds this store (and its connector) again.
    store = Store(f"conformance-{uuid.uuid4().hex}", deferrable, cache_size=0, register=True)
    try:
        proxy = store.owned_proxy([1, 2, 3])
        assert proxy == [1, 2, 3]  # resolved: update() writes back only a resolved target
        proxy.append(4)
        update(proxy)
        key = get_key(proxy)
        assert store.get(key) == [1, 2, 3, 4]
        del proxy  # its finalizer evicts the object: now, while the connector still has a fabric to reach
        assert not store.exists(key)
    finally:
        unregister_store(store)
