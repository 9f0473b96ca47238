"""The fault matrix: each scenario's mixed workload under its faults, then the invariants.

Replay a failure with the seed it printed::

    DYNOSTORE_FAULT_SEED=1406 pytest tests/faults -k mixed

``DYNOSTORE_FAULT_TRIALS`` runs each scenario with that many seeds (from its
own, or from ``DYNOSTORE_FAULT_SEED``), ``DYNOSTORE_FAULT_SECONDS`` changes the
length of every workload, and ``DYNOSTORE_FAULT_REPORT=docs/reliability.md``
writes the figures of the run into that document's figures section.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from tests.faults.harness import RESULTS, SEED_ENV, hygiene, run_scenario, seeds
from tests.faults.injector import Scenario

pytestmark = pytest.mark.integration

EVERYTHING = ("gateway", "etcd", "container", "freeze", "damage")
SCENARIOS = [
    Scenario("gateway", ("gateway",), "gateway SIGKILLed or SIGTERMed, restarted at its address", seed=1401),
    Scenario("etcd", ("etcd",), "etcd SIGKILLed or SIGTERMed, restarted with its data", seed=1402),
    Scenario(
        "containers",
        ("container", "freeze"),
        "containers SIGKILLed, SIGTERMed or frozen (SIGSTOP) and restarted, at most 2 at once",
        seed=1403,
    ),
    Scenario(
        "damage",
        ("damage",),
        "chunk files bit-flipped, truncated or removed, at most 2 chunks of any object",
        seed=1404,
    ),
    Scenario("outage", ("outage",), "3 of 5 containers down at once (more than m), then back", seed=1405, max_down=3),
    Scenario(
        "cluster",
        ("gateway", "etcd", "container", "together"),
        "3 etcd members and 2 gateways: one gateway, one etcd member or one container SIGKILLed or SIGTERMed, "
        "or one of each at once, then restarted",
        seed=1408,
        etcd_members=3,
        gateways=2,
    ),
    Scenario(
        "door",
        ("gateway", "etcd", "container", "door"),
        "boto3 through the S3 front door (2 gateways behind it): a gateway, etcd, a container or the door "
        "SIGKILLed or SIGTERMed, then restarted",
        seed=1409,
        gateways=2,
        s3=True,
    ),
    Scenario(
        "mixed",
        EVERYTHING,
        "all of the above but the outage, with the gateway's repair sweeps every second",
        seed=1406,
        seconds=15.0,
        trials=2,
        repair_interval=1.0,
        repair_grace=2.0,
    ),
]
MATRIX = [pytest.param(s, seed, id=f"{s.name}-{seed}") for s in SCENARIOS for seed in seeds(s)]


@pytest.mark.parametrize(("scenario", "seed"), MATRIX)
def test_faults(
    scenario: Scenario, seed: int, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    replay = f"{SEED_ENV}={seed} pytest tests/faults -k {scenario.name}"
    print(f"fault scenario {scenario.name}, seed {seed}; replay: {replay}")
    figures = run_scenario(scenario, seed, tmp_path)
    out, err = capfd.readouterr()
    sys.stdout.write(out)
    sys.stderr.write(err)
    hygiene(figures, caplog.records, err)
    RESULTS.append(figures)
    print("\n".join(figures.lines()))
    assert not figures.violations, f"seed {seed}: " + "\n".join(figures.violations[:30])
