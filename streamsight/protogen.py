"""Generate the Python stubs of `protos/` into `streamsight/gen/` with grpcio-tools.

`python -m streamsight.protogen` (or `make proto`) rewrites the stubs; `generate(dir)` writes
them elsewhere so a test can compare them with the committed ones and fail when they are stale.
The proto package `streamsight.<area>.v1` lands in `streamsight/gen/<area>/v1/`; the generated
imports are rewritten to that place.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
GEN_DIR = Path(__file__).resolve().parent / "gen"
_IMPORT = re.compile(r"^from streamsight\.(\w+)\.v1 import", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write stubs for every proto into out_dir (laid out as `<area>/v1/*.py`); return the files."""
    from grpc_tools import protoc

    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed; see its messages above")
        produced = Path(tmp) / "streamsight"
        written = []
        for src in sorted(produced.rglob("*.py*")):
            rel = src.relative_to(produced)
            dst = out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(_IMPORT.sub(r"from streamsight.gen.\1.v1 import", src.read_text()))
            written.append(dst)
    for package in {out_dir, *(p.parent for p in written), *(p.parent.parent for p in written)}:
        init = package / "__init__.py"
        if not init.exists():
            init.write_text("")
            written.append(init)
    (out_dir / "__init__.py").write_text('"""Generated protobuf and gRPC stubs (make proto); do not edit."""\n')
    return sorted(set(written))


def main() -> int:
    if GEN_DIR.exists():
        shutil.rmtree(GEN_DIR)
    files = generate(GEN_DIR)
    print(f"generated {len(files)} files into {GEN_DIR.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
