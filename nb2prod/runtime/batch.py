"""Batch scoring: files in, predictions out, through the service's own schema and model code.

``python -m nb2prod_runtime.batch INPUT -o OUTPUT`` in a build directory or the image (the
model in ``./model``, the notebook's code in ``model_code.py``); ``nb2prod batch DIR INPUT -o
OUTPUT`` runs it in DIR. A row scores exactly as ``POST /predict`` scores it: the same input
schema (the card's), the same request validation rules, the same :class:`Predictor`.

- Input: CSV, Parquet or JSON Lines (by extension, or ``--format``); a file, a directory or
  a glob. Read in chunks of ``--chunk-rows``, so memory is bounded by a chunk, not the file.
- Each chunk is validated column by column as the service validates a request (a number
  column takes numbers, a category column its training levels, a required column no null).
  A row that fails, a CSV line with too many fields, or a row the model code raises on
  goes to the rejects file with its file, row number and reason; the run goes on.
- Output: the ``--keep`` columns and the predictions, in input order, written under a
  temporary name and renamed into place only when every input row is accounted for (scored
  or rejected). A sidecar ``OUTPUT.nb2prod.json`` (and, for Parquet, the file's schema
  metadata) records the model version and the counts.

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
import errno
import importlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd

from .batch_files import (
    DEFAULT_CHUNK_ROWS,
    EXIT_INPUT,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_WRITE,
    FORMATS,
    PLAIN_PROGRESS_SECONDS,
    BatchError,
    Chunk,
    Writer,
    file_columns,
    file_format,
    input_files,
    partial_path,
    prediction_frame,
    read_chunks,
    require_parquet,
    sidecar_path,
)
from .batch_rows import Validator, score_rows
from .loader import ModelLoadError, Predictor

__all__ = ["BatchError", "BatchOptions", "BatchSummary", "main", "score_files"]


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop, remove what was half-written, exit 130 or 143."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class BatchSummary:
    """What a run did: written as the sidecar and printed by ``--json``."""

    model_name: str
    model_version: str
    output: str
    format: str
    inputs: list[str]
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rejects: str | None = None
    seconds: float = 0.0
    rows_per_second: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)  # rejected rows by kind of reason

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- progress ---------------------------------------------------------------------------------


class Progress:
    """Rows and rows per second on stderr: a live line on a terminal, periodic lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self.last = self.started

    def update(self, summary: BatchSummary, final: bool = False) -> None:
        if self.quiet or (final and not self.tty):
            return  # (the summary follows on stdout)
        now = time.perf_counter()
        every = 0.2 if self.tty else PLAIN_PROGRESS_SECONDS
        if not final and now - self.last < every:
            return
        self.last = now
        rate = summary.rows_in / max(now - self.started, 1e-9)
        text = (
            f"nb2prod-batch: {summary.rows_in:,} rows read, {summary.rows_scored:,} scored, "
            f"{summary.rows_rejected:,} rejected ({rate:,.0f} rows/s)"
        )
        if self.tty:
            sys.stderr.write("\r" + text + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOptions:
    inputs: str
    output: Path
    fmt: str | None = None
    output_format: str | None = None
    keep: tuple[str, ...] = ()
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    rejects: Path | None = None
    force: bool = False
    quiet: bool = False
    #: (task index, task count) in a Cloud Run Job: every count-th input file, from index.
    shard: tuple[int, int] | None = None


def score_files(predictor: Predictor, options: BatchOptions) -> BatchSummary:
    """Score every input row into ``options.output`` (see the module docstring)."""
    files = input_files(options.inputs, options.fmt)
    if options.shard is not None:
        index, count = options.shard
        files = files[index::count]  # this task's share; a retry rescores only these
    formats = {path: file_format(path, options.fmt) for path in files}
    out_fmt = options.output_format or FORMATS.get(options.output.suffix.lower()) or "csv"
    if out_fmt == "parquet":
        require_parquet()
    validator = Validator(predictor.schema)
    needed = [*validator.names, *options.keep]
    for path in files:  # every file's columns, before any row is scored
        present = set(file_columns(path, formats[path]))
        missing = [c for c in needed if c not in present]
        missing = [
            c
            for c in missing
            if c in options.keep or not _nullable(validator, c) or formats[path] != "jsonl"
        ]
        if missing:
            raise BatchError(
                f"{path}: missing column(s) {', '.join(map(repr, missing))}; the model's input "
                f"columns are {', '.join(validator.names)}",
                hint="Rename the file's columns to the model's (nb2prod batch reads them by "
                "name), or drop --keep columns the file lacks.",
            )
    rejects_path = options.rejects or options.output.with_name(options.output.stem + ".rejects.csv")
    _refuse_to_overwrite(options.output, options.force)
    _refuse_to_overwrite(rejects_path, options.force, rejects=True)
    summary = BatchSummary(
        model_name=predictor.card.name,
        model_version=predictor.model_version,
        output=str(options.output),
        format=out_fmt,
        inputs=[str(p) for p in files],
    )
    metadata = {
        "nb2prod.model_version": predictor.model_version,
        "nb2prod.model": summary.model_name,
    }
    out = Writer(partial_path(options.output), out_fmt, metadata)
    rejects = Writer(partial_path(rejects_path), "csv", {})
    progress = Progress(options.quiet)
    started = time.perf_counter()
    columns: list[str] = list(options.keep)
    committed = False
    try:
        for path in files:
            for chunk in read_chunks(
                path, formats[path], options.chunk_rows, needed, validator.text_columns
            ):
                columns = _score_chunk(predictor, validator, chunk, options, out, rejects, summary)
                progress.update(summary)
        summary.seconds = round(time.perf_counter() - started, 3)
        summary.rows_per_second = round(summary.rows_in / max(summary.seconds, 1e-9), 1)
        if summary.rows_scored + summary.rows_rejected != summary.rows_in:
            raise BatchError(
                f"rows don't add up: {summary.rows_in} read, {summary.rows_scored} scored, "
                f"{summary.rows_rejected} rejected; nothing was written",
                code=EXIT_WRITE,
            )
        out.close(columns or ["prediction"])
        keep_rejects = summary.rows_rejected > 0 or options.rejects is not None
        if keep_rejects:
            rejects.close(["file", "row", "reason", *options.keep])
            summary.rejects = str(rejects_path)
        else:
            rejects.discard()
        # Everything is written before the first rename: renames don't run out of disk.
        sidecar = partial_path(sidecar_path(options.output))
        sidecar.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
        out.path.replace(options.output)
        if keep_rejects:
            rejects.path.replace(rejects_path)
        sidecar.replace(sidecar_path(options.output))
        committed = True
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise BatchError(
                f"the disk is full writing {options.output} ({err.strerror}); nothing was left "
                "under that name",
                code=EXIT_WRITE,
                hint="Free space, or write the output to another disk (-o).",
            ) from err
        raise BatchError(
            f"writing {options.output} failed: {err}; nothing was left under that name",
            code=EXIT_WRITE,
        ) from err
    finally:
        if not committed:
            out.discard()
            rejects.discard()
            partial_path(sidecar_path(options.output)).unlink(missing_ok=True)
    progress.update(summary, final=True)
    return summary


def _nullable(validator: Validator, name: str) -> bool:
    return any(c["name"] == name and c.get("nullable") for c in validator.columns)


def _refuse_to_overwrite(path: Path, force: bool, rejects: bool = False) -> None:
    """An existing file is replaced only with --force, and only when nb2prod batch wrote it."""
    if not path.exists():
        return
    ours = sidecar_path(path).is_file() or (rejects and _written_by_batch(path))
    if force and ours:
        return
    raise BatchError(
        f"{path} exists" + ("" if ours else " and nb2prod batch did not write it"),
        code=EXIT_INPUT,
        hint="Choose another output path (-o/--rejects)"
        + (", or pass --force to replace it." if ours else "; nb2prod never overwrites it."),
    )


def _written_by_batch(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().startswith("file,row,reason")
    except (OSError, UnicodeDecodeError):
        return False


def _score_chunk(
    predictor: Predictor,
    validator: Validator,
    chunk: Chunk,
    options: BatchOptions,
    out: Writer,
    rejects: Writer,
    summary: BatchSummary,
) -> list[str]:
    frame = chunk.frame.reset_index(drop=True)
    scored = score_rows(predictor, validator, frame)
    kept = frame.loc[scored.rows, list(options.keep)].reset_index(drop=True)
    result = pd.concat([kept, prediction_frame(scored.predictions)], axis=1)
    out.write(result)
    rows = [
        {"file": str(chunk.path), "row": int(chunk.rows[i]), "reason": reason}
        | {k: frame.at[i, k] for k in options.keep}
        for i, reason in scored.rejected
    ]
    rows.extend(
        {"file": str(chunk.path), "row": line, "reason": reason} | {k: None for k in options.keep}
        for line, reason in chunk.broken
    )
    if rows:
        rejects.write(pd.DataFrame(rows, columns=["file", "row", "reason", *options.keep]))
        for row in rows:
            kind = str(row["reason"]).split(":")[0]
            summary.reasons[kind] = summary.reasons.get(kind, 0) + 1
    summary.rows_in += len(frame) + len(chunk.broken)
    summary.rows_scored += len(scored.rows)
    summary.rows_rejected += len(rows)
    return list(result.columns)


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
    parser.add_argument("-o", "--output", required=True, type=Path, help="the output file")
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
    parser.add_argument("--rejects", type=Path, help="default: OUTPUT_STEM.rejects.csv")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--force", action="store_true", help="replace a previous batch output")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    parser.add_argument("--model-dir", type=Path, help="default: model/ beside model_code.py")
    return parser


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # A second signal must not cut short the cleanup the first one starts.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT)


def main(argv: Sequence[str] | None = None, loaded: Callable[[], Predictor] | None = None) -> int:
    """Run the command; return its exit code."""
    args = _parser().parse_args(argv)
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
    )
    shard = _task_shard()
    if shard is not None:
        # Each task writes its own output (and rejects), named by its index; a retried task
        # replaces only its own, and only what nb2prod batch wrote there.
        options = replace(
            options,
            output=shard_name(options.output, *shard),
            rejects=None if options.rejects is None else shard_name(options.rejects, *shard),
            force=True,
            shard=shard,
        )
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if options.chunk_rows < 1:
            raise BatchError("--chunk-rows must be at least 1")
        # The notebook's own print()s go to stderr: stdout is the summary (--json for CI).
        with contextlib.redirect_stdout(sys.stderr):
            predictor = (loaded or (lambda: _load(args.model_dir)))()
            summary = score_files(predictor, options)
    except BatchError as err:
        print(f"Error: {err}", file=sys.stderr)
        if err.hint:
            print(f"Hint: {err.hint}", file=sys.stderr)
        return err.code
    except (Interrupted, KeyboardInterrupt) as stop:
        code = stop.code if isinstance(stop, Interrupted) else EXIT_SIGINT
        print(
            f"\nnb2prod-batch: stopped; nothing was written under {options.output}", file=sys.stderr
        )
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


def shard_name(path: Path, index: int, count: int) -> Path:
    """``scored.csv`` -> ``scored-00001-of-00004.csv`` for task 1 of 4."""
    return path.with_name(f"{path.stem}-{index:05d}-of-{count:05d}{path.suffix}")


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
