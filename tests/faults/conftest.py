"""The fault suite's summary: every scenario's figures at the end of the run (and in a document, if asked)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.faults.harness import REPORT_ENV, RESULTS, write_report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault injection figures")
    for figures in RESULTS:
        for line in figures.lines():
            terminalreporter.write_line(line)
    if target := os.environ.get(REPORT_ENV):
        command = f"{REPORT_ENV}={target} pytest {' '.join(sys.argv[1:]) or 'tests/faults'}"
        write_report(Path(target), RESULTS, command)
        terminalreporter.write_line(f"figures written to {target}")
