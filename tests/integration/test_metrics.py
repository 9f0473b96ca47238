"""A real Prometheus server scrapes a LocalFabric(metrics=True) and answers PromQL about the fabric's own puts.

Prometheus is Debian's ``prometheus`` package (scripts/test.sh installs it as
root); the test runs its binary as a child process with a config file of its
own (never the Debian service) and stops it by pid, even when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dynostore.local import ContainerSpec, LocalFabric, ManagedProcess, free_port
from tests.conftest import skip_or_fail
from tests.integration.conftest import eventually

# Seconds Prometheus may take to start, and to scrape what the test did (a scrape every second).
PROMETHEUS_WITHIN = 60.0


@contextmanager
def prometheus(directory: Path, jobs: dict[str, list[str]]) -> Iterator[str]:
    """A Prometheus server scraping ``jobs`` (job name -> ``host:port`` targets) every second; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail("Prometheus is not installed (Debian: apt-get install prometheus; scripts/test.sh does as root).")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in jobs.items()],
    }
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "prometheus.yml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    address = f"127.0.0.1:{free_port()}"
    process = ManagedProcess(
        "prometheus",
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ],
        directory / "prometheus.log",
    )
    process.start()
    try:
        url = f"http://{address}"
        if not eventually(lambda: _ready(url), within=PROMETHEUS_WITHIN):
            raise AssertionError(f"Prometheus did not become ready:\n{process.log_tail()}")
        yield url
    finally:
        process.stop()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant PromQL query through Prometheus' HTTP API."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=5) as reply:
        answer = json.loads(reply.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def scalar(url: str, promql: str) -> float | None:
    """The single value a query answers (None while it answers nothing)."""
    result = query(url, promql)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.timeout(240)
def test_prometheus_scrapes_the_fabric_and_counts_its_puts(tmp_path: Path) -> None:
    small, large = [b"tiny %d" % i for i in range(3)], [os.urandom(300_000) for _ in range(2)]
    # Scrubs and repair sweeps every second, so that their progress shows too.
    specs = [ContainerSpec(settings={"scrub_interval": 1}) for _ in range(3)]
    with LocalFabric(
        specs,
        k=2,
        m=1,
        root=tmp_path / "fabric",
        repair_interval=1,
        metrics=True,
        gateway_args=["--catalog-metrics-interval", "1"],
    ) as fabric:
        gateway = fabric.gateways[0]
        assert gateway.metrics
        assert all(c.metrics for c in fabric.containers)
        token = fabric.create_user("alice")
        with fabric.client() as client:
            keys = [client.put(data, token_user=token, catalog="measured") for data in small + large]
            assert [client.get(key, token) for key in keys] == small + large
        jobs = {"gateway": [gateway.metrics], "container": [c.metrics for c in fabric.containers]}
        with prometheus(tmp_path / "prometheus", jobs) as url:

            def answers(promql: str, expected: float) -> bool:
                return scalar(url, promql) == expected

            # Once every target has been scraped, Prometheus knows everything the puts did (it was all before).
            targets = 1 + len(fabric.containers)
            assert eventually(lambda: answers("count(up == 1)", targets), within=PROMETHEUS_WITHIN), query(url, "up")
            puts = 'sum(dynostore_rpc_requests_total{job="gateway",method="CommitPut",code="OK"})'
            assert eventually(lambda: answers(puts, len(keys)), within=PROMETHEUS_WITHIN), scalar(url, puts)
            assert answers('sum by (layout) (dynostore_objects_committed_total{layout="inline"})', len(small))
            committed = sum(len(data) for data in small + large)
            assert answers("sum(dynostore_object_committed_bytes_total)", committed)
            # Each large object went as k + m chunks, one per container, and was read back from k of them.
            writes = 'sum(dynostore_chunk_writes_total{code="OK"})'
            assert eventually(lambda: answers(writes, len(large) * 3), within=PROMETHEUS_WITHIN), scalar(url, writes)
            assert (scalar(url, "sum(dynostore_chunk_written_bytes_total)") or 0) > sum(map(len, large))
            assert (scalar(url, 'sum(dynostore_chunk_reads_total{code="OK"})') or 0) >= len(large) * 2
            # Every container reports its capacity, and its id and site through dynostore_container_info.
            sites = query(url, "dynostore_container_info * on (instance) group_left dynostore_container_free_bytes")
            assert {r["metric"]["site"] for r in sites} == {c.site for c in fabric.containers}
            latency = (
                "histogram_quantile(0.99, sum by (le) "
                '(dynostore_rpc_duration_seconds_bucket{job="gateway",method="CommitPut"}))'
            )
            assert (scalar(url, latency) or 0) > 0
            # Scrubs and sweeps run and show their progress.
            for promql, least in (
                ('min(dynostore_scrub_last_completion_timestamp_seconds{job="container"})', 1),
                ("sum(dynostore_scrub_checked_chunks_total)", len(large) * 3),
                ('sum(dynostore_repair_sweeps_total{result="ok"})', 1),
                ("sum(dynostore_repair_checked_objects_total)", len(keys)),
            ):
                assert eventually(lambda: (scalar(url, promql) or 0) >= least, within=PROMETHEUS_WITHIN), promql  # noqa: B023
            assert answers("max(dynostore_degraded_objects)", 0)
            # Objects and bytes per catalog, read from etcd every second (in this test).
            owned = '{owner="alice",catalog="measured"}'
            assert eventually(lambda: answers(f"dynostore_catalog_objects{owned}", len(keys)), within=PROMETHEUS_WITHIN)
            assert answers(f"dynostore_catalog_bytes{owned}", committed)
            # Every query of the Grafana dashboard is valid PromQL (query() checks the status).
            dashboard = json.loads(
                (Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text()
            )
            for panel in dashboard["panels"]:
                for target in panel.get("targets", []):
                    query(url, target["expr"].replace("$__rate_interval", "1m").replace("$job", ".*"))
        # A restarted gateway serves its metrics at the same address.
        address = gateway.metrics
        gateway.stop()
        gateway.start()
        assert gateway.metrics == address
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
            assert b"dynostore_rpc_requests_total" in reply.read()
