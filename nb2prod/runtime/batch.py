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

Exit codes: 0 scored (rejected rows are counted, not fatal); 1 writing failed (disk full,
permissions), nothing left under the output name; 2 bad arguments or input (a missing
column, an unreadable file, an output that exists); 5 the model could not be loaded;
130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import importlib
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import numpy as np
import pandas as pd

from .loader import ModelLoadError, Predictor
from .schema import FrameBuilder

__all__ = ["BatchError", "BatchSummary", "Validator", "main", "predict_isolating", "score_files"]

EXIT_OK, EXIT_WRITE, EXIT_INPUT, EXIT_MODEL = 0, 1, 2, 5
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
#: The sidecar beside the output: model version, counts; also marks a file nb2prod wrote.
SIDECAR_SUFFIX = ".nb2prod.json"
DEFAULT_CHUNK_ROWS = 50_000
#: Seconds between progress lines when stderr is not a terminal.
PLAIN_PROGRESS_SECONDS = 10.0


class BatchError(Exception):
    """A run that can't go on: one clear message, a hint, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_INPUT, hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.hint = code, hint


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


# --- input ------------------------------------------------------------------------------------


def input_files(spec: str, fmt: str | None) -> list[Path]:
    """The files ``spec`` names: a file, a directory (its files in name order) or a glob."""
    if "://" in spec:
        raise BatchError(
            f"{spec}: reading URLs is not supported yet",
            hint="Copy the files to a local folder first (gcloud storage cp -r URL DIR).",
        )
    if any(char in spec for char in "*?["):
        # A user's pattern, absolute or relative: glob.glob takes both (Path.glob doesn't).
        matches = glob.glob(spec, recursive=True)  # noqa: PTH207
        files = sorted(Path(p) for p in matches if Path(p).is_file())
        if not files:
            raise BatchError(f"{spec}: no file matches")
        return files
    path = Path(spec)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and (fmt or FORMATS.get(p.suffix.lower()))
        )
        if not files:
            raise BatchError(f"{spec}: the folder holds no .csv, .parquet or .jsonl file")
        return files
    if not path.is_file():
        raise BatchError(f"{spec}: no such file or folder")
    return [path]


def file_format(path: Path, fmt: str | None) -> str:
    found = fmt or FORMATS.get(path.suffix.lower())
    if found is None:
        raise BatchError(
            f"{path}: can't tell the format from the extension",
            hint="Pass --format csv, parquet or jsonl.",
        )
    return found


def _pyarrow_parquet() -> ModuleType:
    try:
        return importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise BatchError(
            "Parquet needs pyarrow, which is not installed here (the serving image leaves it "
            "out to stay lean)",
            hint="Use CSV or JSON Lines, or pip install pyarrow (add it to "
            "requirements-serving.txt for the image).",
        ) from None


def file_columns(path: Path, fmt: str) -> list[str]:
    """The columns a file holds, read from its header only."""
    try:
        if fmt == "csv":
            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
        if fmt == "parquet":
            return list(_pyarrow_parquet().read_schema(path).names)
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError("a JSON Lines row must be an object {column: value}")
                    return [str(k) for k in record]
        return []
    except BatchError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise BatchError(f"{path}: can't read it as {fmt}: {err}") from err
    except Exception as err:  # pyarrow's own errors (ArrowInvalid) for a corrupt file
        raise BatchError(f"{path}: can't read it as {fmt}: {err}") from err


@dataclass
class Chunk:
    """Rows of one file: ``frame`` and each row's 1-based row number in the file."""

    path: Path
    frame: pd.DataFrame
    rows: np.ndarray
    #: (row number, reason) of lines the reader could not split into the header's fields.
    broken: list[tuple[int, str]] = field(default_factory=list)


def read_chunks(
    path: Path, fmt: str, chunk_rows: int, columns: Sequence[str], text_columns: set[str]
) -> Iterator[Chunk]:
    """The rows of ``path`` in chunks of ``chunk_rows``, only ``columns`` read."""
    wanted = set(columns)
    if fmt == "csv":
        yield from _csv_chunks(path, chunk_rows, wanted, text_columns)
        return
    start = 1
    if fmt == "parquet":
        parquet = _pyarrow_parquet().ParquetFile(path)
        present = [c for c in parquet.schema_arrow.names if c in wanted]
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=present):
            frame = batch.to_pandas()
            yield Chunk(path, frame, np.arange(start, start + len(frame)))
            start += len(frame)
        return
    reader = pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False)
    with reader:
        for frame in reader:
            frame = frame[[c for c in frame.columns if c in wanted]]
            yield Chunk(path, frame, np.arange(start, start + len(frame)))
            start += len(frame)


def _csv_chunks(
    path: Path, chunk_rows: int, wanted: set[str], text_columns: set[str]
) -> Iterator[Chunk]:
    """CSV chunks; a line with more fields than the header is a rejected row, not a crash."""
    start = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        reader = pd.read_csv(
            path,
            chunksize=chunk_rows,
            dtype={c: str for c in text_columns},
            on_bad_lines="warn",
            low_memory=False,
        )
        with reader:
            # Every column is read: with usecols pandas stops checking each line's field count.
            for whole in reader:
                frame = whole[[c for c in whole.columns if c in wanted]]
                broken = _broken_lines(caught)
                caught.clear()
                # Row numbers: the lines skipped before a row shift it down by one each.
                rows = np.arange(start, start + len(frame))
                for line, _ in broken:
                    rows[rows >= line] += 1
                yield Chunk(path, frame, rows, broken)
                start = int(rows[-1]) + 1 if len(rows) else start + len(broken)


def _broken_lines(caught: list[warnings.WarningMessage]) -> list[tuple[int, str]]:
    broken = []
    for warning in caught:
        for text in str(warning.message).splitlines():
            # "Skipping line 1003: expected 5 fields, saw 7"
            head, _, reason = text.partition(": ")
            number = head.removeprefix("Skipping line ").strip()
            if number.isdigit():
                broken.append((int(number) - 1, f"malformed line: {reason.strip()}"))
    return broken


# --- validation -------------------------------------------------------------------------------


class Validator:
    """The service's request rules for a whole chunk at once, and the frame it would build.

    Per column of the card's input schema, as the pydantic request model checks a value:
    numbers and integers (not booleans, not text that isn't a number), booleans, category
    levels seen in training (3 is level "3"), datetimes, and null only where the column is
    nullable. Valid rows become the frame ``FrameBuilder`` makes for a request: schema order,
    training dtypes, ignored columns missing.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.columns: list[dict[str, Any]] = list(schema["columns"])
        self.names = [c["name"] for c in self.columns]
        self.frames = FrameBuilder(schema)
        #: Read as text from CSV: category levels and strings keep "007" and "3" as written.
        self.text_columns = {
            c["name"] for c in self.columns if c["kind"] in ("category", "string", "boolean")
        }

    def check(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
        """(the valid rows' request frame, which rows are valid, each invalid row's reason)."""
        reasons = np.full(len(frame), None, dtype=object)
        values: dict[str, np.ndarray] = {}
        for column in self.columns:
            name = column["name"]
            series = frame[name] if name in frame else pd.Series([None] * len(frame))
            series = series.reset_index(drop=True)
            value, bad = _check_column(series, column)
            values[name] = value
            for index in np.flatnonzero(bad & pd.isna(reasons)):
                reasons[index] = bad_reason(name, series.iloc[index], column)
        ok = pd.isna(reasons).astype(bool)
        valid = {name: value[ok] for name, value in values.items()}
        return self.frames.from_columns(valid, int(ok.sum())), ok, [str(r) for r in reasons[~ok]]


def _check_column(series: pd.Series, column: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The column's values as the request model passes them on, and which are invalid.

    Numbers come back as a float array (NaN: missing), everything else as an object array
    with None for missing, which is what ``FrameBuilder``'s converters take.
    """
    kind = column["kind"]
    missing = series.isna().to_numpy(dtype=bool)
    bad = np.zeros(len(series), dtype=bool)
    if kind in ("number", "integer"):
        if pd.api.types.is_bool_dtype(series):
            bad = ~missing
            numbers = np.full(len(series), np.nan)
        else:
            if series.dtype == object:
                bad |= ~missing & np.fromiter(
                    (isinstance(v, (bool, np.bool_)) for v in series), dtype=bool, count=len(series)
                )
            numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad |= ~missing & np.isnan(numbers)
            if kind == "integer":
                bad |= ~missing & ~np.isnan(numbers) & (np.mod(np.nan_to_num(numbers), 1) != 0)
        if kind == "number":
            out: np.ndarray = numbers
        else:
            out = np.empty(len(series), dtype=object)
            gone = missing | bad
            out[gone] = None
            out[~gone] = numbers[~gone].astype(np.int64)
    else:
        if kind == "category" and column.get("levels"):
            text = series.map(_level_text)
            bad = ~missing & ~text.isin([str(level) for level in column["levels"]]).to_numpy()
        elif kind == "boolean":
            text = series.map(_flag)
            bad = ~missing & text.isna().to_numpy()
        elif kind == "datetime":
            stamps = pd.to_datetime(series, errors="coerce")
            bad = ~missing & stamps.isna().to_numpy()
            text = pd.Series(stamps.dt.to_pydatetime(), dtype=object)
        else:
            text = series.map(str)
        out = text.to_numpy(dtype=object)
        out[missing | bad] = None
    if not column.get("nullable"):
        bad = bad | missing
    return out, bad


def _level_text(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) or value is None else str(value)


# pydantic's lax booleans, as the service accepts them.
_FLAGS = {
    **dict.fromkeys(("true", "t", "yes", "y", "on", "1"), True),
    **dict.fromkeys(("false", "f", "no", "n", "off", "0"), False),
}


def _flag(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    return _FLAGS.get(str(value).strip().lower()) if isinstance(value, str) else None


def bad_reason(name: str, value: Any, column: dict[str, Any]) -> str:
    """Why ``value`` is not valid for ``column``, as the service's 422 would say it."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return f"`{name}`: a value is required (the column is not nullable)"
    kind = column["kind"]
    shown = repr(value.item() if isinstance(value, np.generic) else value)[:60]
    if kind in ("number", "integer"):
        return f"`{name}`: {shown} is not {'an integer' if kind == 'integer' else 'a number'}"
    if kind == "category":
        levels = ", ".join(map(str, column["levels"][:10]))
        return f"`{name}`: {shown} is not a training level ({levels})"
    return f"`{name}`: {shown} is not a {kind}"


# --- output -----------------------------------------------------------------------------------


def _prediction_frame(predictions: list[Any]) -> pd.DataFrame:
    """One ``prediction`` column; vectors (probabilities) as ``prediction_0``, ``_1``..."""
    if predictions and isinstance(predictions[0], list):
        width = len(predictions[0])
        return pd.DataFrame(predictions, columns=[f"prediction_{i}" for i in range(width)])
    return pd.DataFrame({"prediction": predictions})


class _Writer:
    """Appends frames to ``path`` in ``fmt``; the caller renames it into place."""

    def __init__(self, path: Path, fmt: str, metadata: dict[str, str]) -> None:
        self.path, self.fmt, self.metadata = path, fmt, metadata
        self.handle: Any = None
        self.parquet: Any = None
        self.wrote_header = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "parquet":
            import pyarrow as pa

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.parquet is None:
                schema = table.schema.with_metadata(
                    {**(table.schema.metadata or {}), **self._bytes(self.metadata)}
                )
                self.parquet = _pyarrow_parquet().ParquetWriter(self.path, schema)
            self.parquet.write_table(table.cast(self.parquet.schema))
            return
        if self.handle is None:
            self.handle = self.path.open("w", encoding="utf-8", newline="")
        if self.fmt == "csv":
            frame.to_csv(self.handle, header=not self.wrote_header, index=False)
            self.wrote_header = True
        elif len(frame):
            text = frame.to_json(orient="records", lines=True, date_format="iso")
            self.handle.write(text if text.endswith("\n") else text + "\n")

    @staticmethod
    def _bytes(metadata: dict[str, str]) -> dict[bytes, bytes]:
        return {k.encode(): v.encode() for k, v in metadata.items()}

    def close(self, columns: Sequence[str]) -> None:
        """Finish the file (an empty run still gets a header or an empty table), and fsync."""
        if self.fmt == "parquet":
            if self.parquet is None:
                self.write(pd.DataFrame({c: pd.Series(dtype=object) for c in columns}))
            self.parquet.close()
            with self.path.open("rb+") as handle:
                os.fsync(handle.fileno())
            return
        if self.handle is None:
            self.handle = self.path.open("w", encoding="utf-8", newline="")
            if self.fmt == "csv":
                self.handle.write(",".join(columns) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            if self.parquet is not None:
                self.parquet.close()
        with contextlib.suppress(Exception):
            if self.handle is not None:
                self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.nb2prod-partial-{os.getpid()}")


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


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


def score_files(predictor: Predictor, options: BatchOptions) -> BatchSummary:
    """Score every input row into ``options.output`` (see the module docstring)."""
    files = input_files(options.inputs, options.fmt)
    formats = {path: file_format(path, options.fmt) for path in files}
    out_fmt = options.output_format or FORMATS.get(options.output.suffix.lower()) or "csv"
    if out_fmt == "parquet":
        _pyarrow_parquet()
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
    out = _Writer(_partial(options.output), out_fmt, metadata)
    rejects = _Writer(_partial(rejects_path), "csv", {})
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
        out.path.replace(options.output)
        if keep_rejects:
            rejects.path.replace(rejects_path)
        _write_sidecar(options.output, summary)
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
    out: _Writer,
    rejects: _Writer,
    summary: BatchSummary,
) -> list[str]:
    frame = chunk.frame.reset_index(drop=True)
    request, ok, reasons = validator.check(frame)
    predictions, failed = predict_isolating(predictor, request)
    valid_rows = np.flatnonzero(ok)
    scored = np.ones(len(valid_rows), dtype=bool)
    rejected_at: list[tuple[int, str]] = [
        (int(i), r) for i, r in zip(np.flatnonzero(~ok), reasons, strict=True)
    ]
    for position, reason in failed.items():
        scored[position] = False
        rejected_at.append((int(valid_rows[position]), reason))
    kept = frame.loc[valid_rows[scored], list(options.keep)].reset_index(drop=True)
    result = pd.concat([kept, _prediction_frame(predictions)], axis=1)
    out.write(result)
    rows = [
        {"file": str(chunk.path), "row": int(chunk.rows[i]), "reason": reason}
        | {k: frame.at[i, k] for k in options.keep}
        for i, reason in sorted(rejected_at)
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
    summary.rows_scored += int(scored.sum())
    summary.rows_rejected += len(rows)
    return list(result.columns)


def predict_isolating(
    predictor: Predictor, frame: pd.DataFrame
) -> tuple[list[Any], dict[int, str]]:
    """Predictions for the rows that score, and the reason for each row the model code refuses.

    The whole chunk first; when the code raises, halves of it, down to the single rows that
    fail (the build checked that a row's answer doesn't depend on its batch).
    """
    if not len(frame):
        return [], {}
    try:
        return predictor.predict_frame(frame.copy(deep=False)), {}
    except (MemoryError, RecursionError):
        raise
    except Exception as err:
        if len(frame) == 1:
            return [], {0: f"the model code refused the row: {type(err).__name__}: {err}"[:500]}
    half = len(frame) // 2
    first, first_failed = predict_isolating(predictor, frame.iloc[:half])
    second, second_failed = predict_isolating(predictor, frame.iloc[half:])
    failed = {**first_failed, **{half + i: r for i, r in second_failed.items()}}
    return [*first, *second], failed


def _write_sidecar(output: Path, summary: BatchSummary) -> None:
    path = sidecar_path(output)
    partial = _partial(path)
    partial.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    partial.replace(path)


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
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if options.chunk_rows < 1:
            raise BatchError("--chunk-rows must be at least 1")
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
