"""Regenerate the Python code in ``dynostore/_proto`` from ``protos/``.

Usage: ``python scripts/gen_protos.py [OUTPUT_DIR]`` (default: the package).
The generated modules import each other relatively, so the package can live
anywhere; nothing else may write into ``dynostore/_proto``.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE_DIR = ROOT / "dynostore" / "_proto"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"
_IMPORT = re.compile(r"^from dynostore\.v1 import (\w+)", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Generate code for every .proto into ``out_dir`` and return the files."""
    sources = sorted(PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTOS}",
            f"-I{WELL_KNOWN}",  # google/protobuf/*.proto (Timestamp)
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(s) for s in sources),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*_pb2*"):
            old.unlink()
        written = []
        for path in sorted((Path(tmp) / "dynostore" / "v1").iterdir()):
            text = _IMPORT.sub(r"from . import \1", path.read_text())
            target = out_dir / path.name
            target.write_text(text)
            written.append(target)
    init = out_dir / "__init__.py"
    init.write_text('"""Generated gRPC code; run scripts/gen_protos.py, never edit."""\n')
    return [init, *written]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_DIR
    for f in generate(target):
        print(f.relative_to(target.parent) if target == PACKAGE_DIR else f)
    shutil.rmtree(target / "__pycache__", ignore_errors=True)
