"""Soak: a bounded run of mixed valid, invalid and oversized requests; is memory flat?

Serves a build directory with uvicorn on loopback (or targets a running container), drives
it from 32 keep-alive connections with a fixed mix of requests, and reports throughput, p50
and p99 latency, answers by kind and status, answers that were not the expected status, and
the server's RSS after warm-up and at the end. Passes when no answer was unexpected and RSS
grew less than 5% after warm-up (median of the first three samples against the last three).

    python benchmarks/soak.py [--build-dir DIR | --notebook NB] [--seconds 180]
        [--connections 32] [--warmup 45]
    python benchmarks/soak.py --url http://127.0.0.1:PORT --container ID   # a container
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAX_GROWTH = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mix:
    """The request kinds, their weights, bodies and the status each must get."""

    def __init__(self, row: dict[str, Any]) -> None:
        columns = list(row)
        first = columns[0]
        split = {"columns": columns, "data": [[row[c] for c in columns]] * 100}
        self.kinds: list[tuple[str, int, bytes | None, int]] = [
            ("one_row", 60, json.dumps({"instances": [row]}).encode(), 200),
            ("split_100", 10, json.dumps({"dataframe_split": split}).encode(), 200),
            # Over 64 KiB: parsed and validated off the event loop.
            ("rows_2000", 4, json.dumps({"instances": [row] * 2000}).encode(), 200),
            ("bad_type", 10, json.dumps({"instances": [{**row, first: "x"}]}).encode(), 422),
            ("bool_number", 4, json.dumps({"instances": [{**row, first: False}]}).encode(), 422),
            ("not_json", 5, b'{"instances": [', 422),
            ("deep_json", 2, b"[" * 50_000, 422),
            # Oversized: a 40 MB Content-Length (413 before the body), and a chunked body.
            ("content_length_40mb", 3, None, 413),
            ("chunked_6mb", 2, None, 413),
        ]
        self._weights = [weight for _, weight, _, _ in self.kinds]

    def pick(self, rng: random.Random) -> tuple[str, bytes | None, int]:
        name, _, body, expected = rng.choices(self.kinds, self._weights)[0]
        return name, body, expected


def oversized(port: int, name: str) -> int:
    """Send an oversized request on its own connection; the status of the answer."""
    if name == "content_length_40mb":
        head = f"Content-Length: {40_000_000}\r\n\r\n"
        chunks: list[bytes] = []
    else:
        head = "Transfer-Encoding: chunked\r\n\r\n"
        piece = b" " * (1 << 20)
        chunks = [b"100000\r\n" + piece + b"\r\n"] * 6 + [b"0\r\n\r\n"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\n{head}".encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before the rest: fine
        answer = sock.recv(64)
    return int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else 0


def worker(
    port: int, mix: Mix, stop: float, seed: int, results: list[tuple[str, int, float]]
) -> None:
    """One connection's loop: pick a request from the mix, send it, record the answer."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    while time.monotonic() < stop:
        name, body, _ = mix.pick(rng)
        started = time.perf_counter()
        try:
            if body is None:
                status = oversized(port, name)
            else:
                conn.request("POST", "/predict", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
        except (OSError, http.client.HTTPException):
            # uvicorn closes a keep-alive connection idle for 5 s (while this worker sent an
            # oversized request on its own): reconnect and retry once before counting a failure.
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status = retry(conn, body, headers) if body is not None else 0
        results.append((name, status, (time.perf_counter() - started) * 1000))
    conn.close()


def retry(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> int:
    """The status of one more try on a fresh connection; 0 when that fails too."""
    try:
        conn.request("POST", "/predict", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        conn.close()
        return 0


def rss_reader(pid: int | None, container: str | None) -> Callable[[], int]:
    """A function returning the server's resident memory in bytes."""
    if container:
        import docker  # only for a container target

        handle = docker.from_env().containers.get(container)

        def container_rss() -> int:
            stats = handle.stats(stream=False)["memory_stats"]
            # "usage" includes the page cache; the anon/rss figure is what an OOM kill counts.
            detail = stats.get("stats", {})
            return int(detail.get("anon") or detail.get("rss") or stats["usage"])

        return container_rss

    def process_rss() -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    return process_rss


def start_server(build_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving:app", "--host", "127.0.0.1"]
        + ["--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=build_dir,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the service did not become ready")


def run(port: int, rss: Callable[[], int], mix: Mix, args: argparse.Namespace) -> int:
    """Warm up, soak, report; the exit status (0 when the run passed)."""
    results: list[tuple[str, int, float]] = []
    begin = time.monotonic()
    stop = begin + args.warmup + args.seconds
    threads = [
        threading.Thread(target=worker, args=(port, mix, stop, seed, results), daemon=True)
        for seed in range(args.connections)
    ]
    rss_start_of_run = rss()
    for thread in threads:
        thread.start()
    time.sleep(args.warmup)
    warm_count = len(results)
    rss_warm = rss()
    samples = [rss_warm]
    while time.monotonic() < stop:
        time.sleep(min(5.0, max(0.0, stop - time.monotonic())))
        samples.append(rss())
    for thread in threads:
        thread.join(timeout=120)
    rss_end = rss()
    samples.append(rss_end)
    measured = results[warm_count:]
    latencies = sorted(ms for _, _, ms in measured)
    expected = {name: status for name, _, _, status in mix.kinds}
    by_kind = Counter((name, status) for name, status, _ in measured)
    unexpected = {key: n for key, n in by_kind.items() if key[1] != expected[key[0]]}
    # Medians of the first and last three samples (5 s apart): one large request in flight
    # at a sampling instant is a transient peak, not growth.
    first, last = statistics.median(samples[:3]), statistics.median(samples[-3:])
    growth = (last - first) / first
    report = {
        "connections": args.connections,
        "seconds": args.seconds,
        "requests": len(measured),
        "throughput_rps": round(len(measured) / args.seconds, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "statuses": dict(sorted(Counter(str(s) for _, s, _ in measured).items())),
        "by_kind": {f"{name} {status}": n for (name, status), n in sorted(by_kind.items())},
        "unexpected": {f"{name} {status}": n for (name, status), n in unexpected.items()},
        "rss_mb": {
            "start": round(rss_start_of_run / 2**20, 1),
            "after_warmup": round(rss_warm / 2**20, 1),
            "peak": round(max(samples + [rss_end]) / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
        },
        "rss_growth_after_warmup": f"{growth:+.1%}",
    }
    print(json.dumps(report, indent=2))
    ok = not unexpected and growth < MAX_GROWTH
    print("PASS" if ok else "FAIL: unexpected answers or RSS grew 5% or more after warm-up")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default=str(ROOT / "example_notebooks/iris_function.ipynb"))
    parser.add_argument("--build-dir", help="an already built directory (skips the build)")
    parser.add_argument("--url", help="a running service (with --container for its RSS)")
    parser.add_argument("--container", help="the container id or name behind --url")
    parser.add_argument("--seconds", type=float, default=180.0, help="measured, after warm-up")
    # Long enough for the monitoring window, the feedback store and the thread pool's
    # allocator arenas to fill: RSS rises to a plateau in the first half minute.
    parser.add_argument("--warmup", type=float, default=45.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    if args.url:
        if not args.container:
            raise SystemExit("--url needs --container, to read the service's memory")
        port = int(args.url.rsplit(":", 1)[1].strip("/"))
        process = None
    else:
        if args.build_dir:
            build_dir = Path(args.build_dir).resolve()
        else:
            build_dir = Path(tempfile.mkdtemp(prefix="nb2prod-soak-")) / "build"
            subprocess.run(
                [sys.executable, "-m", "nb2prod", "build", args.notebook, "--no-docker", "-q"]
                + ["-o", str(build_dir)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        process, port = start_server(build_dir)
    row = first_row(port)
    rss = rss_reader(process.pid if process else None, args.container)
    try:
        return run(port, rss, Mix(row), args)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=15)


def first_row(port: int) -> dict[str, Any]:
    """A valid input row: the first example of each column in the service's OpenAPI schema."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/openapi.json")
    schema = json.loads(conn.getresponse().read())
    properties = schema["components"]["schemas"]["InputRow"]["properties"]
    return {name: spec["examples"][0] for name, spec in properties.items()}


if __name__ == "__main__":
    sys.exit(main())
