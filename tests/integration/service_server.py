"""A real uvicorn on loopback serving a build directory, and raw-socket request helpers.

The service tests send what a hostile or broken client sends (40 MB bodies, chunked bodies
that never end, a body cut off mid-way), which an HTTP client library will not always do, so
some requests are written to the socket by hand.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from helpers import free_port


class Uvicorn:
    """``python -m uvicorn serving:app`` in ``build_dir`` on 127.0.0.1; ready once constructed."""

    def __init__(self, build_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = build_dir.parent / f"uvicorn-{self.port}.log"
        clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "LOG_LEVEL"}}
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "serving:app"]
                + ["--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]
                + ["--timeout-graceful-shutdown", "8"],
                cwd=build_dir,
                env={**clean, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.url, self.process.poll, self.log, timeout=90)

    def stop(self) -> None:
        """SIGTERM, as a platform stops it; SIGKILL if it does not go."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def wait_ready(url: str, exited: Any, log: Path | None, timeout: float) -> None:
    """Poll ``/readyz`` until 200; fail at once if the server process exited."""
    deadline = time.monotonic() + timeout
    while True:
        assert exited() is None, f"the server exited:\n{log.read_text() if log else ''}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.1)


def metric(url: str, name: str) -> float:
    """One sample of the service's /metrics, by its exposed name (``..._total`` for counters)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exposed")


def prediction_log_settled(url: str, timeout: float = 30) -> tuple[float, float]:
    """Once the prediction log's writer has caught up with every request answered so far (it
    drains up to 5 s apart), its (written, dropped) row counts."""
    deadline = time.monotonic() + timeout
    while metric(url, "nb2prod_prediction_log_pending_rows") > 0:
        assert time.monotonic() < deadline, "the prediction log never caught up"
        time.sleep(0.1)
    return (
        metric(url, "nb2prod_prediction_log_rows_total"),
        metric(url, "nb2prod_prediction_log_dropped_total"),
    )


def healthz_ms(url: str) -> float:
    """One ``GET /healthz`` on a fresh connection; its latency in milliseconds (must be 200)."""
    host, port = url.removeprefix("http://").split(":")
    # http.client, not httpx.get: a new httpx client builds an SSL context (~200 ms here).
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        started = time.perf_counter()
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        connection.close()
    assert response.status == 200
    return elapsed


def post_raw(
    url: str, head: bytes, chunks: Iterator[bytes], timeout: float = 60
) -> tuple[int, bytes, int]:
    """Send ``head`` then ``chunks`` on one socket, stopping early if the server answers.

    Returns (status, body, body bytes sent); status 0 when the server closed without answering.
    """
    sent = 0
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        received = b""
        for chunk in chunks:
            try:
                received += sock.recv(65536)
            except BlockingIOError:
                pass
            except ConnectionError:
                break
            if b"\r\n\r\n" in received:
                break  # answered before the body ended: stop sending
            try:
                sock.setblocking(True)
                sock.sendall(chunk)
                sent += len(chunk)
                sock.setblocking(False)
            except ConnectionError:
                break
        sock.setblocking(True)
        sock.settimeout(timeout)
        while not _complete(received):
            try:
                data = sock.recv(65536)
            except ConnectionError:
                break
            if not data:
                break
            received += data
    if not received.startswith(b"HTTP/1.1 "):
        return 0, received, sent
    return int(received[9:12]), received.partition(b"\r\n\r\n")[2], sent


def _complete(received: bytes) -> bool:
    """Whether ``received`` holds a whole response (head, and a body of its Content-Length)."""
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def send_and_hang_up(url: str, data: bytes) -> None:
    """Send ``data`` (a request head and part of its body) and close the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        time.sleep(0.1)  # let the server start reading the body before it goes away


def chunked_head(path: str = "/predict") -> bytes:
    """Request head of a chunked POST (no Content-Length: the server cannot refuse it upfront)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()


def chunks_of(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    """``total`` bytes of JSON whitespace as HTTP/1.1 chunks of ``size``."""
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield f"{piece:x}\r\n".encode() + b" " * piece + b"\r\n"
        sent += piece
    yield b"0\r\n\r\n"


def rows_body(row: dict[str, Any], rows: int) -> bytes:
    """``{"instances": [row, row, ...]}``."""
    return json.dumps({"instances": [row] * rows}).encode()


class HealthzPoller:
    """Polls ``/healthz`` every 20 ms in a thread; ``latencies_ms`` holds each answer's time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.latencies_ms.append(healthz_ms(self.url))
            except (AssertionError, OSError, http.client.HTTPException):
                self.latencies_ms.append(float("inf"))  # no answer counts as too slow
            time.sleep(0.02)

    def __enter__(self) -> HealthzPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def assert_fast(latencies_ms: list[float]) -> None:
    """/healthz kept answering within 100 ms (the review saw 3.5 s against a 2 s probe).

    95% of polls, not all: this runs on shared CI cores, where the load generator, the
    poller and the server compete for the CPU and a lone poll can wait for a time slice.
    """
    slow = [latency for latency in latencies_ms if latency >= 100]
    assert len(slow) <= len(latencies_ms) // 20, sorted(latencies_ms)[-5:]
    assert max(latencies_ms) < 1000, sorted(latencies_ms)[-5:]
