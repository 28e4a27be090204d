"""``nb2prod batch --engine spark``: a Spark job reads the input, scores it with
:func:`predict_udf` and writes the output as Spark writes, a directory of part files.

- Input: CSV with a header (every column read as text, which the service's validation reads
  numbers from, as the pandas engine's reader does), Parquet or JSON Lines, by ``--format``
  or the extension; a file, a folder or a glob; any path Spark reads (hdfs://, or gs:// where
  the cluster has the GCS connector, as Dataproc does).
- Scoring: :func:`predict_udf` over the build this runtime belongs to. A row that fails
  validation or that the model code refuses gets ``nb2prod_error``, as does a JSON line that
  isn't an object. The scored rows are persisted once, so that counting them and writing the
  output and the rejects don't run the model again.
- Output: the ``--keep`` columns and the predictions, written to a temporary directory beside
  the target and renamed into place (Hadoop's FileSystem) only once the job has succeeded.
  The run's summary goes inside as ``_nb2prod.json`` (Spark and pyarrow readers skip ``_``
  files); it records the model version and marks the directory as nb2prod's, so --force
  replaces only such a directory. Rejected rows go to ``--rejects`` (a directory of CSV:
  file, the --keep columns, nb2prod_error) or are only counted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .batch_files import (
    EXIT_INPUT,
    EXIT_WRITE,
    FORMATS,
    BatchError,
    BatchOptions,
    BatchSummary,
    file_columns,
    file_format,
    input_files,
    is_url,
    suffix_of,
)
from .batch_output import (
    on_signal,
    raise_pending,
    signal_pending,
    signals_deferred,
    uninterrupted,
)
from .spark import ERROR_COLUMN, predict_udf

__all__ = ["SUMMARY_NAME", "score_with_spark"]

#: The run's summary inside each directory the Spark engine writes; it marks them as ours.
SUMMARY_NAME = "_nb2prod.json"
SPARK_EXTRA = "pip install 'nb2prod[spark]'"
_FILE = "_nb2prod_file"  # the input file of each row, for the rejects
_CORRUPT = "_corrupt_record"  # Spark's column for a JSON line it could not parse


def score_with_spark(build: Path, options: BatchOptions, master: str | None) -> BatchSummary:
    """Score ``options.inputs`` into ``options.output`` in a Spark job (module docstring)."""
    card = json.loads((build / "model" / "model_card.json").read_text())
    paths, fmt = _inputs(options)
    out_fmt = options.output_format or FORMATS.get(suffix_of(options.output)) or "csv"
    summary = BatchSummary(
        model_name=str(card["name"]),
        model_version=str(card["model_version"]),
        output=str(options.output),
        format=out_fmt,
        inputs=paths,
        rejects=None if options.rejects is None else str(options.rejects),
    )
    columns = card["input_schema"]["columns"]
    if not is_url(options.inputs):  # local: fail before the JVM starts, as pandas would
        for path in paths:
            _check_columns(path, file_columns(Path(path), fmt), columns, options.keep, fmt)
    for target in (options.output, options.rejects):
        if isinstance(target, Path):
            _refuse(str(target), target.exists(), (target / SUMMARY_NAME).is_file(), options.force)
    staged: list[str] = []  # temporary directories not yet renamed into place
    hadoop: _Hadoop | None = None
    try:
        # Signals wait, except while an action runs (_run): one raised inside a py4j call
        # would leave this thread's connection to the JVM out of step for the clean-up.
        with signals_deferred(), _spark_session(master, options.chunk_rows) as spark:
            raise_pending()
            hadoop = _Hadoop(spark)
            output = hadoop.qualified(str(options.output))
            rejects = None if options.rejects is None else hadoop.qualified(str(options.rejects))
            for target in filter(None, (output, rejects)):
                hadoop.refuse_to_overwrite(target, options.force)
            frame = _read(spark, paths, fmt, columns, options.keep)
            staged += [hadoop.partial(output)] + ([hadoop.partial(rejects)] if rejects else [])
            _score_and_commit(spark, hadoop, build, frame, options, summary, staged)
    finally:
        # After the session stopped: a cancelled job can't write into them any more.
        for directory in staged if hadoop is not None else []:
            hadoop.delete(directory)
    return summary


def _inputs(options: BatchOptions) -> tuple[list[str], str]:
    """The paths to hand Spark and their one format; local inputs are listed (and checked)
    as the pandas engine lists them, anything else goes to Spark as it is."""
    spec = options.inputs
    if is_url(spec):
        fmt = options.fmt or FORMATS.get(suffix_of(spec.rstrip("/")))
        if fmt is None:
            raise BatchError(f"{spec}: can't tell the format from the name", hint="Pass --format.")
        return [spec], fmt
    files = input_files(spec, options.fmt)
    formats = {file_format(path, options.fmt) for path in files}
    if len(formats) > 1:
        raise BatchError(
            f"{spec} holds {' and '.join(sorted(formats))} files; a Spark read takes one format",
            hint="Pass a glob that picks one kind ('in/*.csv'), or --format.",
        )
    return [str(Path(path).resolve()) for path in files], formats.pop()


@contextmanager
def _spark_session(master: str | None, chunk_rows: int) -> Iterator[Any]:
    """A SparkSession for this run, stopped at the end (its jobs cancelled on the way out)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:
        raise BatchError(
            f"--engine spark needs pyspark, which is not installed here ({err})",
            hint=f"{SPARK_EXTRA}, or run nb2prod batch without --engine spark.",
        ) from err
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else None
    if not (java.is_file() if java else shutil.which("java")):
        raise BatchError(
            "--engine spark needs Java (17 or later), and "
            + (f"JAVA_HOME has none ({java})" if java else "there is no java on PATH"),
            hint="Install a JRE (apt-get install openjdk-17-jre-headless) or set JAVA_HOME.",
        )
    # PySpark 4 warns at every pandas conversion that it doesn't fully support pandas 3; the
    # columns scored here convert exactly (the tests compare every row with the notebook).
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
    chosen = master or os.environ.get("SPARK_MASTER")
    builder = SparkSession.builder.appName("nb2prod-batch").config(
        "spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_rows)
    )
    if chosen:
        builder = builder.master(chosen)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # spark-submit's own master otherwise
        builder = builder.master("local[*]")
        chosen = "local[*]"
    if chosen and chosen.startswith("local"):
        # One process scores: its Python workers are this Python, and no UI for a CLI run.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.ui.enabled", "false")
    try:
        spark = builder.getOrCreate()
    except Exception as err:
        raise BatchError(f"Spark did not start: {_first_line(err)}", code=EXIT_INPUT) from err
    # SparkContext puts in its own SIGINT handler; the run's (clean up, exit 130) stays.
    signal.signal(signal.SIGINT, on_signal)
    try:
        yield spark
    finally:
        spark.sparkContext.cancelAllJobs()
        spark.stop()


def _read(
    spark: Any, paths: list[str], fmt: str, columns: list[dict[str, Any]], keep: tuple[str, ...]
) -> Any:
    """The input as a DataFrame of the columns scoring needs, each row's file beside them."""
    from pyspark.sql import functions as F

    def read() -> Any:
        if fmt == "csv":
            return spark.read.option("header", True).option("mode", "PERMISSIVE").csv(paths)
        if fmt == "parquet":
            return spark.read.parquet(*paths)
        return spark.read.option("mode", "PERMISSIVE").json(paths)  # (a job: it infers types)

    frame = _run(spark, read, f"can't read {', '.join(paths)} as {fmt}", EXIT_INPUT)
    present = set(frame.columns)
    names = [c["name"] for c in columns]
    _check_columns(paths[0], list(present), columns, keep, fmt)
    selected = [F.col(f"`{c}`") if c in present else F.lit(None).alias(c) for c in names]
    selected += [F.col(f"`{c}`") for c in keep if c not in names]
    selected.append(F.col("_metadata.file_path").alias(_FILE))
    if _CORRUPT in present:
        selected.append(F.col(_CORRUPT))
    return frame.select(*selected)


def _check_columns(
    path: str, present: list[str], columns: list[dict[str, Any]], keep: tuple[str, ...], fmt: str
) -> None:
    """A model input (or --keep) column the input lacks is one error before any scoring; a
    JSON Lines row may leave out a nullable one."""
    missing = [
        c["name"]
        for c in columns
        if c["name"] not in present and not (fmt == "jsonl" and c.get("nullable"))
    ] + [c for c in keep if c not in present]
    if missing:
        raise BatchError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; the model's input "
            f"columns are {', '.join(c['name'] for c in columns)}",
            hint="Rename the file's columns to the model's (nb2prod batch reads them by "
            "name), or drop --keep columns the file lacks.",
        )


def _refuse(path: str, exists: bool, ours: bool, force: bool) -> None:
    """An existing output is replaced only with --force, and only when this engine wrote it."""
    if not exists or (force and ours):
        return
    raise BatchError(
        f"{path} exists" + ("" if ours else " and nb2prod batch did not write it"),
        code=EXIT_INPUT,
        hint="Choose another output path (-o/--rejects)"
        + (", or pass --force to replace it." if ours else "; nb2prod never overwrites it."),
    )


def _score_and_commit(
    spark: Any,
    hadoop: _Hadoop,
    build: Path,
    frame: Any,
    options: BatchOptions,
    summary: BatchSummary,
    staged: list[str],
) -> None:
    """Score, count, write to the ``staged`` directories, then rename them into place (and
    empty ``staged``)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.perf_counter()
    scored = predict_udf(spark, build)(frame)
    if _CORRUPT in frame.columns:
        malformed = F.lit("malformed line: not a JSON object {column: value}")
        error = F.when(F.col(_CORRUPT).isNotNull(), malformed).otherwise(F.col(ERROR_COLUMN))
        scored = scored.withColumn(ERROR_COLUMN, error)
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    predictions = [c for c in scored.columns if c not in frame.columns and c != ERROR_COLUMN]
    output = hadoop.qualified(str(options.output))
    rejects = None if options.rejects is None else hadoop.qualified(str(options.rejects))
    try:
        kinds = F.substring_index(F.col(ERROR_COLUMN), ":", 1).alias("kind")
        for row in _run(spark, lambda: scored.groupBy(kinds).count().collect()):
            if row["kind"] is None:
                summary.rows_scored = int(row["count"])
            else:
                summary.reasons[row["kind"]] = int(row["count"])
        summary.rows_rejected = sum(summary.reasons.values())
        summary.rows_in = summary.rows_scored + summary.rows_rejected
        ok = scored.where(F.col(ERROR_COLUMN).isNull())
        keep = [F.col(f"`{c}`") for c in options.keep]
        _run(spark, lambda: _write(ok.select(*keep, *predictions), staged[0], summary.format))
        if rejects:
            bad = scored.where(F.col(ERROR_COLUMN).isNotNull())
            rejected = bad.select(F.col(_FILE).alias("file"), *keep, ERROR_COLUMN)
            _run(spark, lambda: _write(rejected, staged[1], "csv"))
        summary.seconds = round(time.perf_counter() - started, 3)
        summary.rows_per_second = round(summary.rows_in / max(summary.seconds, 1e-9), 1)
        text = json.dumps(summary.to_json(), indent=2) + "\n"
        for directory in staged:
            hadoop.write_text(f"{directory}/{SUMMARY_NAME}", text)
        raise_pending()  # a signal before the commit: nothing is committed
        with uninterrupted():
            if rejects:
                hadoop.replace(staged[1], rejects)
            hadoop.replace(staged[0], output)
            staged.clear()
    finally:
        spark.sparkContext.cancelAllJobs()  # (an interrupted action's job may still run)
        scored.unpersist()


def _write(frame: Any, path: str, fmt: str) -> None:
    writer = frame.write.mode("errorifexists")
    if fmt == "csv":
        writer.option("header", True).csv(path)
    elif fmt == "parquet":
        writer.parquet(path)
    else:
        writer.json(path)


def _run(
    spark: Any,
    job: Any,
    failed: str = "the Spark job failed",
    code: int = EXIT_WRITE,
) -> Any:
    """A Spark action in a thread of its own, while this thread waits where a signal may
    land: it cancels the job, waits for it to end, and raises Interrupted. A failure (a task
    that kept failing, a full disk) is one error."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = job()
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err

    worker = threading.Thread(target=target, name="nb2prod-spark-action", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
        if signal_pending():
            spark.sparkContext.cancelAllJobs()
            worker.join()
            raise_pending()
    error = outcome.get("error")
    if isinstance(error, BatchError):
        raise error
    if error is not None:
        suffix = "; nothing was left under the output name" if code == EXIT_WRITE else ""
        raise BatchError(f"{failed}: {_first_line(error)}{suffix}", code=code) from error
    return outcome["value"]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:500]


class _Hadoop:
    """Paths through Hadoop's FileSystem, where Spark writes: local, hdfs:// and gs:// alike."""

    def __init__(self, spark: Any) -> None:
        self.jvm = spark.sparkContext._jvm
        self.conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str) -> tuple[Any, Any]:
        hpath = self.jvm.org.apache.hadoop.fs.Path(path)
        return hpath.getFileSystem(self.conf), hpath

    def qualified(self, path: str) -> str:
        fs, hpath = self._fs(path)
        return str(fs.makeQualified(hpath).toString())

    def exists(self, path: str) -> bool:
        fs, hpath = self._fs(path)
        return bool(fs.exists(hpath))

    def partial(self, path: str) -> str:
        parent, _, name = path.rstrip("/").rpartition("/")
        return f"{parent}/.{name}.nb2prod-partial-{os.getpid()}"

    def refuse_to_overwrite(self, path: str, force: bool) -> None:
        _refuse(path, self.exists(path), self.exists(f"{path}/{SUMMARY_NAME}"), force)

    def write_text(self, path: str, text: str) -> None:
        fs, hpath = self._fs(path)
        stream = fs.create(hpath, False)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def replace(self, staged: str, path: str) -> None:
        """Rename ``staged`` to ``path``; an existing ``path`` (ours) goes only after."""
        fs, target = self._fs(path)
        old = None
        if fs.exists(target):
            old = self.partial(path).replace("-partial-", "-replaced-")
            if not fs.rename(target, self._fs(old)[1]):
                raise BatchError(f"can't move the previous {path} aside", code=EXIT_WRITE)
        if not fs.rename(self._fs(staged)[1], target):
            raise BatchError(f"can't rename the finished output to {path}", code=EXIT_WRITE)
        if old is not None:
            self.delete(old)

    def delete(self, path: str) -> None:
        fs, hpath = self._fs(path)
        fs.delete(hpath, True)
