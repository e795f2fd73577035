"""The committed gRPC stubs are exactly what scripts/gen_proto.py makes of the proto file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO

STUBS = REPO / "src" / "uplodr" / "proto"


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_proto.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == [
        "uplodr_pb2.py",
        "uplodr_pb2.pyi",
        "uplodr_pb2_grpc.py",
        "uplodr_pb2_grpc.pyi",
    ]
    for name in generated:
        assert (tmp_path / name).read_text() == (STUBS / name).read_text(), (
            f"{name} is stale: run `uv run python scripts/gen_proto.py`"
        )
