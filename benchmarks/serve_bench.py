"""Serving overhead: the generated service vs a minimal hand-written FastAPI app.

Both apps load the same build directory and do the same work per request (the
same DataFrame construction, the notebook's preprocess and predict code); the
baseline has none of nb2prod's extras (validation models, JSON logs, metrics,
request ids). Both run under uvicorn with the same flags, one at a time, and
the same keep-alive load generator drives them in alternating rounds, with the
server pinned to core 0 and the load generator to core 1. Each client sends
single-row requests, cycling through the build's golden rows. Prints requests/s,
p50 and p99 at concurrency 1, 8 and 32, and nb2prod's throughput as a ratio of
the baseline's: at least 0.9 at concurrency 1, and ``--target`` at the highest
(micro-batching joins concurrent requests: 10 for a forest, 4 for a linear model).
``--apps ... unbatched`` adds nb2prod with NB2PROD_BATCHING=off. Medians over the
rounds. ``--rows lists`` sends the rows as lists in column order instead of
objects (the baseline turns them into records).

    python benchmarks/serve_bench.py --notebook benchmarks/notebooks/forest.ipynb --target 10
    python benchmarks/serve_bench.py --notebook benchmarks/notebooks/linear.ipynb --target 4
        [--seconds 5] [--rounds 3] [--apps baseline nb2prod unbatched] [--build-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
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


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (NaN where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICKS


def start_server(
    build_dir: Path, module: str, env: dict[str, str], pin: bool = False, stdout: Any = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Serve ``module:app`` from ``build_dir`` on a free port (its stdout to ``stdout``, else
    nowhere); the process and the port once it accepts connections."""
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
        stdout=subprocess.DEVNULL if stdout is None else stdout,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if pin else None,  # noqa: PLW1509
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


def load(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    """Keep-alive POSTs from ``concurrency`` clients for ``seconds``; latencies in ms.

    One asyncio client per connection on raw sockets (pre-encoded requests, Content-Length
    framing), so that the load generator, pinned to its own core, is never the bottleneck
    at 32 connections. Client ``i`` sends ``bodies[i % len(bodies)]``, ``bodies[i + 1 ...]``
    in turn: distinct rows, as real traffic has.
    """
    return asyncio.run(_load(port, bodies, concurrency, seconds))


async def _load(
    port: int, bodies: list[bytes], concurrency: int, seconds: float
) -> dict[str, float]:
    requests = [
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        for body in bodies
    ]
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def client(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        turn = index
        while time.monotonic() < stop:
            started = time.perf_counter()
            writer.write(requests[turn % len(requests)])
            turn += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    every = sorted(latencies)
    if errors:
        raise SystemExit(f"{errors} requests failed")
    return {
        "rps": len(every) / elapsed,
        "p50": every[len(every) // 2],
        "p99": every[min(len(every) - 1, int(len(every) * 0.99))],
    }


Results = dict[tuple[str, int], list[dict[str, float]]]

APPS = {
    # name: (module, extra environment)
    "baseline": ("bench_baseline", {}),
    "nb2prod": ("serving", {}),
    "unbatched": ("serving", {"NB2PROD_BATCHING": "off"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default=str(ROOT / "example_notebooks/iris_function.ipynb"))
    parser.add_argument("--build-dir", help="an already built directory (skips the build)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--apps", nargs="+", choices=list(APPS), default=["baseline", "nb2prod"])
    parser.add_argument("--extra-env", nargs="*", default=[], help="NAME=VALUE for nb2prod's app")
    parser.add_argument("--rows", choices=["objects", "lists"], default="objects")
    parser.add_argument(
        "--target", type=float, default=0.9, help="nb2prod/baseline wanted at the top concurrency"
    )
    parser.add_argument("--no-pin", action="store_true", help="don't pin server and load to cores")
    args = parser.parse_args()
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {1})  # the load generator; servers get core 0

    build_dir = _build_dir(args.build_dir, args.notebook)
    (build_dir / "bench_baseline.py").write_text(BASELINE_APP)
    bodies = _bodies(build_dir, args.rows)
    env = {**os.environ, "PYTHONPATH": str(build_dir)}
    for item in args.extra_env:
        name, _, value = item.partition("=")
        env[name] = value

    results: Results = {}
    try:
        for round_index in range(args.rounds):
            for name in args.apps:
                module, extra = APPS[name]
                process, port = start_server(build_dir, module, {**env, **extra}, pin)
                try:
                    load(port, bodies, 1, 1.0)  # warm up
                    for concurrency in args.concurrency:
                        result = load(port, bodies, concurrency, args.seconds)
                        results.setdefault((name, concurrency), []).append(result)
                finally:
                    process.terminate()
                    process.wait(timeout=15)
            print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        (build_dir / "bench_baseline.py").unlink(missing_ok=True)
    _report(args, results)


def _build_dir(given: str | None, notebook: str) -> Path:
    if given:
        return Path(given).resolve()
    build_dir = Path(tempfile.mkdtemp(prefix="nb2prod-bench-")) / "build"
    command = [sys.executable, "-m", "nb2prod", "build", notebook, "--no-docker", "-q"]
    subprocess.run([*command, "-o", str(build_dir)], check=True, stdout=subprocess.DEVNULL)
    return build_dir


def _bodies(build_dir: Path, rows_as: str) -> list[bytes]:
    """One single-row request body per golden row (distinct rows, as real traffic)."""
    golden = json.loads((build_dir / "model" / "golden.json").read_text())
    rows = golden["rows"]
    if rows_as == "lists":
        card = json.loads((build_dir / "model" / "model_card.json").read_text())
        names = [column["name"] for column in card["input_schema"]["columns"]]
        rows = [[row[name] for name in names] for row in rows]
    return [json.dumps({"instances": [row]}).encode() for row in rows]


def _report(
    args: argparse.Namespace, results: dict[tuple[str, int], list[dict[str, float]]]
) -> None:
    def median(name: str, concurrency: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, concurrency)])

    source = args.build_dir or args.notebook
    print(
        f"build: {source}  rows: {args.rows}  rounds: {args.rounds} x {args.seconds:g}s (medians)"
    )
    print(f"{'concurrency':>11} {'app':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    summary: dict[str, Any] = {}
    for concurrency in args.concurrency:
        base = median("baseline", concurrency, "rps") if "baseline" in args.apps else None
        for name in args.apps:
            rps = median(name, concurrency, "rps")
            ratio = f"{rps / base:>6.2f}" if base else ""
            print(
                f"{concurrency:>11} {name:>9} {rps:>9.0f} {median(name, concurrency, 'p50'):>8.2f} "
                f"{median(name, concurrency, 'p99'):>8.2f} {ratio}"
            )
            if base and name != "baseline":
                summary[f"{name}_ratio_c{concurrency}"] = round(rps / base, 3)
                summary[f"{name}_p99_c{concurrency}"] = round(median(name, concurrency, "p99"), 2)
                summary[f"baseline_p99_c{concurrency}"] = round(
                    median("baseline", concurrency, "p99"), 2
                )
    if "baseline" in args.apps and "nb2prod" in args.apps:
        low, high = min(args.concurrency), max(args.concurrency)
        for concurrency, wanted in ((low, 0.9), (high, args.target)):
            ratio = summary[f"nb2prod_ratio_c{concurrency}"]
            verdict = "ok" if ratio >= wanted else f"BELOW TARGET {wanted:g}"
            print(f"nb2prod/baseline at concurrency {concurrency}: {ratio:.3f} ({verdict})")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
