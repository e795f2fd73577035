"""A gRPC client that knows only the contract as it was before issue 11 (uplodr.proto in this
folder, compiled into uplodr_pb2.py here and committed): no per-file options in its requests,
no placeholder, size, format or role in the answers it parses.

    python old_client.py ADDRESS TOKEN FILE NAME FOLDER

It streams FILE in 256 KiB chunks and prints the answer as JSON, as far as it understands it.
It runs in a process of its own: the old and the new generated modules describe the same proto
file, which one process's descriptor pool cannot hold twice.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

HERE = Path(__file__).resolve().parent
CHUNK = 256 * 1024


def old_messages() -> Any:
    spec = importlib.util.spec_from_file_location(
        "uplodr_pb2_before_issue11", HERE / "uplodr_pb2.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(address: str, token: str, path: Path, name: str, folder: str) -> None:
    pb = old_messages()
    data = path.read_bytes()

    def requests() -> Iterator[Any]:
        for start in range(0, len(data), CHUNK):
            first = start == 0
            yield pb.UploadReq(
                file_name=name if first else "",
                folder=folder if first else "",
                data=data[start : start + CHUNK],
            )
        yield pb.UploadReq(done=True)

    with grpc.insecure_channel(address) as channel:
        stream = channel.stream_stream(
            "/uplodr.v1.Image/Stream",
            request_serializer=pb.UploadReq.SerializeToString,
            response_deserializer=pb.UploadResp.FromString,
        )
        answers = list(
            stream(requests(), metadata=(("authorization", f"Bearer {token}"),), timeout=120)
        )
    print(
        json.dumps(
            [
                {
                    "file_name": answer.file_name,
                    "folder": answer.folder,
                    "deduplicated": answer.deduplicated,
                    "variants": [
                        {
                            "url": v.url,
                            "mime_type": v.mime_type,
                            "width": v.width,
                            "height": v.height,
                            "size_bytes": v.size_bytes,
                        }
                        for v in answer.variants
                    ],
                }
                for answer in answers
            ]
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5])
