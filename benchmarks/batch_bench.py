"""Batch scoring throughput: ``nb2prod batch`` vs a hand-written pandas loop on the same file.

The baseline reads the same file in the same chunk size (pandas ``read_csv(chunksize=)``,
or pyarrow's ``iter_batches`` for Parquet), calls the notebook's own preprocess and predict
code directly (the build's Predictor, no validation), and writes the predictions as CSV. nb2prod's
run adds what the baseline leaves out: the service's validation, the rejects accounting,
the atomic output and the sidecar. Both run as fresh processes, alternating, for
``--rounds`` rounds; medians are printed with nb2prod's rows/s as a ratio of the baseline's
(target: >= 0.8), and each process's peak RSS (from wait4) next to one chunk's footprint.

    python benchmarks/batch_bench.py [--notebook example_notebooks/diabetes_regression.ipynb]
        [--rows 1000000] [--chunk-rows 50000] [--rounds 3] [--spark]

``--spark`` also scores the Parquet file with ``predict_udf`` in Spark ``local[2]`` (session
start-up excluded), checks every row against ``nb2prod batch`` and prints rows/s for both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

BASELINE = '''\
"""The hand-written loop: read in chunks, the notebook's preprocess + predict, write CSV."""
import sys
from pathlib import Path

import model_code
import pandas as pd
from nb2prod_runtime.loader import Predictor

source, output, chunk_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
here = Path(model_code.__file__).resolve().parent
predictor = Predictor(here / "model", model_code)
names = [c["name"] for c in predictor.schema["columns"]]
if source.endswith(".parquet"):
    import pyarrow.parquet as pq

    chunks = (b.to_pandas() for b in pq.ParquetFile(source).iter_batches(batch_size=chunk_rows))
else:
    chunks = pd.read_csv(source, chunksize=chunk_rows)
with open(output, "w") as handle:
    first = True
    for chunk in chunks:
        predictions = predictor.predict_frame(chunk[names])
        pd.DataFrame({"prediction": predictions}).to_csv(handle, header=first, index=False)
        first = False
'''


def run(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:4]} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--notebook", type=Path, default=ROOT / "example_notebooks/diabetes_regression.ipynb"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spark", action="store_true", help="also Spark local[2] (pyspark)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nb2prod-batch-bench-") as tmp:
        work = Path(tmp)
        build = work / "build"
        subprocess.run(
            [sys.executable, "-m", "nb2prod", "build", str(args.notebook), "--no-docker", "-q",
             "-o", str(build)],
            check=True,
        )  # fmt: skip
        golden = json.loads((build / "model" / "golden.json").read_text())["rows"]
        sample = pd.DataFrame(golden).dropna()
        frame = sample.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
        frame.insert(0, "row_id", range(len(frame)))
        frame.to_csv(work / "rows.csv", index=False)
        frame.to_parquet(work / "rows.parquet", index=False)
        chunk_bytes = int(frame.head(args.chunk_rows).memory_usage(deep=True).sum())
        model_bytes = (build / "model" / "state.pkl").stat().st_size
        (work / "baseline.py").write_text(BASELINE)
        env = {**os.environ, "PYTHONPATH": str(build)}
        print(
            f"{args.notebook.name}: {args.rows:,} rows, chunks of {args.chunk_rows:,} "
            f"({chunk_bytes / 1e6:.1f} MB in pandas), model state {model_bytes / 1e6:.2f} MB; "
            f"{args.rounds} alternating rounds, medians"
        )
        for fmt in ("csv", "parquet"):
            source = str(work / f"rows.{fmt}")
            times: dict[str, list[float]] = {"baseline": [], "nb2prod": []}
            rss: dict[str, list[int]] = {"baseline": [], "nb2prod": []}
            for round_ in range(args.rounds):
                out = work / f"out-{fmt}-{round_}.csv"
                commands = {
                    "baseline": [sys.executable, str(work / "baseline.py"), source,
                                 str(work / "base.csv"), str(args.chunk_rows)],
                    "nb2prod": [sys.executable, "-m", "nb2prod_runtime.batch", source, "-o",
                                str(out), "--chunk-rows", str(args.chunk_rows), "-q",
                                "--keep", "row_id"],
                }  # fmt: skip
                order = ("baseline", "nb2prod") if round_ % 2 == 0 else ("nb2prod", "baseline")
                for name in order:
                    seconds, peak = run(commands[name], env)
                    times[name].append(seconds)
                    rss[name].append(peak)
                same = pd.read_csv(out)["prediction"].equals(
                    pd.read_csv(work / "base.csv")["prediction"]
                )
                if not same:
                    raise SystemExit("nb2prod batch and the baseline predicted differently")
            rate = {k: args.rows / statistics.median(v) for k, v in times.items()}
            peak = {k: statistics.median(v) / 1e6 for k, v in rss.items()}
            ratio = rate["nb2prod"] / rate["baseline"]
            print(
                f"  {fmt:<8} baseline {rate['baseline']:>10,.0f} rows/s, peak "
                f"{peak['baseline']:.0f} MB | nb2prod batch {rate['nb2prod']:>10,.0f} rows/s, "
                f"peak {peak['nb2prod']:.0f} MB | ratio {ratio:.2f} (target >= 0.8); "
                "identical predictions"
            )

        if args.spark:
            spark_run(build, work, args.rows, statistics.median(times["nb2prod"]))


def spark_run(build: Path, work: Path, rows: int, batch_seconds: float) -> None:
    """predict_udf on the Parquet file in local[2]; every row compared with nb2prod batch."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    from nb2prod.runtime.spark import ERROR_COLUMN, predict_udf

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        score = predict_udf(spark, build)
        started = time.perf_counter()
        score(spark.read.parquet(str(work / "rows.parquet"))).select(
            "row_id", "prediction", ERROR_COLUMN
        ).write.mode("overwrite").parquet(str(work / "spark-out"))
        seconds = time.perf_counter() - started
    finally:
        spark.stop()
    got = pd.read_parquet(work / "spark-out").sort_values("row_id").reset_index(drop=True)
    want = pd.read_csv(work / "out-parquet-0.csv").sort_values("row_id").reset_index(drop=True)
    if not (len(got) == len(want) == rows and got[ERROR_COLUMN].isna().all()):
        raise SystemExit("Spark scored a different number of rows, or rejected some")
    if not (got["prediction"].astype(float) - want["prediction"]).abs().max() < 1e-9:
        raise SystemExit("Spark and nb2prod batch predicted differently")
    print(
        f"  spark    local[2] predict_udf {rows / seconds:>10,.0f} rows/s (Parquet in and out) "
        f"| nb2prod batch {rows / batch_seconds:,.0f} rows/s | identical predictions"
    )


if __name__ == "__main__":
    main()
