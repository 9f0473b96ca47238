"""DynoConnector through ProxyStore against a real fabric, in one and in several processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from proxystore.proxy import Proxy
from proxystore.store import Store

from dynostore.proxystore import DynoConnector, DynoKey
from tests.connector_conformance import *  # noqa: F403 - the shared test functions
from tests.integration.conftest import Session, eventually

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["direct", "relay"])
def connector(shared: Session, request: pytest.FixtureRequest) -> Iterator[DynoConnector]:
    """The connector under the conformance suite: straight to the containers, and through the gateway's relay."""
    made = DynoConnector(
        apigateway=shared.fabric.gateway,
        token_user=shared.token,
        catalog="proxystore",
        tls_ca=str(shared.fabric.tls_ca) if shared.fabric.tls_ca else None,
        relay=request.param == "relay",
        ttl=3600.0 if request.param == "relay" else None,  # config() round-trips it
    )
    yield made
    made.close()
    made.close()


def test_config_is_exactly_the_constructor_keywords(connector: DynoConnector) -> None:
    import inspect

    assert set(connector.config()) == set(inspect.signature(DynoConnector).parameters)


def test_objects_land_in_the_catalog(shared: Session, connector: DynoConnector) -> None:
    key = connector.put(b"listed")
    assert key.key in {i.key for i in shared.client.list(catalog="proxystore", token_user=shared.token)}


def test_set_of_a_key_neither_planned_nor_put_is_not_found(connector: DynoConnector) -> None:
    with pytest.raises(KeyError):
        connector.set(DynoKey("0" * 32), b"x")


def test_store_proxies_python_objects(connector: DynoConnector) -> None:
    with Store("dyno-in-process", connector) as store:
        for value in (b"raw bytes", {"a": [1, 2, 3]}, np.arange(100_000).reshape(100, 1000), 3):
            proxy = store.proxy(value)
            assert isinstance(proxy, Proxy)
            if isinstance(value, np.ndarray):
                assert np.array_equal(proxy, value)
            else:
                assert proxy == value
        assert store.proxy(3) ** 2 == 9
        key = store.put({"evict": "me"})
        assert store.exists(key)
        store.evict(key)
        assert not store.exists(key)


def test_proxy_resolves_in_another_process(shared: Session, tmp_path: Path) -> None:
    connector = DynoConnector(
        apigateway=shared.fabric.gateway,
        token_user=shared.token,
        catalog="proxystore",
        tls_ca=str(shared.fabric.tls_ca) if shared.fabric.tls_ca else None,
    )
    value = {"array": list(range(1000)), "label": "from the parent"}
    with Store("dyno-cross-process", connector, register=True) as store:
        proxy = store.proxy(value)
        pickled = tmp_path / "proxy.pkl"
        pickled.write_bytes(pickle.dumps(proxy))
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import pickle, sys; p = pickle.loads(open(sys.argv[1], 'rb').read());"
                "print(p['label'], sum(p['array']))",
                str(pickled),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == f"from the parent {sum(range(1000))}"


def test_workflow_example_runs(shared: Session) -> None:
    env = {**shared.cli_env, "DYNOSTORE_TOKEN": shared.token}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "proxystore_workflow.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4
    assert all("mean=499999.5000 shape=(1000, 1000)" in line for line in lines)


def test_an_evict_on_the_clients_own_thread_goes_on_in_the_background(connector: DynoConnector) -> None:
    """ProxyStore evicts an owned proxy's object in its __del__, which the garbage collector may run anywhere,
    the client's own event-loop thread included: there a waiting call would wait for itself forever."""
    key = connector.put(b"collected")
    client = connector.client
    done = threading.Event()
    refused: list[BaseException] = []

    def on_loop_thread() -> None:
        connector.evict(key)  # must not block the loop it needs
        try:
            client.exists(key.key, token_user=connector.token_user)
        except RuntimeError as exc:  # a waiting call there is refused, not a deadlock
            refused.append(exc)
        done.set()

    client._loop.call_soon_threadsafe(on_loop_thread)
    assert done.wait(30)
    assert "own event-loop thread" in str(refused[0])
    assert eventually(lambda: not connector.exists(key), within=30)

    # On another client's loop thread too: a finalizer there may hold a lock of gRPC's that
    # this client's loop needs, so waiting there could deadlock both (a test run hung this way).
    second = connector.put(b"collected elsewhere")
    elsewhere = DynoConnector(**connector.config())
    try:
        evicted = threading.Event()

        def on_the_other_loop() -> None:
            connector.evict(second)
            evicted.set()

        # The connector's own loop is held up, so an evict that waited for it could not return.
        held = threading.Event()
        connector.client._loop.call_soon_threadsafe(held.wait)
        try:
            elsewhere.client._loop.call_soon_threadsafe(on_the_other_loop)
            assert evicted.wait(30)
        finally:
            held.set()
        assert eventually(lambda: not connector.exists(second), within=30)
    finally:
        elsewhere.close()
