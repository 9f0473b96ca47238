"""Every Python block of the README and docs/ runs as written against `dynostore up`, so the docs stay true.

A block right after ``<!-- excerpt: PATH -->`` is an excerpt of a file the
suite runs elsewhere: each of its lines must appear in that file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import dynostore_up

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- excerpt: (?P<excerpt>\S+) -->\n)?```python\n(?P<code>.*?)```", re.S)


def blocks() -> list[tuple[str, str, str | None]]:
    """``(where, code, excerpt of)`` for every Python block of the docs."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in BLOCK.finditer(text):
            line = text[: match.start("code")].count("\n") + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", match["code"], match["excerpt"]))
    return found


BLOCKS = blocks()


def test_the_docs_have_python_blocks() -> None:
    assert len(BLOCKS) >= 6  # the README's three, docs/sdk.md's two, docs/workflows.md's excerpt


@pytest.fixture(scope="module")
def fabric_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``dynostore up`` and a user's token, as a newcomer gets them: the two variables the snippets read."""
    root = tmp_path_factory.mktemp("docs")
    with dynostore_up("--root", str(root / "up")) as (gateway, admin, _):
        env = {**os.environ, "DYNOSTORE_GATEWAY": gateway, "DYNOSTORE_TOKEN": admin}
        made = subprocess.run(
            [sys.executable, "-m", "dynostore", "user", "add", "alice"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        yield {**env, "DYNOSTORE_TOKEN": made.stdout.strip()}


@pytest.mark.parametrize(("where", "code", "excerpt"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_python_block_runs_as_written(
    where: str, code: str, excerpt: str | None, fabric_env: dict[str, str], tmp_path: Path
) -> None:
    if excerpt is not None:
        source = (ROOT / excerpt).read_text()
        missing = [line for line in code.splitlines() if line.strip() and line.strip() not in source]
        assert missing == [], f"{where}: lines not in {excerpt}"
        return
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=fabric_env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stderr[-3000:]}"
