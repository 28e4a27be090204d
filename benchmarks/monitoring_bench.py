"""The cost of monitoring: nb2prod's service with NB2PROD_MONITORING=1 vs 0.

The same build, the same uvicorn flags and the same keep-alive load generator as
serve_bench.py; single-row POST /predict at concurrency 8 (and 1), alternating the two
settings each round so that machine noise hits both alike. Monitoring runs with its
defaults (window 1000, a drift check every 500 requests or 30 s), so the checks happen
during the measurement. Prints requests/s, latency and server CPU time per request (from
/proc, Linux only; less sensitive than throughput to other load on the machine), medians
over the rounds, and the throughput cost of monitoring (target: < 10% at concurrency 8).

    python benchmarks/monitoring_bench.py [--notebook example_notebooks/iris_function.ipynb]
        [--seconds 5] [--rounds 5] [--concurrency 8 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import ROOT, cpu_seconds, load, start_server  # noqa: E402

SETTINGS = {"monitoring on": "1", "monitoring off": "0"}


def measured_load(pid: int, port: int, body: bytes, concurrency: int, seconds: float) -> Any:
    """serve_bench's load(), plus the server's CPU microseconds per request."""
    before = cpu_seconds(pid)
    result = load(port, body, concurrency, seconds)
    result["cpu_us"] = (cpu_seconds(pid) - before) / (result["rps"] * seconds) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default=str(ROOT / "example_notebooks/iris_function.ipynb"))
    parser.add_argument("--build-dir", help="an already built directory (skips the build)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8])
    args = parser.parse_args()

    if args.build_dir:
        build_dir = Path(args.build_dir).resolve()
    else:
        build_dir = Path(tempfile.mkdtemp(prefix="nb2prod-monbench-")) / "build"
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
    card = json.loads((build_dir / "model" / "model_card.json").read_text())
    body = json.dumps({"instances": card["golden"]["rows"][:1]}).encode()
    base_env = {**os.environ, "PYTHONPATH": str(build_dir), "LOG_LEVEL": "WARNING"}

    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for round_index in range(args.rounds):
        order = list(SETTINGS.items())
        if round_index % 2:
            order.reverse()  # neither setting always runs first
        for name, value in order:
            process, port = start_server(
                build_dir, "serving", {**base_env, "NB2PROD_MONITORING": value}
            )
            try:
                load(port, body, 1, 1.0)  # warm up
                for concurrency in args.concurrency:
                    results.setdefault((name, concurrency), []).append(
                        measured_load(process.pid, port, body, concurrency, args.seconds)
                    )
            finally:
                process.terminate()
                process.wait(timeout=15)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    def median(name: str, concurrency: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, concurrency)])

    print(f"notebook: {args.notebook}  rounds: {args.rounds} x {args.seconds:g}s (medians)")
    print(
        f"{'concurrency':>11} {'setting':>15} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu us/req':>10}"
    )
    summary: dict[str, Any] = {}
    for concurrency in args.concurrency:
        for name in SETTINGS:
            print(
                f"{concurrency:>11} {name:>15} {median(name, concurrency, 'rps'):>9.0f} "
                f"{median(name, concurrency, 'p50'):>8.2f} "
                f"{median(name, concurrency, 'p99'):>8.2f} "
                f"{median(name, concurrency, 'cpu_us'):>10.0f}"
            )
        on = median("monitoring on", concurrency, "rps")
        off = median("monitoring off", concurrency, "rps")
        cost = 1 - on / off
        verdict = "ok" if cost < 0.10 else "ABOVE TARGET 10%"
        print(f"monitoring throughput cost at concurrency {concurrency}: {cost:.1%} ({verdict})")
        cpu_on = median("monitoring on", concurrency, "cpu_us")
        cpu_off = median("monitoring off", concurrency, "cpu_us")
        print(f"server CPU per request at concurrency {concurrency}: {cpu_on / cpu_off - 1:+.1%}")
        summary[f"cost_c{concurrency}"] = round(cost, 4)
        summary[f"cpu_cost_c{concurrency}"] = round(cpu_on / cpu_off - 1, 4)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
