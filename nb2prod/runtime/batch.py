"""Batch scoring: files in, predictions out, through the service's own schema and model code.

``python -m nb2prod_runtime.batch INPUT -o OUTPUT`` in a build directory or the image (the
model in ``./model``, the notebook's code in ``model_code.py``); ``nb2prod batch DIR INPUT -o
OUTPUT`` runs it in DIR. A row scores exactly as ``POST /predict`` scores it: the same input
schema (the card's), the same request validation rules, the same :class:`Predictor`.

- Input: CSV, Parquet or JSON Lines (by extension, or ``--format``); a file, a directory or
  a glob, local or a URL (gs://, through fsspec). Read in chunks of ``--chunk-rows``, so
  memory is bounded by a chunk, not the file.
- Each chunk is validated column by column as the service validates a request (a number
  column takes numbers, a category column its training levels, a required column no null).
  A row that fails, a CSV line with too many fields, or a row the model code raises on
  goes to the rejects file with its file, row number and reason; the run goes on.
- Output: the ``--keep`` columns and the predictions, in input order, written under a
  temporary name and renamed into place only when every input row is accounted for (scored
  or rejected); a URL output is staged locally and uploaded then. A sidecar
  ``OUTPUT.nb2prod.json`` (and, for Parquet, the file's schema metadata) records the model
  version and the counts.

With ``--prediction-log DIR|URL`` (or ``NB2PROD_PREDICTION_LOG``) the scored rows are also
written as the service's prediction log records (batch_log.py).

The run itself is batch_run.py; ``--engine spark`` runs spark_batch.py instead.

In a Cloud Run Job with several tasks (``CLOUD_RUN_TASK_INDEX``/``CLOUD_RUN_TASK_COUNT``),
each task scores every count-th input file from its index into its own output,
``OUTPUT_STEM-00001-of-00004.csv``; a retried task replaces only its own.

Exit codes: 0 scored (rejected rows are counted, not fatal); 1 writing failed (disk full,
permissions), nothing left under the output name; 2 bad arguments or input (a missing
column, an unreadable file, an output that exists); 5 the model could not be loaded;
130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from .batch_files import (
    DEFAULT_CHUNK_ROWS,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_SIGINT,
    BatchError,
    BatchOptions,
    BatchSummary,
    Where,
    location,
    name_of,
    suffix_of,
    with_name,
)
from .batch_output import Interrupted, on_signal
from .batch_run import score_files
from .loader import ModelLoadError, Predictor

__all__ = ["BatchError", "BatchOptions", "BatchSummary", "main", "score_files"]


# --- the command ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nb2prod_runtime.batch",
        description="Score a file, folder or glob of CSV / Parquet / JSON Lines rows with this "
        "build's model, as POST /predict would.",
        epilog="Exit codes: 0 scored (rejected rows are counted); 1 writing failed; 2 bad "
        "arguments or input; 5 the model could not be loaded; 130 SIGINT; 143 SIGTERM.",
    )
    parser.add_argument("input", help="a file, a folder of files, or a glob ('data/*.csv')")
    parser.add_argument(
        "-o", "--output", required=True, type=location, help="the output file (a path or a URL)"
    )
    parser.add_argument("--format", choices=("csv", "parquet", "jsonl"), help="input format")
    parser.add_argument(
        "--output-format",
        choices=("csv", "parquet", "jsonl"),
        help="default: from the output's extension, else csv",
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="COL",
        help="input column to copy to the output beside the predictions (ids); repeatable, "
        "or comma-separated",
    )
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, metavar="N")
    parser.add_argument("--rejects", type=location, help="default: OUTPUT_STEM.rejects.csv")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--force", action="store_true", help="replace a previous batch output")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    parser.add_argument("--model-dir", type=Path, help="default: model/ beside model_code.py")
    parser.add_argument(
        "--prediction-log",
        metavar="DIR|URL",
        help="write the service's prediction log records for the scored rows here (default: "
        "NB2PROD_PREDICTION_LOG; neither: no log)",
    )
    parser.add_argument(
        "--engine",
        choices=("pandas", "spark"),
        default="pandas",
        help="pandas (default): chunks in this process; spark: a Spark job (pyspark, Java)",
    )
    parser.add_argument(
        "--master",
        help="--engine spark's master; default: SPARK_MASTER, spark-submit's, else local[*]",
    )
    return parser


def main(argv: Sequence[str] | None = None, loaded: Callable[[], Predictor] | None = None) -> int:
    """Run the command; return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    spark = args.engine == "spark"
    if args.master and not spark:
        parser.error("--master applies to --engine spark only")
    if args.model_dir and spark:
        parser.error("--model-dir applies to the pandas engine; Spark scores the whole build")
    if args.prediction_log and spark:
        parser.error("--prediction-log applies to the pandas engine; Spark does not log")
    if spark and os.environ.get("NB2PROD_PREDICTION_LOG", "").strip():
        print("nb2prod-batch: notice: the Spark engine writes no prediction log", file=sys.stderr)
    options = _options(args, spark)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if options.chunk_rows < 1:
            raise BatchError("--chunk-rows must be at least 1")
        # The notebook's own print()s go to stderr: stdout is the summary (--json for CI).
        with contextlib.redirect_stdout(sys.stderr):
            if spark:
                from .spark_batch import score_with_spark  # pyspark only when asked for

                summary = score_with_spark(_build_dir(), options, args.master)
            else:
                predictor = (loaded or (lambda: _load(args.model_dir)))()
                summary = score_files(predictor, options)
    except BatchError as err:
        print(f"Error: {err}", file=sys.stderr)
        if err.hint:
            print(f"Hint: {err.hint}", file=sys.stderr)
        return err.code
    except (Interrupted, KeyboardInterrupt) as stop:
        code = stop.code if isinstance(stop, Interrupted) else EXIT_SIGINT
        if isinstance(stop, Interrupted) and stop.committed:
            said = f"{options.output} was written in full before it stopped"
        else:
            said = f"nothing was written under {options.output}"
        print(f"\nnb2prod-batch: stopped; {said}", file=sys.stderr)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        rejected = (
            f", {summary.rows_rejected:,} rejected -> {summary.rejects}"
            if summary.rows_rejected
            else ""
        )
        print(
            f"scored {summary.rows_scored:,} of {summary.rows_in:,} rows -> {summary.output} "
            f"(model {summary.model_version}){rejected}"
        )
    return EXIT_OK


def _options(args: argparse.Namespace, spark: bool) -> BatchOptions:
    """The run's options from the command line, named for its task in a Cloud Run Job."""
    keep = tuple(c.strip() for value in args.keep for c in value.split(",") if c.strip())
    options = BatchOptions(
        inputs=args.input,
        output=args.output,
        fmt=args.format,
        output_format=args.output_format,
        keep=keep,
        chunk_rows=args.chunk_rows,
        rejects=args.rejects,
        force=args.force,
        quiet=args.quiet or args.json,
        prediction_log=args.prediction_log,
    )
    shard = None if spark else _task_shard()  # (Spark splits the input itself)
    if shard is None:
        return options
    # Each task writes its own output (and rejects), named by its index; a retried task
    # replaces only its own, and only what nb2prod batch wrote there.
    return replace(
        options,
        output=shard_name(options.output, *shard),
        rejects=None if options.rejects is None else shard_name(options.rejects, *shard),
        force=True,
        shard=shard,
    )


def _task_shard() -> tuple[int, int] | None:
    """(index, count) of this task; None for one task.

    Cloud Run Jobs set CLOUD_RUN_TASK_INDEX/COUNT. An Indexed Kubernetes Job sets only
    JOB_COMPLETION_INDEX, so the manifest nb2prod writes passes the count as NB2PROD_TASK_COUNT.
    """
    env = os.environ
    try:
        count = int(env.get("CLOUD_RUN_TASK_COUNT") or env.get("NB2PROD_TASK_COUNT") or "1")
        index = int(env.get("CLOUD_RUN_TASK_INDEX") or env.get("JOB_COMPLETION_INDEX") or "0")
    except ValueError:
        return None
    return (index, count) if count > 1 and 0 <= index < count else None


def shard_name(path: Where, index: int, count: int) -> Where:
    """``scored.csv`` -> ``scored-00001-of-00004.csv`` for task 1 of 4 (a path or a URL)."""
    name, suffix = name_of(path), suffix_of(path)
    stem, suffix = name[: len(name) - len(suffix)], name[len(name) - len(suffix) :]
    return with_name(path, f"{stem}-{index:05d}-of-{count:05d}{suffix}")


def _build_dir() -> Path:
    """The build directory this runtime serves: where model_code.py is, not importing it."""
    spec = importlib.util.find_spec("model_code")
    if spec is None or spec.origin is None:
        raise BatchError(
            "can't find the build's model_code.py",
            code=EXIT_MODEL,
            hint="Run it in a build directory (nb2prod batch DIR ...) or in the image.",
        )
    return Path(spec.origin).resolve().parent


def _load(model_dir: Path | None) -> Predictor:
    try:
        model_code = importlib.import_module("model_code")
        directory = model_dir or Path(model_code.__file__ or ".").resolve().parent / "model"
        return Predictor(directory, model_code)
    except ModelLoadError as err:
        raise BatchError(f"can't load the model: {err}", code=EXIT_MODEL) from err
    except ImportError as err:
        raise BatchError(
            f"can't import the build's model_code.py: {err}",
            code=EXIT_MODEL,
            hint="Run it in a build directory (nb2prod batch DIR ...) or in the image.",
        ) from err


if __name__ == "__main__":
    sys.exit(main())
