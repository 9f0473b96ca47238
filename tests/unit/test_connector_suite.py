"""The connector suite passes for ProxyStore's own connectors (so the suite itself is sound)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from proxystore.connectors.file import FileConnector
from proxystore.connectors.local import LocalConnector

from tests.connector_conformance import *  # noqa: F403 - the shared test functions


@pytest.fixture(params=["local", "file"])
def connector(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    made = LocalConnector() if request.param == "local" else FileConnector(str(tmp_path / "store"))
    yield made
    made.close()
    made.close()  # idempotent
