"""The cost of the prediction log: single-row throughput with it off, on to stdout, on to a folder.

The same build, uvicorn flags and keep-alive load generator as serve_bench.py (imported from
it), single-row POST /predict cycling through the build's golden rows, at concurrency 1 and 8.
Three services of one build run side by side, each with one setting:

- ``off``: ``NB2PROD_PREDICTION_LOG_SAMPLE=0`` (no hook installed);
- ``stdout``: the default sink, the service's stdout redirected to a file, as a container
  runtime collects it;
- ``folder``: ``NB2PROD_PREDICTION_LOG=DIR`` (rotating JSON Lines files).

Only one of them is loaded at a time, in short slices that alternate between the three (the
order rotates from round to round), with a pause after each slice for the log's writer thread
to finish what that slice queued: other processes' load on a shared machine drifts slowly, so
it hits the three settings of a round alike. Everything else is at its defaults (monitoring
on). With the servers pinned to one core (serve_bench's pinning), the log's writer thread
competes with the request path for that core and for the GIL, as on a one-vCPU instance.

Prints, per setting and concurrency, the median over the rounds of requests/s, p50/p99
latency and server CPU microseconds per request (from /proc: less sensitive than throughput
to other load), and the cost of each logging setting as the median over the rounds of its
throughput relative to ``off`` in the same round (target: at most 5%), with the spread of
``off`` over the rounds as the noise to read it against. At the end the rows each log holds
are counted, so that a sink that silently wrote nothing cannot pass.

    python benchmarks/prediction_log_bench.py \
        --notebook benchmarks/notebooks/forest.ipynb benchmarks/notebooks/linear.ipynb \
        example_notebooks/iris_function.ipynb [--seconds 2] [--rounds 10] [--concurrency 1 8]
        [--build-dir DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import _bodies, _build_dir, cpu_seconds, load, start_server  # noqa: E402

# The writer's timing, for the CPU accounting (the build's copy is the same code).
from nb2prod.runtime.prediction_log import (  # noqa: E402
    DRAIN_SECONDS,
    MAX_DRAIN_SECONDS,
    PROBABILITY_TIME_SHARE,
)

SETTINGS = ("off", "stdout", "folder")
TARGET = 0.95
#: After each slice: the writer drains at most every 0.2 s; let it finish before the next.
PAUSE_SECONDS = 0.5
Results = dict[tuple[str, int], list[dict[str, float]]]


def start(
    build_dir: Path, env: dict[str, str], stdout: BinaryIO, pin: bool
) -> tuple[subprocess.Popen[bytes], int]:
    """serve_bench's start_server, with the service's stdout going to ``stdout``."""
    return start_server(build_dir, "serving", env, pin, stdout)


def logged_rows(setting: str, stdout_path: Path, folder: Path) -> int:
    """Rows the run wrote to its prediction log (0 for ``off``)."""
    if setting == "stdout":
        lines = stdout_path.read_text().splitlines()
        records = [json.loads(line) for line in lines if '"nb2prod_log": "predictions"' in line]
    elif setting == "folder":
        files = sorted(folder.glob("*.jsonl"))
        records = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    else:
        return 0
    return sum(int(record["rows"]) for record in records)


class Service:
    """One service of the build with one setting, its stdout in a file, its log in a folder."""

    def __init__(self, build_dir: Path, setting: str, scratch: Path, pin: bool) -> None:
        self.setting = setting
        self.stdout_path = scratch / f"{setting}-stdout.log"
        self.folder = scratch / f"{setting}-predictions"
        env = {**os.environ, "PYTHONPATH": str(build_dir), "LOG_LEVEL": "WARNING"}
        env.pop("NB2PROD_PREDICTION_LOG", None)
        env["NB2PROD_PREDICTION_LOG_SAMPLE"] = "0" if setting == "off" else "1"
        if setting == "folder":
            env["NB2PROD_PREDICTION_LOG"] = str(self.folder)
        self._stdout = self.stdout_path.open("wb")
        self.process, self.port = start(build_dir, env, self._stdout, pin)

    def measure(self, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
        """serve_bench's load(), plus the server's CPU microseconds per request."""
        before = cpu_seconds(self.process.pid)
        result = load(self.port, bodies, concurrency, seconds)
        done = result["rps"] * seconds
        result["cpu_us"] = (cpu_seconds(self.process.pid) - before) / done * 1e6
        return result

    def stop(self) -> int:
        """SIGTERM (the log drains and publishes); the rows its log holds."""
        self.process.terminate()
        self.process.wait(timeout=30)
        self._stdout.close()
        return logged_rows(self.setting, self.stdout_path, self.folder)


def run_build(build_dir: Path, args: argparse.Namespace, pin: bool) -> Results:
    """All rounds for one build; results by (setting, concurrency), one entry per round."""
    bodies = _bodies(build_dir, "objects")
    scratch = Path(tempfile.mkdtemp(prefix="nb2prod-logbench-"))
    services: dict[str, Service] = {}
    results: Results = {}
    try:
        for setting in SETTINGS:
            services[setting] = Service(build_dir, setting, scratch, pin)
        for service in services.values():
            load(service.port, bodies, 8, 1.0)  # warm up
        for round_index in range(args.rounds):
            shift = round_index % len(SETTINGS)
            for concurrency in args.concurrency:
                for setting in SETTINGS[shift:] + SETTINGS[:shift]:
                    result = services[setting].measure(bodies, concurrency, args.seconds)
                    results.setdefault((setting, concurrency), []).append(result)
                    time.sleep(PAUSE_SECONDS)  # the writer finishes this slice's records
            print(f"{build_dir}: round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        logged = {setting: service.stop() for setting, service in services.items()}
        shutil.rmtree(scratch, ignore_errors=True)
    for setting in SETTINGS[1:]:
        if not logged.get(setting):
            raise SystemExit(f"{build_dir}: the prediction log ({setting}) wrote no rows")
    return results


#: Run in the build's own environment (its vendored runtime): the log's CPU per request on the
#: request path, per record in the writer and per drain for probabilities, each the best of
#: several repeats of thread CPU time (robust to other processes' load), as JSON on stdout.
COMPONENTS = """
import json, sys, tempfile, time
import model_code
from prometheus_client import CollectorRegistry
from nb2prod_runtime.loader import Predictor
from nb2prod_runtime.prediction_log import PredictionLog, PredictionLogSettings
from nb2prod_runtime.prediction_log_sinks import FileSink

rows_per_drain = int(sys.argv[1])
predictor = Predictor("model", model_code)
golden = json.load(open("model/golden.json"))["rows"]
names = [column["name"] for column in predictor.schema["columns"]]
rows = [[row.get(name) for name in names] for row in golden]
frames = [predictor.frames.from_rows([rows[i % len(rows)]]) for i in range(rows_per_drain)]
answers = [predictor.predict_frame(frame) for frame in frames]
folder = tempfile.mkdtemp()
settings = PredictionLogSettings(destination=folder)
log = PredictionLog(settings, FileSink(folder, 1 << 30, 1e9), predictor.card,
                    CollectorRegistry(), lambda: predictor)

def best(run, repeats=15):
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        run()
        times.append(time.thread_time() - started)
    return min(times)

def queue():
    for i, (frame, answer) in enumerate(zip(frames, answers)):
        log.after_predict(frame, answer, f"r{i}")

def drain(with_probabilities):
    def run():
        queue()
        batch = list(log._pending)
        log._pending.clear()
        log._queued_rows = 0
        if not with_probabilities:
            log._predictor = None
        log._write(batch)
        log._predictor = lambda: predictor
    return run

drain(True)()  # the one-off check of the probabilities
request_path = best(queue)
log._pending.clear()
log._queued_rows = 0
records = best(drain(False)) - request_path
call = best(drain(True)) - request_path - records
print(json.dumps({"request_path_us": request_path / rows_per_drain * 1e6,
                  "writer_us": records / rows_per_drain * 1e6,
                  "probabilities_call_us": call * 1e6 if predictor.has_probabilities else 0.0}))
"""


def component_costs(build_dir: Path, rps: float) -> dict[str, float]:
    """The log's CPU per request by part at ``rps`` requests/s, measured in the build's
    environment: on the request path, in the writer per record, and the probabilities call per
    drain shared by the requests of one drain (the writer's interval as the log sets it)."""
    rows_per_drain = max(1, round(rps * DRAIN_SECONDS))
    done = subprocess.run(
        [sys.executable, "-c", COMPONENTS, str(rows_per_drain)],
        cwd=build_dir,
        env={**os.environ, "PYTHONPATH": str(build_dir), "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        check=True,
    )
    costs: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    call = costs["probabilities_call_us"]
    interval = max(DRAIN_SECONDS, min(MAX_DRAIN_SECONDS, call / 1e6 / PROBABILITY_TIME_SHARE))
    costs["probabilities_us"] = call / max(1.0, rps * interval)
    costs["total_us"] = costs["request_path_us"] + costs["writer_us"] + costs["probabilities_us"]
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", nargs="+", default=[], help="notebooks to build")
    parser.add_argument("--build-dir", nargs="+", default=[], help="already built directories")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one slice")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-pin", action="store_true", help="don't pin server and load to cores")
    args = parser.parse_args()
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {1})  # the load generator; servers get core 0
    builds = [Path(d).resolve() for d in args.build_dir]
    builds += [_build_dir(None, notebook) for notebook in args.notebook]
    if not builds:
        builds = [_build_dir(None, "benchmarks/notebooks/forest.ipynb")]
    summary = {str(build): _report(build, args, run_build(build, args, pin)) for build in builds}
    print(json.dumps(summary))


def _report(build_dir: Path, args: argparse.Namespace, results: Results) -> dict[str, float]:
    def median(setting: str, concurrency: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(setting, concurrency)])

    card = json.loads((build_dir / "model" / "model_card.json").read_text())
    print(f"\n{card['name']} ({build_dir}): {args.rounds} rounds x {args.seconds:g}s slices")
    print(
        f"{'concurrency':>11} {'log':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu us/req':>10} {'ratio':>6}"
    )
    summary: dict[str, float] = {}
    for concurrency in args.concurrency:
        offs = [r["rps"] for r in results[("off", concurrency)]]
        for setting in SETTINGS:
            # Each round's throughput relative to off's in the same round, then the median.
            runs = results[(setting, concurrency)]
            ratios = [r["rps"] / o for r, o in zip(runs, offs, strict=True)]
            ratio = statistics.median(ratios)
            print(
                f"{concurrency:>11} {setting:>7} {median(setting, concurrency, 'rps'):>8.0f} "
                f"{median(setting, concurrency, 'p50'):>7.2f} "
                f"{median(setting, concurrency, 'p99'):>7.2f} "
                f"{median(setting, concurrency, 'cpu_us'):>10.0f} {ratio:>6.3f}"
            )
            if setting != "off":
                summary[f"{setting}_ratio_c{concurrency}"] = round(ratio, 3)
                cpu = median(setting, concurrency, "cpu_us") / median("off", concurrency, "cpu_us")
                summary[f"{setting}_cpu_c{concurrency}"] = round(cpu, 3)
        cpu_off = median("off", concurrency, "cpu_us")
        # At the throughput one fully used core gives: where the log's CPU costs throughput.
        parts = component_costs(build_dir, 1e6 / cpu_off)
        summary[f"accounted_c{concurrency}"] = round(parts["total_us"] / cpu_off, 4)
        print(
            f"{'':>11} CPU accounting: the log costs {parts['total_us']:.0f} us a request "
            f"(request path {parts['request_path_us']:.0f}, writer {parts['writer_us']:.0f}, "
            f"probabilities {parts['probabilities_us']:.0f}) = "
            f"{parts['total_us'] / cpu_off:.1%} of off's {cpu_off:.0f} us"
        )
        quartiles = statistics.quantiles(offs, n=4)
        noise = (quartiles[2] - quartiles[0]) / statistics.median(offs)
        summary[f"off_iqr_c{concurrency}"] = round(noise, 3)
        print(
            f"{'':>11} noise: off ranged {min(offs):.0f}..{max(offs):.0f} req/s over the "
            f"rounds, interquartile range {noise:.0%} of its median"
        )
        for setting in SETTINGS[1:]:
            ratio = summary[f"{setting}_ratio_c{concurrency}"]
            verdict = "ok" if ratio >= TARGET else f"ABOVE TARGET {1 - TARGET:.0%}"
            print(
                f"{'':>11} {setting} log costs {1 - ratio:+.1%} of throughput at concurrency "
                f"{concurrency} ({verdict}); server CPU per request "
                f"{summary[f'{setting}_cpu_c{concurrency}'] - 1:+.1%}"
            )
    return summary


if __name__ == "__main__":
    main()
