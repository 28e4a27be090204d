"""Serving overhead: the generated service vs a minimal hand-written FastAPI app.

Both apps load the same build directory and do the same work per request (the
same DataFrame construction, the notebook's preprocess and predict code); the
baseline has none of nb2prod's extras (validation models, JSON logs, metrics,
request ids). Both run under uvicorn with the same flags, one at a time, and
the same keep-alive load generator drives them in alternating rounds. Prints
requests/s, p50 and p99 at concurrency 1 and 8, and nb2prod's throughput as a
ratio of the baseline's (target: >= 0.9). Medians over the rounds. ``--rows lists`` sends
the rows as lists in column order instead of objects (the baseline turns them into records).

    python benchmarks/serve_bench.py [--notebook example_notebooks/iris_function.ipynb]
        [--seconds 5] [--rounds 3] [--rows objects|lists]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

BASELINE_APP = '''\
"""A minimal hand-written service doing the same work as nb2prod's (the baseline)."""
from pathlib import Path

import model_code
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from nb2prod_runtime.loader import Predictor
from nb2prod_runtime.schema import frame_from_records

HERE = Path(__file__).resolve().parent
predictor = Predictor(HERE / "model", model_code)
schema = predictor.schema
app = FastAPI()


names = [column["name"] for column in schema["columns"]]


@app.post("/predict")
async def predict(request: Request) -> JSONResponse:
    body = await request.json()
    rows = body["instances"]
    if rows and isinstance(rows[0], list):  # rows as lists in column order
        rows = [dict(zip(names, row)) for row in rows]
    frame = frame_from_records(rows, schema)
    return JSONResponse({"predictions": predictor.predict_frame(frame)})
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    build_dir: Path, module: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"{module}:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=build_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{module} did not start")


def load(port: int, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """Keep-alive POSTs from ``concurrency`` threads for ``seconds``; latencies in ms."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors[index] += 1
            latencies[index].append((time.perf_counter() - started) * 1000)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = sorted(x for worker_latencies in latencies for x in worker_latencies)
    if sum(errors):
        raise SystemExit(f"{sum(errors)} requests failed")
    return {
        "rps": len(every) / elapsed,
        "p50": every[len(every) // 2],
        "p99": every[min(len(every) - 1, int(len(every) * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default=str(ROOT / "example_notebooks/iris_function.ipynb"))
    parser.add_argument("--build-dir", help="an already built directory (skips the build)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--extra-env", nargs="*", default=[], help="NAME=VALUE for nb2prod's app")
    parser.add_argument("--rows", choices=["objects", "lists"], default="objects")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nb2prod-bench-"))
    if args.build_dir:
        build_dir = Path(args.build_dir).resolve()
    else:
        build_dir = work / "build"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nb2prod",
                "build",
                args.notebook,
                "--no-docker",
                "-q",
                "-o",
                str(build_dir),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    (build_dir / "bench_baseline.py").write_text(BASELINE_APP)
    # The golden rows live in model/golden.json (older builds kept them in the card).
    golden_file = build_dir / "model" / "golden.json"
    if golden_file.exists():
        golden = json.loads(golden_file.read_text())
    else:
        golden = json.loads((build_dir / "model" / "model_card.json").read_text())["golden"]
    rows = golden["rows"][:1]
    if args.rows == "lists":
        card = json.loads((build_dir / "model" / "model_card.json").read_text())
        names = [column["name"] for column in card["input_schema"]["columns"]]
        rows = [[row[name] for name in names] for row in rows]
    body = json.dumps({"instances": rows}).encode()
    env = {**os.environ, "PYTHONPATH": str(build_dir)}
    ours_env = dict(env)
    for item in args.extra_env:
        name, _, value = item.partition("=")
        ours_env[name] = value

    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for round_index in range(args.rounds):
            for name, module, server_env in (
                ("baseline", "bench_baseline", env),
                ("nb2prod", "serving", ours_env),
            ):
                process, port = start_server(build_dir, module, server_env)
                try:
                    load(port, body, 1, 1.0)  # warm up
                    for concurrency in args.concurrency:
                        result = load(port, body, concurrency, args.seconds)
                        results.setdefault((name, concurrency), []).append(result)
                finally:
                    process.terminate()
                    process.wait(timeout=15)
            print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        (build_dir / "bench_baseline.py").unlink(missing_ok=True)

    def median(name: str, concurrency: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, concurrency)])

    print(
        f"notebook: {args.notebook}  rows: {args.rows}  "
        f"rounds: {args.rounds} x {args.seconds:g}s (medians)"
    )
    print(f"{'concurrency':>11} {'app':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    ratios: dict[int, float] = {}
    for concurrency in args.concurrency:
        for name in ("baseline", "nb2prod"):
            print(
                f"{concurrency:>11} {name:>9} {median(name, concurrency, 'rps'):>9.0f} "
                f"{median(name, concurrency, 'p50'):>8.2f} {median(name, concurrency, 'p99'):>8.2f}"
            )
        ratios[concurrency] = median("nb2prod", concurrency, "rps") / median(
            "baseline", concurrency, "rps"
        )
    for concurrency, ratio in ratios.items():
        verdict = "ok" if ratio >= 0.9 else "BELOW TARGET 0.9"
        print(f"throughput ratio nb2prod/baseline, concurrency {concurrency}: {ratio:.3f} ({verdict})")
    summary: dict[str, Any] = {f"ratio_c{c}": round(r, 3) for c, r in ratios.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
