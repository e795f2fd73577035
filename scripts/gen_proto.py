"""Regenerate the Python stubs of proto/uplodr/v1/uplodr.proto into src/uplodr/proto.

protoc names imports after the proto package (`from uplodr.v1 import ...`); the stubs live in
`uplodr.proto`, so that one import line is rewritten. tests/test_proto_stubs.py fails when the
committed stubs differ from what this script produces.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "uplodr" / "proto"


def generate(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            str(ROOT / "proto" / "uplodr" / "v1" / "uplodr.proto"),
        ]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
        for produced in sorted((Path(tmp) / "uplodr" / "v1").iterdir()):
            text = produced.read_text().replace("from uplodr.v1 import", "from uplodr.proto import")
            (out / produced.name).write_text(text)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
