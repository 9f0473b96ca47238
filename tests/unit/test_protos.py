"""Generated code must match what scripts/gen_protos.py makes from protos/."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec
    assert spec.loader
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = gen
    spec.loader.exec_module(gen)
    fresh = gen.generate(tmp_path / "_proto")
    committed = ROOT / "dynostore" / "_proto"
    names = sorted(p.name for p in fresh)
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file()), "files differ"
    stale = [p.name for p in fresh if p.read_text() != (committed / p.name).read_text()]
    assert not stale, f"dynostore/_proto is stale, run scripts/gen_protos.py: {stale}"
