"""Regenerate the committed Python code for Falco's gRPC API from the .proto files beside this module.

Run ``python -m responder.ingest.proto.generate`` (needs grpcio-tools, a test dependency) after
changing a .proto file. protoc writes ``import schema_pb2``; the imports are rewritten to be
package-relative so ``responder.ingest.proto`` imports without touching ``sys.path``, and each
file is marked ``# mypy: ignore-errors``: pyproject's mypy ``exclude`` only skips discovery, and
strict mypy still reports protoc's untyped code in every module that imports it.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_FILES = ("schema.proto", "outputs.proto", "version.proto")
_MODULES = tuple(name.removesuffix(".proto") + "_pb2" for name in PROTO_FILES)
# schema.proto has no service, so its *_pb2_grpc.py would hold only a version check.
_SERVICE_PROTOS = ("outputs.proto", "version.proto")
_OWN_IMPORT = re.compile(r"^import (" + "|".join(_MODULES) + r") as (\w+)$", re.MULTILINE)


def generated_names() -> list[str]:
    """The file names this module generates, in a stable order."""
    names = []
    for proto in PROTO_FILES:
        stem = proto.removesuffix(".proto")
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]
        if proto in _SERVICE_PROTOS:
            names.append(f"{stem}_pb2_grpc.py")
    return names


def _well_known_protos() -> Path:
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or spec.origin is None:
        raise SystemExit("grpcio-tools is not installed (pip install grpcio-tools)")
    return Path(spec.origin).parent / "_proto"


def _protoc(*outputs: str) -> None:
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        f"--proto_path={_well_known_protos()}",
        *outputs,
        *(str(PROTO_DIR / name) for name in PROTO_FILES),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stderr}")


_HEADER = "# mypy: ignore-errors\n"


def _postprocess(text: str) -> str:
    return _HEADER + _OWN_IMPORT.sub(r"from . import \1 as \2", text)


def generate(out_dir: Path) -> list[Path]:
    """Generate the Python code into ``out_dir`` and return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        _protoc(f"--python_out={scratch}", f"--pyi_out={scratch}", f"--grpc_python_out={scratch}")
        written = []
        for name in generated_names():
            target = out_dir / name
            target.write_text(_postprocess((Path(scratch) / name).read_text()))
            written.append(target)
    return written


def compile_descriptor_set(out_file: Path) -> None:
    """Write the FileDescriptorSet protoc compiles from the .proto files (for the staleness test)."""
    _protoc(f"--descriptor_set_out={out_file}")


def main() -> int:
    for path in generate(PROTO_DIR):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
