"""Batch files: which files an input names, and reading them in chunks (a corrupt CSV line is
a rejected row, not a crash); local paths or URLs (gs://, any fsspec URL). Also the records
every engine of ``nb2prod batch`` shares: its options, its summary, its errors.

A URL stays a ``str`` (a ``Path`` would fold its "//"); a local path is a ``Path``. fsspec and
its backends (gcsfs for gs://) are imported only when a URL is used: the serving image has
none of them (a Cloud Run Job mounts its bucket as a volume instead). (A little over 400
lines: each reader opens a path or a URL alike, so splitting them would split that too.)
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FORMATS",
    "BatchError",
    "BatchOptions",
    "BatchSummary",
    "Chunk",
    "Where",
    "file_columns",
    "file_format",
    "filesystem",
    "input_files",
    "is_url",
    "location",
    "name_of",
    "partial_path",
    "prediction_frame",
    "read_chunks",
    "require_parquet",
    "sidecar_path",
    "suffix_of",
    "with_name",
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
GCS_EXTRA = "pip install 'nb2prod[gcs]'"

#: A local path, or a URL kept as text.
Where = Path | str


class BatchError(Exception):
    """A run that can't go on: one clear message, a hint, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_INPUT, hint: str | None = None) -> None:
        super().__init__(message)
        self.code, self.hint = code, hint


@dataclass(frozen=True)
class BatchOptions:
    """What to score and where to write it, as the command line says."""

    inputs: str
    output: Where
    fmt: str | None = None
    output_format: str | None = None
    keep: tuple[str, ...] = ()
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    rejects: Where | None = None
    force: bool = False
    quiet: bool = False
    #: (task index, task count) in a Cloud Run Job: every count-th input file, from index.
    shard: tuple[int, int] | None = None
    #: ``--prediction-log DIR|URL`` (else NB2PROD_PREDICTION_LOG; neither: no log).
    prediction_log: str | None = None


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
    #: Where the prediction log went, the run id in its request ids, rows logged and dropped.
    prediction_log: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        if data["prediction_log"] is None:
            del data["prediction_log"]  # a run without the log reports as it always did
        return data


def is_url(where: object) -> bool:
    return isinstance(where, str) and "://" in where


def location(text: str | Path) -> Where:
    """A URL as text (``Path`` would fold its "//"), anything else as a local ``Path``."""
    return text if isinstance(text, str) and is_url(text) else Path(text)


def name_of(where: Where) -> str:
    return PurePosixPath(where).name if isinstance(where, str) else where.name


def suffix_of(where: Where) -> str:
    return PurePosixPath(str(where)).suffix.lower()


def with_name(where: Where, name: str) -> Where:
    """``where`` with its last component replaced, for a path or a URL alike."""
    if isinstance(where, str):
        return f"{where.rsplit('/', 1)[0]}/{name}"
    return where.with_name(name)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem behind ``url`` and the path within it."""
    try:
        import fsspec  # only URLs need it; the serving image has none

        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as err:
        raise BatchError(
            f"{url}: URLs are read and written through fsspec (gcsfs for gs://), which is not "
            f"installed here ({err})",
            hint=f"{GCS_EXTRA} (other schemes need their fsspec package), or mount the "
            "bucket and pass a local path.",
        ) from err
    except ValueError as err:  # fsspec's "Protocol not known"
        raise BatchError(f"{url}: {err}", hint="Use a local path or a gs:// URL.") from err
    return fs, path


def input_files(spec: str, fmt: str | None) -> list[Where]:
    """The files ``spec`` names: a file, a directory (its files in name order) or a glob."""
    if is_url(spec):
        return _url_files(spec, fmt)
    if any(char in spec for char in "*?["):
        # A user's pattern, absolute or relative: glob.glob takes both (Path.glob doesn't).
        matches = glob.glob(spec, recursive=True)  # noqa: PTH207
        files: list[Where] = sorted(Path(p) for p in matches if Path(p).is_file())
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


def _url_files(spec: str, fmt: str | None) -> list[Where]:
    """An object, the objects under a "folder" prefix (name order, known extensions), or a
    glob's matches, as URLs."""
    fs, path = filesystem(spec)
    try:
        if any(char in path for char in "*?["):
            found = fs.glob(path, detail=True)
            names = [name for name, info in found.items() if info["type"] == "file"]
            if not names:
                raise BatchError(f"{spec}: no object matches")
        elif fs.info(path)["type"] == "directory":
            names = [
                info["name"]
                for info in fs.ls(path, detail=True)
                if info["type"] == "file" and (fmt or FORMATS.get(suffix_of(info["name"])))
            ]
            if not names:
                raise BatchError(f"{spec}: the folder holds no .csv, .parquet or .jsonl object")
        else:
            names = [path]
    except FileNotFoundError as err:
        raise BatchError(f"{spec}: no such object or folder") from err
    except BatchError:
        raise
    except Exception as err:  # the store's own: credentials, permissions, the network
        raise BatchError(f"{spec}: can't list it: {err}") from err
    return [fs.unstrip_protocol(name) for name in sorted(names)]


@contextlib.contextmanager
def _opened(source: Where) -> Iterator[Any]:
    """A local path as it is (pandas and pyarrow open it), a URL as a streamed binary file."""
    if isinstance(source, Path):
        yield source
        return
    fs, path = filesystem(source)
    with fs.open(path, "rb") as handle:
        yield handle


@contextlib.contextmanager
def _text(source: Where) -> Iterator[Any]:
    if isinstance(source, Path):
        with source.open(encoding="utf-8") as handle:
            yield handle
        return
    with _opened(source) as binary, io.TextIOWrapper(binary, encoding="utf-8") as handle:
        yield handle


def file_format(path: Where, fmt: str | None) -> str:
    found = fmt or FORMATS.get(suffix_of(path))
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


def file_columns(path: Where, fmt: str) -> list[str]:
    """The columns a file holds, read from its header only."""
    try:
        if fmt == "csv":
            with _opened(path) as source:
                return [str(c) for c in pd.read_csv(source, nrows=0).columns]
        if fmt == "parquet":
            with _opened(path) as source:
                return list(require_parquet().read_schema(source).names)
        with _text(path) as handle:
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

    path: Where
    frame: pd.DataFrame
    rows: np.ndarray
    #: (row number, reason) of lines the reader could not split into the header's fields.
    broken: list[tuple[int, str]] = field(default_factory=list)


def read_chunks(
    path: Where, fmt: str, chunk_rows: int, columns: Sequence[str], text_columns: set[str]
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
    path: Where, fmt: str, chunk_rows: int, wanted: set[str], text_columns: set[str]
) -> Iterator[Chunk]:
    if fmt == "csv":
        yield from _csv_chunks(path, chunk_rows, wanted, text_columns)
        return
    start = 1
    if fmt == "parquet":
        with _opened(path) as source:
            parquet = require_parquet().ParquetFile(source)
            present = [c for c in parquet.schema_arrow.names if c in wanted]
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=present):
                frame = batch.to_pandas()
                yield Chunk(path, frame, np.arange(start, start + len(frame)))
                start += len(frame)
        return
    yield from _jsonl_chunks(path, chunk_rows, wanted)


def _jsonl_chunks(path: Where, chunk_rows: int, wanted: set[str]) -> Iterator[Chunk]:
    """JSON Lines chunks; a line that is not a JSON object is a rejected row, not a crash.

    Row numbers are line numbers (blank lines are not rows).
    """
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    broken: list[tuple[int, str]] = []
    with _text(path) as handle:
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
    path: Where, chunk_rows: int, wanted: set[str], text_columns: set[str]
) -> Iterator[Chunk]:
    """CSV chunks; a line with more fields than the header is a rejected row, not a crash."""
    start = 1
    with warnings.catch_warnings(record=True) as caught, _opened(path) as source:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        reader = pd.read_csv(
            source,
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


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.nb2prod-partial-{os.getpid()}")


def sidecar_path(output: Where) -> Where:
    return with_name(output, name_of(output) + SIDECAR_SUFFIX)
