"""Generate agent/pb from proto/ (grpcio-tools). `--check` fails when the committed code is stale."""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "agent" / "pb"


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    includes = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{includes}", f"--python_out={out}", f"--pyi_out={out}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # protoc writes absolute imports (rollback_agent.v1...); anchor them under agent.pb.
    for path in out.rglob("*.py*"):
        text = re.sub(
            r"^from rollback_agent\.v1 import", "from agent.pb.rollback_agent.v1 import", path.read_text(), flags=re.M
        )
        path.write_text(text)
    for package in [out, *(d for d in out.rglob("*") if d.is_dir())]:
        (package / "__init__.py").touch()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if agent/pb differs from a fresh generation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "pb"
        fresh.mkdir()
        generate(fresh)
        if args.check:
            cmp = filecmp.dircmp(fresh, OUT_DIR)
            stale = _differences(cmp)
            if stale:
                print("agent/pb is stale; run `make proto`: " + ", ".join(stale), file=sys.stderr)
                return 1
            return 0
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        shutil.copytree(fresh, OUT_DIR)
    return 0


def _differences(cmp: filecmp.dircmp[str]) -> list[str]:
    found = [*cmp.left_only, *cmp.right_only, *cmp.diff_files]
    found = [f for f in found if f != "__pycache__"]
    for sub in cmp.subdirs.values():
        found.extend(_differences(sub))
    return found


if __name__ == "__main__":
    sys.exit(main())
