"""`uplodr convert`: upload files through a gateway, print their variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from uplodr.cli.units import format_size


def convert_files(
    files: tuple[Path, ...],
    folder: str,
    server: str,
    token: str | None,
    as_json: bool,
    timeout: float,
) -> int:
    headers = {"content-type": "application/octet-stream"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    console = Console(stderr=False)
    answers: list[dict[str, Any]] = []
    failures = 0
    with httpx.Client(base_url=server, timeout=timeout, headers=headers) as client:
        for path in files:
            response: httpx.Response | None = None
            try:
                with path.open("rb") as body:
                    response = client.post(
                        "/v1/images", params={"name": path.name, "folder": folder}, content=body
                    )
                answer = response.json()
            except httpx.HTTPError as error:
                answer = {"error": f"cannot reach {server}: {error}"}
                response = None
            except ValueError:
                status = response.status_code if response is not None else "?"
                answer = {"error": f"the server answered HTTP {status} without JSON"}
            if response is None or response.status_code != 200:
                failures += 1
                answer.setdefault("file_name", path.name)
                answer["status"] = response.status_code if response is not None else None
                if not as_json:
                    console.print(f"[red]{path.name}: {answer.get('error')}[/red]")
            elif not as_json:
                title = f"{path.name} → {len(answer['variants'])} variants"
                if answer.get("deduplicated"):
                    title += " (already converted)"
                table = Table(title=title)
                table.add_column("type")
                table.add_column("dimensions")
                table.add_column("size", justify="right")
                table.add_column("url", overflow="fold")  # whole, so it can be copied
                for v in answer["variants"]:
                    table.add_row(
                        v["mime_type"],
                        f"{v['width']}×{v['height']}",
                        format_size(v["size_bytes"]),
                        v["url"],
                    )
                console.print(table)
            answers.append(answer)
    if as_json:
        print(json.dumps(answers, indent=2))
    return 1 if failures else 0
