"""Batch files: which files an input names, reading them in chunks (a corrupt CSV line is a
rejected row, not a crash), and writing the output under a temporary name.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FORMATS",
    "BatchError",
    "Chunk",
    "Writer",
    "file_columns",
    "file_format",
    "input_files",
    "partial_path",
    "prediction_frame",
    "read_chunks",
    "require_parquet",
    "sidecar_path",
]

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


def require_parquet() -> ModuleType:
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
            return list(require_parquet().read_schema(path).names)
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
    """The rows of ``path`` in chunks of ``chunk_rows``, only ``columns`` read.

    A file that can't be read on (not UTF-8, a truncated Parquet file) is a BatchError naming
    it; lines that can't be parsed (CSV, JSON Lines) are rejected rows instead.
    """
    try:
        yield from _chunks(path, fmt, chunk_rows, set(columns), text_columns)
    except (ValueError, UnicodeDecodeError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise BatchError(f"{path}: can't read it as {fmt}: {err}") from err
    except OSError as err:
        if not _is_arrow_error(err):
            raise  # the disk, not the file's content
        raise BatchError(f"{path}: can't read it as {fmt}: {err}") from err


def _is_arrow_error(err: BaseException) -> bool:
    return type(err).__module__.startswith("pyarrow")


def _chunks(
    path: Path, fmt: str, chunk_rows: int, wanted: set[str], text_columns: set[str]
) -> Iterator[Chunk]:
    if fmt == "csv":
        yield from _csv_chunks(path, chunk_rows, wanted, text_columns)
        return
    start = 1
    if fmt == "parquet":
        parquet = require_parquet().ParquetFile(path)
        present = [c for c in parquet.schema_arrow.names if c in wanted]
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=present):
            frame = batch.to_pandas()
            yield Chunk(path, frame, np.arange(start, start + len(frame)))
            start += len(frame)
        return
    yield from _jsonl_chunks(path, chunk_rows, wanted)


def _jsonl_chunks(path: Path, chunk_rows: int, wanted: set[str]) -> Iterator[Chunk]:
    """JSON Lines chunks; a line that is not a JSON object is a rejected row, not a crash.

    Row numbers are line numbers (blank lines are not rows).
    """
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    broken: list[tuple[int, str]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                broken.append((number, f"malformed line: not JSON ({err})"))
            else:
                if isinstance(record, dict):
                    records.append({k: v for k, v in record.items() if k in wanted})
                    rows.append(number)
                else:
                    broken.append((number, "malformed line: not a JSON object {column: value}"))
            if len(records) + len(broken) >= chunk_rows:
                yield Chunk(path, _frame(records, wanted), np.array(rows, dtype=int), broken)
                records, rows, broken = [], [], []
    if records or broken:
        yield Chunk(path, _frame(records, wanted), np.array(rows, dtype=int), broken)


def _frame(records: list[dict[str, Any]], wanted: set[str]) -> pd.DataFrame:
    """The records as a frame with every wanted column (missing where a record lacks it)."""
    return pd.DataFrame.from_records(records, columns=sorted(wanted))


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


def prediction_frame(predictions: list[Any]) -> pd.DataFrame:
    """One ``prediction`` column; vectors (probabilities) as ``prediction_0``, ``_1``..."""
    if predictions and isinstance(predictions[0], list):
        width = len(predictions[0])
        return pd.DataFrame(predictions, columns=[f"prediction_{i}" for i in range(width)])
    return pd.DataFrame({"prediction": predictions})


class Writer:
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
                self.parquet = require_parquet().ParquetWriter(self.path, schema)
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


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.nb2prod-partial-{os.getpid()}")


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)
