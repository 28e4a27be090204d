"""Batch run: every input file read in chunks, each chunk validated and scored, the output,
the rejects and the sidecar staged and committed once every row is accounted for. The
command that runs it (``python -m nb2prod_runtime.batch``) is batch.py.
"""

from __future__ import annotations

import errno
import json
import sys
import time
from pathlib import Path

import pandas as pd

from .batch_files import (
    EXIT_WRITE,
    FORMATS,
    PLAIN_PROGRESS_SECONDS,
    BatchError,
    BatchOptions,
    BatchSummary,
    Chunk,
    Where,
    file_columns,
    file_format,
    input_files,
    name_of,
    prediction_frame,
    read_chunks,
    require_parquet,
    sidecar_path,
    suffix_of,
    with_name,
)
from .batch_log import BatchLog, open_batch_log
from .batch_output import (
    Writer,
    commit,
    exists,
    refuse_to_overwrite,
    remove,
    staged_path,
    staging_folder,
    uninterrupted,
)
from .batch_rows import Validator, score_rows
from .loader import Predictor

__all__ = ["Progress", "rejects_beside", "score_files"]


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


def score_files(predictor: Predictor, options: BatchOptions) -> BatchSummary:
    """Score every input row into ``options.output`` (see the module docstring)."""
    files = input_files(options.inputs, options.fmt)
    if options.shard is not None:
        index, count = options.shard
        files = files[index::count]  # this task's share; a retry rescores only these
    formats = {path: file_format(path, options.fmt) for path in files}
    out_fmt = options.output_format or FORMATS.get(suffix_of(options.output)) or "csv"
    if out_fmt == "parquet":
        require_parquet()
    validator = Validator(predictor.schema)
    _check_columns(files, formats, validator, options.keep)
    rejects_path = options.rejects or rejects_beside(options.output)
    replacing = exists(options.output)
    refuse_to_overwrite(options.output, options.force)
    refuse_to_overwrite(rejects_path, options.force, rejects=True)
    summary = BatchSummary(
        model_name=predictor.card.name,
        model_version=predictor.model_version,
        output=str(options.output),
        format=out_fmt,
        inputs=[str(p) for p in files],
    )
    log = open_batch_log(predictor, options.prediction_log, options.keep, options.chunk_rows)
    try:
        with staging_folder(options.output, rejects_path) as staging:
            _score_and_commit(
                predictor, validator, files, formats, options, summary, rejects_path, staging,
                replacing, log,
            )  # fmt: skip
    finally:
        if log is not None:
            log.close()  # (again, after a failure: a closed log closes as a no-op)
    return summary


def rejects_beside(output: Where) -> Where:
    """The default rejects file: ``OUTPUT_STEM.rejects.csv`` beside the output."""
    name = name_of(output)
    return with_name(output, name[: len(name) - len(suffix_of(output))] + ".rejects.csv")


def _check_columns(
    files: list[Where], formats: dict[Where, str], validator: Validator, keep: tuple[str, ...]
) -> None:
    """Every file's columns, before any row is scored: a missing one is one error."""
    needed = [*validator.names, *keep]
    for path in files:
        present = set(file_columns(path, formats[path]))
        missing = [
            c
            for c in needed
            if c not in present
            and (c in keep or not _nullable(validator, c) or formats[path] != "jsonl")
        ]
        if missing:
            raise BatchError(
                f"{path}: missing column(s) {', '.join(map(repr, missing))}; the model's input "
                f"columns are {', '.join(validator.names)}",
                hint="Rename the file's columns to the model's (nb2prod batch reads them by "
                "name), or drop --keep columns the file lacks.",
            )


def _score_and_commit(
    predictor: Predictor,
    validator: Validator,
    files: list[Where],
    formats: dict[Where, str],
    options: BatchOptions,
    summary: BatchSummary,
    rejects_path: Where,
    staging: Path | None,
    replacing: bool,
    log: BatchLog | None,
) -> None:
    """Score every file into staged files, then commit them: sidecar, rejects, output last."""
    metadata = {"nb2prod.model_version": summary.model_version, "nb2prod.model": summary.model_name}
    out = Writer(staged_path(options.output, staging), summary.format, metadata)
    rejects = Writer(staged_path(rejects_path, staging), "csv", {})
    sidecar = staged_path(sidecar_path(options.output), staging)
    progress = Progress(options.quiet)
    done: list[Where] = []  # committed so far
    try:
        columns = _score_all(
            predictor, validator, files, formats, options, (out, rejects), summary, progress, log
        )
        if summary.rows_scored + summary.rows_rejected != summary.rows_in:
            raise BatchError(
                f"rows don't add up: {summary.rows_in} read, {summary.rows_scored} scored, "
                f"{summary.rows_rejected} rejected; nothing was written",
                code=EXIT_WRITE,
            )
        if log is not None:
            log.close()  # its last file published, its counts final for the sidecar
            summary.prediction_log = log.summary()
        out.close(columns or ["prediction"])
        steps = [(sidecar, sidecar_path(options.output))]
        if summary.rows_rejected > 0 or options.rejects is not None:
            rejects.close(["file", "row", "reason", *options.keep])
            summary.rejects = str(rejects_path)
            steps.append((rejects.path, rejects_path))
        else:
            rejects.discard()
        # Everything is written before the first commit: renames don't run out of disk.
        sidecar.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
        steps.append((out.path, options.output))
        if staging is not None and not options.quiet:
            print(f"nb2prod-batch: uploading {options.output}", file=sys.stderr)
        with uninterrupted():
            for staged, where in steps:
                commit(staged, where)
                done.append(where)
    except OSError as err:
        raise _write_error(err, options.output) from err
    finally:
        if options.output not in done:
            out.discard()
            rejects.discard()
            sidecar.unlink(missing_ok=True)
            if not replacing:  # (a replaced output keeps a sidecar, so stays ours)
                for where in done:
                    remove(where)
    progress.update(summary, final=True)


def _score_all(
    predictor: Predictor,
    validator: Validator,
    files: list[Where],
    formats: dict[Where, str],
    options: BatchOptions,
    writers: tuple[Writer, Writer],
    summary: BatchSummary,
    progress: Progress,
    log: BatchLog | None,
) -> list[str]:
    """Every file's chunks scored into the (output, rejects) writers; the output's columns."""
    needed = [*validator.names, *options.keep]
    started = time.perf_counter()
    columns: list[str] = list(options.keep)
    for path in files:
        for chunk in read_chunks(
            path, formats[path], options.chunk_rows, needed, validator.text_columns
        ):
            columns = _score_chunk(predictor, validator, chunk, options, *writers, summary, log)
            progress.update(summary)
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.rows_per_second = round(summary.rows_in / max(summary.seconds, 1e-9), 1)
    return columns


def _write_error(err: OSError, output: Where) -> BatchError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return BatchError(
            f"the disk is full writing {output} ({err.strerror}); nothing was left under that name",
            code=EXIT_WRITE,
            hint="Free space, or write the output to another disk (-o).",
        )
    return BatchError(
        f"writing {output} failed: {err}; nothing was left under that name", code=EXIT_WRITE
    )


def _nullable(validator: Validator, name: str) -> bool:
    return any(c["name"] == name and c.get("nullable") for c in validator.columns)


def _score_chunk(
    predictor: Predictor,
    validator: Validator,
    chunk: Chunk,
    options: BatchOptions,
    out: Writer,
    rejects: Writer,
    summary: BatchSummary,
    log: BatchLog | None,
) -> list[str]:
    frame = chunk.frame.reset_index(drop=True)
    scored = score_rows(predictor, validator, frame)
    kept = frame.loc[scored.rows, list(options.keep)].reset_index(drop=True)
    result = pd.concat([kept, prediction_frame(scored.predictions)], axis=1)
    out.write(result)
    if log is not None and scored.request is not None:
        log.chunk(scored.request, scored.predictions, kept)
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
