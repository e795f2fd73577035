"""Admission before the body, through a real gateway: past `--max-in-flight` (or a token's own
bound, or the spool budget) an upload is answered 503 `busy` with `Retry-After` before its body
is written anywhere; a body that trickles in is cut off at `--body-timeout` (408); a burst
leaves nothing behind — no machine, no worker, no spool file — and the gateway's memory stays
flat."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from tests.hostile.support import SpoolWatch, metric, status_kb
from tests.support.gateway import Gateway, running_gateway
from tests.support.paths import corpus_file
from tests.support.waiting import wait_for

PHOTO_12MP = "book-beside-flowers.jpg"
BURST = 30
MAX_IN_FLIGHT = 4
SLOW = secrets.token_urlsafe(32)
OTHER = secrets.token_urlsafe(32)


def test_a_burst_past_max_in_flight_is_refused_before_its_bodies(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    photo = corpus_file(PHOTO_12MP).read_bytes()
    args = ("--max-in-flight", str(MAX_IN_FLIGHT), "--spool-dir", str(spool), "--pool-max", "2")
    with running_gateway(tmp_path / "gw", *args) as gateway:
        process = psutil.Process(gateway.process.pid)
        rss_before = process.memory_info().rss
        start = threading.Barrier(BURST)
        answers: dict[int, httpx.Response] = {}

        def post(index: int) -> None:
            with httpx.Client(timeout=300) as http:
                start.wait()
                answers[index] = http.post(
                    f"{gateway.url}/v1/images",
                    params={"name": PHOTO_12MP, "folder": f"burst/{index}"},
                    content=photo,
                )

        threads = [threading.Thread(target=post, args=(i,)) for i in range(BURST)]
        with SpoolWatch(spool) as watch:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=600)
        assert len(answers) == BURST
        statuses = sorted(r.status_code for r in answers.values())
        converted = [r for r in answers.values() if r.status_code == 200]
        refused = [r for r in answers.values() if r.status_code == 503]
        assert len(converted) + len(refused) == BURST, statuses
        assert len(converted) >= MAX_IN_FLIGHT, statuses
        for answer in refused:
            assert answer.json()["code"] == "busy"
            assert int(answer.headers["retry-after"]) >= 1
        # the refused bodies were never spooled: at most 4 upload folders at any moment, and
        # the bytes spooled are exactly those of the converted uploads
        assert 1 <= watch.most <= MAX_IN_FLIGHT
        assert metric(gateway, "uplodr_upload_bytes_total") == len(converted) * len(photo)
        assert metric(gateway, "uplodr_admission_refused_total", reason="in_flight") == len(refused)
        peak_mb = status_kb(gateway.process.pid, "VmHWM") / 1024
        grew_mb = (process.memory_info().rss - rss_before) / 2**20
        print(
            f"burst {BURST}x{len(photo)} B, --max-in-flight {MAX_IN_FLIGHT}: "
            f"{len(converted)} converted, {len(refused)} refused, spool held at most "
            f"{watch.most}, gateway peak RSS {peak_mb:.0f} MB (before {rss_before / 2**20:.0f}), "
            f"grew {grew_mb:.0f} MB"
        )
        assert peak_mb < rss_before / 2**20 + 50
        # nothing is left: no upload in flight, no spool file, no machine, no worker
        assert metric(gateway, "uplodr_uploads_in_flight") == 0
        assert list(spool.rglob("*")) == []
        wait_for(lambda: gateway.workers() == [], "the workers to end")
        wait_for(lambda: gateway.machine_records() == [], "the machines to be destroyed")


def tokens_file(path: Path) -> Path:
    def sha(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    path.write_text(
        f'[[tokens]]\nname = "slow"\nsha256 = "{sha(SLOW)}"\nprefixes = [""]\n'
        "max_in_flight = 1\n\n"
        f'[[tokens]]\nname = "other"\nsha256 = "{sha(OTHER)}"\nprefixes = [""]\n'
    )
    return path


@contextmanager
def trickling(
    gateway: Gateway, secret: str | None, declared: int = 1_000_000
) -> Iterator[socket.socket]:
    """An upload that declares `declared` bytes, sends its headers and the first kilobyte, and
    then nothing: a slow client (or one that stalls on purpose). Hangs up when the block ends."""
    parts = urlsplit(gateway.url)
    assert parts.hostname and parts.port
    auth = f"Authorization: Bearer {secret}\r\n" if secret else ""
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(
            f"POST /v1/images?name=slow.jpg HTTP/1.1\r\nHost: x\r\n{auth}".encode()
            + b"Content-Type: application/octet-stream\r\n"
            + f"Content-Length: {declared}\r\n\r\n".encode()
            + b"\xff\xd8\xff"
            + b"\0" * 1021
        )
        yield sock


def read_answer(sock: socket.socket, within: float) -> tuple[int, bytes]:
    """The status and body of the answer on `sock`, read until the server closes it."""
    sock.settimeout(within)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_a_trickling_body_is_cut_off_at_the_body_deadline(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    args = ("--body-timeout", "1s", "--spool-dir", str(spool))
    with running_gateway(tmp_path / "gw", *args) as gateway:
        started = time.monotonic()
        with trickling(gateway, None) as sock:
            status, body = read_answer(sock, within=30)
        took = time.monotonic() - started
        assert status == 408
        assert json.loads(body) == {
            "error": "the upload's body did not arrive within 1 s (the gateway's body deadline)",
            "code": "upload_timeout",
        }
        assert 0.9 <= took < 15
        # its slot and its spool file are gone with it
        assert metric(gateway, "uplodr_uploads_in_flight") == 0
        assert metric(gateway, "uplodr_spool_reserved_bytes") == 0
        assert list(spool.iterdir()) == []


def test_a_tokens_own_bound_and_the_spool_budget_refuse_before_the_body(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    photo = corpus_file("Landscape_6.jpg").read_bytes()  # 353 kB
    args = (
        *("--tokens-file", str(tokens_file(tmp_path / "tokens.toml"))),
        *("--spool-dir", str(spool), "--spool-budget", "1500K", "--max-upload", "1500K"),
    )
    with running_gateway(tmp_path / "gw", *args) as gateway:
        auth = {"authorization": f"Bearer {OTHER}"}

        def post(secret: str, content: object, folder: str) -> httpx.Response:
            return httpx.post(
                f"{gateway.url}/v1/images",
                params={"name": "Landscape_6.jpg", "folder": folder},
                content=content,  # type: ignore[arg-type]
                headers={"authorization": f"Bearer {secret}"},
                timeout=120,
            )

        with trickling(gateway, SLOW, declared=1_000_000):
            wait_for(lambda: metric(gateway, "uplodr_uploads_in_flight", auth) == 1, "admission")
            assert metric(gateway, "uplodr_spool_reserved_bytes", auth) == 1_000_000
            # the slow token's one slot is taken: its next upload waits for nothing
            again = post(SLOW, photo, "a")
            assert again.status_code == 503 and again.json()["code"] == "busy"
            assert "token 'slow'" in again.json()["error"] and again.headers["retry-after"]
            # a declared body past what is left of the budget (1500K - 1M)
            assert post(OTHER, photo + photo, "b").status_code == 503
            # a chunked body (no length declared) is refused as it passes the budget
            chunks = iter([photo[:200_000]] * 4)
            chunked = post(OTHER, chunks, "c")
            assert chunked.status_code == 503 and chunked.json()["code"] == "busy"
            # another token, within the budget, is not held up by the slow one
            fine = post(OTHER, photo, "d")
            assert fine.status_code == 200, fine.text
        wait_for(lambda: metric(gateway, "uplodr_uploads_in_flight", auth) == 0, "the hang-up")
        refused = {
            reason: metric(gateway, "uplodr_admission_refused_total", auth, reason=reason)
            for reason in ("in_flight", "token_in_flight", "spool_budget")
        }
        assert refused == {"in_flight": 0, "token_in_flight": 1, "spool_budget": 2}
        # only the accepted upload was spooled to its end
        assert metric(gateway, "uplodr_upload_bytes_total", auth) == len(photo)
        assert metric(gateway, "uplodr_spool_reserved_bytes", auth) == 0
        assert list(spool.iterdir()) == []
