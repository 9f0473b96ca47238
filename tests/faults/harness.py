"""The fault-injection harness: one scenario run, from fabric to figures, and the report of a session's runs.

A scenario runs a mixed workload (puts of every kind, gets, evicts, repairs)
from several threads against a :class:`LocalFabric`, while the main thread
(the one that started the fabric's processes: they get SIGTERM when that
thread ends) injects faults drawn from a seeded :class:`random.Random`. The
ledger records what every operation was given and what it returned or
raised; after the fabric is whole again, :class:`Checker` holds the fabric
to what the ledger says it promised.

The fault loop's draws come from the seed alone, but what a fault hits (the
keys stored so far, the operation in flight) depends on timing: a seed
replays the same sequence of faults, not the same interleaving.

The parts: ``ledger`` (what every operation was given and what came of it,
and the figures), ``workload`` (the threads), ``injector`` (the scenarios and
the fault loop), ``checker`` (the invariants after the run).
"""

from __future__ import annotations

import logging
import os
import random
import re
import statistics
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

from dynostore.local import LocalFabric
from tests.faults.checker import Checker
from tests.faults.door import DoorLedger, check_door, door_workers
from tests.faults.injector import Faults, Scenario
from tests.faults.ledger import INLINE_MAX, JOIN_LIMIT, RECOVERY_LIMIT, Figures, K, Ledger, M, N, within
from tests.faults.workload import WORKERS, Worker

# Threads of the S3 front door's workload.
DOOR_WORKERS = 4

SEED_ENV = "DYNOSTORE_FAULT_SEED"
TRIALS_ENV = "DYNOSTORE_FAULT_TRIALS"
SECONDS_ENV = "DYNOSTORE_FAULT_SECONDS"
REPORT_ENV = "DYNOSTORE_FAULT_REPORT"
# What asyncio and Python print for abandoned tasks, generators and loops.
ABANDONED = (
    "Task was destroyed but it is pending",
    "asynchronous generator is already running",
    "Event loop is closed",
    "was never awaited",
    "Task exception was never retrieved",
)
# Figures of every scenario run in this session, for the summary at the end.
RESULTS: list[Figures] = []


def seeds(scenario: Scenario) -> list[int]:
    """The seeds to run ``scenario`` with: from ``DYNOSTORE_FAULT_SEED`` or its own seed on, one per trial."""
    base = int(os.environ.get(SEED_ENV) or scenario.seed)
    return [base + trial for trial in range(int(os.environ.get(TRIALS_ENV) or scenario.trials))]


def server_logs(fabric: LocalFabric, figures: Figures) -> None:
    """Figures from the servers' logs: the gateway's repairs, and the records logged with a traceback."""
    chained = ("The above exception", "During handling of the above exception")
    logged: Counter[str] = Counter()
    for path in sorted((fabric.root / "logs").glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()
        if path.stem == "gateway":
            figures.sweep_repairs = sum("Repaired object" in line for line in lines)
        for number, line in enumerate(lines):
            if not line.startswith("Traceback"):
                continue
            before = next((x for x in reversed(lines[:number]) if x.strip()), "")
            if before.startswith(chained):
                continue  # the same record's chained exception
            figures.server_tracebacks[path.stem] += 1
            # The record's message, without its time stamp and with its numbers masked.
            message = re.sub(r"\d+(\.\d+)?", "N", before.split(" ", 2)[-1])
            logged[f"{path.stem}: {message[:200]}"] += 1
    for message, count in logged.most_common(5):
        figures.notes.append(f"{count} records logged with a traceback: {message}")


def run_scenario(scenario: Scenario, seed: int, root: Path) -> Figures:
    """Run ``scenario`` with ``seed`` on a fabric of its own under ``root``; return its figures."""
    began = time.monotonic()
    figures = Figures(scenario.name, seed)
    ledger = Ledger(figures)
    rng = random.Random(seed)
    seconds = float(os.environ.get(SECONDS_ENV) or scenario.seconds)
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    with LocalFabric(
        containers=N,
        root=root / "fabric",
        k=K,
        m=M,
        inline_max_bytes=INLINE_MAX,
        repair_interval=scenario.repair_interval,
        repair_grace=scenario.repair_grace,
        etcd_members=scenario.etcd_members,
        gateways=scenario.gateways,
        s3=scenario.s3,
    ) as fabric:
        token = fabric.create_user("chaos")
        with (
            fabric.client(timeout=20.0, fragment_timeout=4.0) as first,
            fabric.client(timeout=20.0, fragment_timeout=4.0) as second,
            fabric.client(timeout=20.0, fragment_timeout=4.0) as probe,
        ):
            faults = Faults(fabric, scenario, rng, ledger, probe, token)
            start = time.monotonic()
            deadline = start + seconds
            door: DoorLedger | None = None
            workers: list[threading.Thread]
            if scenario.s3:
                keys = probe.create_s3_key(token_user=token)
                door, door_threads = door_workers(fabric.s3_endpoint, keys, ledger, rng, deadline, DOOR_WORKERS)
                workers = list(door_threads)
            else:
                workers = [
                    Worker(i, (first, second)[i % 2], token, ledger, rng.randrange(2**32), files, deadline)
                    for i in range(WORKERS)
                ]
            for worker in workers:
                worker.start()
            try:
                faults.run(deadline)
            except Exception as exc:  # a process that did not start again, say: the workload goes on without faults
                ledger.violation(f"the fault loop failed: {exc!r}\n{traceback.format_exc()}")
            try:
                faults.restore()
            except Exception as exc:
                ledger.violation(f"the fabric could not be brought back: {exc!r}")
                restored = False
            else:
                restored = True
            for worker in workers:
                worker.join(JOIN_LIMIT)
                if worker.is_alive():
                    ledger.violation(f"{worker.name} did not finish within {JOIN_LIMIT} s of the deadline")
            figures.workload_seconds = time.monotonic() - start
            if restored:
                checker = Checker(fabric, probe, token, ledger)
                if not within(RECOVERY_LIMIT, checker.registered):
                    ledger.violation(f"not every container registered again within {RECOVERY_LIMIT} s")
                faults.recover("the whole fabric")
                if door is None:
                    checker.check()
                else:
                    door_stopped = any(fault.startswith("door") for fault in figures.faults)
                    check_door(door, fabric.s3_endpoint, keys, door_stopped)
            server_logs(fabric, figures)
    figures.total_seconds = time.monotonic() - began
    return figures


FIGURES_START = "<!-- fault-figures:start -->"
FIGURES_END = "<!-- fault-figures:end -->"


def _seconds(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} / {max(times):.2f} s" if times else "-"


def _because(figures: Figures) -> str:
    reasons = ", ".join(f"{why} {n}" for why, n in figures.rebuilt_because.most_common())
    return f" (objects: {reasons})" if reasons else ""


def markdown(results: list[Figures], command: str) -> str:
    """The figures of a run as Markdown: one table row per scenario run, then the outcomes of each operation."""
    lines = [
        f"Produced by `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores).",
        "",
        "| Scenario | Seed | Faults injected | Ops (ok / failed) | Recovery (median / max) "
        "| Objects checked | Failed puts found whole | Chunks rebuilt after | Sweep repairs | Violations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in results:
        faults = ", ".join(f"{kind} x{n}" for kind, n in sorted(f.faults.items())) or "none"
        lines.append(
            f"| {f.scenario} | {f.seed} | {faults} | {f.ok} / {f.failed} | {_seconds(f.measured())} "
            f"| {f.objects_checked} | {f.appeared} | {f.rebuilt}{_because(f)} | {f.sweep_repairs} "
            f"| {len(f.violations)} |"
        )
    total: dict[str, Counter[str]] = {}
    for f in results:
        for (op, outcome), n in f.ops.items():
            total.setdefault(op, Counter())[outcome] += n
    lines += ["", "Outcomes of the operations, over all scenarios:", "", "| Operation | Outcomes |", "|---|---|"]
    for op, outcomes in sorted(total.items()):
        lines.append(f"| `{op}` | " + ", ".join(f"{o} {n}" for o, n in outcomes.most_common()) + " |")
    restarts: dict[str, list[float]] = {}
    for f in results:
        for what, seconds in f.recoveries:
            if seconds is not None:
                restarts.setdefault(what.rstrip("0123456789"), []).append(seconds)
    lines += ["", "Time from a restart until a put works again:", "", "| Restarted | Restarts | Median / max |"]
    lines.append("|---|---|---|")
    for what, times in sorted(restarts.items()):
        lines.append(f"| {what} | {len(times)} | {_seconds(times)} |")
    return "\n".join(lines) + "\n"


def write_report(path: Path, results: list[Figures], command: str) -> None:
    """Put the figures between the figure markers of ``path`` (appended with the markers if it has none)."""
    text = path.read_text() if path.exists() else ""
    block = f"{FIGURES_START}\n{markdown(results, command)}{FIGURES_END}"
    if FIGURES_START in text and FIGURES_END in text:
        head, rest = text.split(FIGURES_START, 1)
        text = head + block + rest.split(FIGURES_END, 1)[1]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    path.write_text(text)


# hygiene ---------------------------------------------------------------------


def hygiene(figures: Figures, records: list[logging.LogRecord], stderr: str) -> None:
    """The clients' log and standard error: no abandoned tasks or loops, no tracebacks."""
    tracebacks = [r for r in records if r.exc_info or r.exc_text]
    if tracebacks:
        first = tracebacks[0]
        figures.violations.append(
            f"{len(tracebacks)} log records with a traceback, the first from {first.name}: {first.getMessage()}"
        )
    for phrase in ABANDONED:
        logged = [r for r in records if phrase in r.getMessage()]
        if logged:
            figures.violations.append(f"{len(logged)} log records say {phrase!r}: {logged[0].getMessage()}")
        if phrase in stderr:
            figures.violations.append(f"standard error says {phrase!r}")
    if "Traceback" in stderr:
        figures.violations.append("standard error holds a traceback: " + stderr[stderr.index("Traceback") :][:2000])
