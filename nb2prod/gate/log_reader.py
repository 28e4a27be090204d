"""Reading the prediction log and the labels: the two inputs every quality job joins.

:func:`load_predictions` turns the service's prediction log into one row per predicted row:
``request_id``, ``row`` (the row's index in its request: ``row_offset + i``), ``timestamp``
(UTC), ``model_version``, ``revision``, ``prediction``, ``probabilities`` and ``classes``
(lists, or None when not logged), then the logged input columns. An input column whose name
is one of these or ``label`` is kept as ``input.NAME`` (:func:`logged_name`). It reads:

- a ``.jsonl`` file or a folder of them as the service publishes them (hidden staging files
  are skipped: they are still being written), or a ``.parquet`` file of the same records;
- a saved stdout or Cloud Logging export: JSON lines (or a JSON array) among which the ones
  labelled ``nb2prod_log: predictions`` are records, at top level or under ``jsonPayload``;
  other log lines are skipped;
- ``gs://...`` through fsspec (the ``gcs`` extra), ``bq://project.dataset.table`` through
  pandas-gbq (the ``bigquery`` extra), e.g. the table a Cloud Logging sink fills.

:func:`load_labels` reads ground truth (CSV, Parquet, JSON Lines, gs:// or bq://) with the key
column and a ``label`` column (and ``row`` with the key ``request_id``, when present).
:mod:`.joined` matches the two.

A little over 400 lines: each source's reader is short, and they share the record parsing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd

from ..errors import ConfigError, MissingExtraError

__all__ = [
    "LABEL_COLUMN",
    "PREDICTION_COLUMNS",
    "REQUEST_KEY",
    "ROW_COLUMN",
    "load_labels",
    "load_predictions",
    "logged_name",
]

#: The columns load_predictions puts before the inputs, in this order.
PREDICTION_COLUMNS = (
    "request_id",
    "row",
    "timestamp",
    "model_version",
    "revision",
    "prediction",
    "probabilities",
    "classes",
)
LABEL_COLUMN = "label"
ROW_COLUMN = "row"
REQUEST_KEY = "request_id"
#: Input names that would clash with a column of the joined rows: such an input is renamed.
_RESERVED = frozenset({*PREDICTION_COLUMNS, LABEL_COLUMN})
_PARQUET_MAGIC = b"PAR1"

#: What the service puts on each stdout record (prediction_log_sinks.LOG_LABEL), and where a
#: Cloud Logging export or its BigQuery sink keeps it.
_LABEL_KEY, _LABEL_VALUE = "nb2prod_log", "predictions"
_LABEL_FIELDS = ("logging.googleapis.com/labels", "labels")
_TEXT_SUFFIXES = (".jsonl", ".json", ".log", ".txt", ".ndjson")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_LOG_HINT = (
    "Point --predictions at the folder NB2PROD_PREDICTION_LOG names, a file from it, a saved "
    "stdout or Cloud Logging export (entries labelled nb2prod_log=predictions), gs://... or "
    "bq://project.dataset.table."
)


# --- reading the prediction log --------------------------------------------------------------


def logged_name(name: str) -> str:
    """The column of :func:`load_predictions`'s frame that holds the input column ``name``."""
    return f"input.{name}" if name in _RESERVED else name


def load_predictions(source: str) -> pd.DataFrame:
    """One row per predicted row of the log at ``source`` (see the module docstring);
    ConfigError when there is none or a line cannot be read (naming the file and line)."""
    if source.startswith("bq://"):
        records: Iterable[tuple[str, dict[str, Any]]] = _bigquery_records(source)
    else:
        records = _log_records(source)
    rows = list(_exploded(records))
    if not rows:
        raise ConfigError(f"no prediction records found in {source}", hint=_LOG_HINT)
    frame = pd.DataFrame.from_records(rows)
    for column in PREDICTION_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    inputs = [column for column in frame.columns if column not in PREDICTION_COLUMNS]
    frame = frame[[*PREDICTION_COLUMNS, *inputs]]
    frame["request_id"] = frame["request_id"].astype(str)
    try:
        frame["row"] = frame["row"].astype("int64")
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{source}: a record's row (or row_offset) is not a whole number ({err})",
            hint="The log is damaged; leave that record out of --predictions.",
        ) from err
    frame["model_version"] = frame["model_version"].fillna("").astype(str)
    frame["revision"] = frame["revision"].fillna("").astype(str)
    frame["timestamp"] = _timestamps(frame, source)
    # The same record read twice (a folder and an export of it) is one prediction.
    return frame.drop_duplicates(
        subset=["request_id", "row", "model_version", "revision", "timestamp"]
    ).reset_index(drop=True)


def _timestamps(frame: pd.DataFrame, source: str) -> pd.Series:
    """The ``timestamp`` column as UTC; ConfigError naming a value that is not ISO 8601."""
    raw = frame["timestamp"]
    try:
        return pd.to_datetime(raw, utc=True, format="ISO8601")
    except (TypeError, ValueError, OverflowError) as err:
        parsed = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna() & raw.notna()
        example = frame.loc[bad].iloc[0] if bad.any() else frame.iloc[0]
        value = example["timestamp"]
        value = value.item() if hasattr(value, "item") else value
        raise ConfigError(
            f"{source}: the record of request {example['request_id']!r} has the timestamp "
            f"{value!r}, not an ISO 8601 time",
            hint="The service writes times such as 2026-11-30T10:00:00.123456+00:00; leave "
            "damaged records out of --predictions.",
        ) from err


def _exploded(records: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Each record's rows: the record's fields, its i-th prediction and its i-th inputs."""
    for where, record in records:
        if "inputs" not in record and "prediction" in record:
            # Already one row per predicted row (a table someone flattened).
            yield {"row": 0, **record}
            continue
        inputs = record.get("inputs") or []
        predictions = record.get("predictions") or []
        probabilities = record.get("probabilities")
        classes = record.get("classes")
        if not isinstance(inputs, list) or not isinstance(predictions, list):
            raise _damaged(where, record, "inputs or predictions that are not lists of rows")
        if len(inputs) != len(predictions):
            raise _damaged(
                where, record, f"{len(inputs)} input rows but {len(predictions)} predictions"
            )
        if probabilities is not None and (
            not isinstance(probabilities, list) or len(probabilities) != len(predictions)
        ):
            raise _damaged(where, record, "probabilities that do not match its predictions")
        if classes is not None and not isinstance(classes, list):
            raise _damaged(where, record, "classes that are not a list")
        if not all(values is None or isinstance(values, dict) for values in inputs):
            raise _damaged(where, record, "input rows that are not {column: value} objects")
        try:
            offset = int(record.get("row_offset") or 0)
        except (TypeError, ValueError):
            raise _damaged(where, record, "a row_offset that is not a whole number") from None
        for i, (values, prediction) in enumerate(zip(inputs, predictions, strict=True)):
            proba = probabilities[i] if probabilities is not None else None
            row_classes = list(classes) if classes is not None else None
            if isinstance(proba, dict):  # {class: probability}
                row_classes, proba = list(proba), list(proba.values())
            row = {
                "request_id": record.get("request_id"),
                "row": offset + i,
                "timestamp": record.get("timestamp"),
                "model_version": record.get("model_version"),
                "revision": record.get("revision"),
                "prediction": prediction,
                "probabilities": list(proba) if proba is not None else None,
                "classes": row_classes,
            }
            for name, value in dict(values or {}).items():
                row[logged_name(name)] = value
            yield row


def _damaged(where: str, record: dict[str, Any], why: str) -> ConfigError:
    return ConfigError(
        f"{where}: the record of request {record.get('request_id')!r} has {why}",
        hint="The log is damaged; leave that record out of --predictions.",
    )


def _as_record(entry: Any) -> dict[str, Any] | None:
    """The prediction record in a parsed line or entry, or None for any other log entry."""
    if not isinstance(entry, dict):
        return None
    for name in _LABEL_FIELDS:
        labels = entry.get(name)
        if isinstance(labels, dict) and labels.get(_LABEL_KEY) == _LABEL_VALUE:
            payload = entry.get("jsonPayload")
            if not isinstance(payload, dict):
                return entry
            if payload.get("timestamp") is None and entry.get("timestamp") is not None:
                # Cloud Logging may take a payload's "timestamp" for the entry's own.
                return {**payload, "timestamp": entry["timestamp"]}
            return payload
    if "request_id" in entry and ("predictions" in entry or "prediction" in entry):
        return entry
    return None


def _log_records(source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for every prediction record in the file or folder ``source``."""
    fs, root = _filesystem(source)
    if not fs.exists(root):
        raise ConfigError(f"--predictions {source} does not exist", hint=_LOG_HINT)
    for path in _files(fs, root, source):
        where = _display(source, root, path)
        try:
            with fs.open(path, "rb") as handle:
                data = handle.read()
        except OSError as err:
            raise ConfigError(f"cannot read {where} ({err})", hint=_LOG_HINT) from err
        if path.endswith(_PARQUET_SUFFIXES) or data.startswith(_PARQUET_MAGIC):
            for number, entry in enumerate(_parquet_rows(data, where), start=1):
                record = _as_record(entry)
                if record is not None:
                    yield f"{where}, row {number}", record
            continue
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{where} is neither text (JSON Lines, a log capture) nor Parquet: byte "
                f"{err.start} is not UTF-8",
                hint=_LOG_HINT,
            ) from err
        yield from _text_records(text, where, strict=path.endswith((".jsonl", ".ndjson")))


def _text_records(text: str, where: str, strict: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """Records in a JSON Lines file (``strict``: every line must parse) or a log capture
    (lines that are not JSON are other programs' logs, unless they look like a record)."""
    if text.lstrip().startswith("["):  # gcloud logging read --format=json: one array
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as err:
            raise _unreadable(where, err.lineno, str(err)) from err
        for number, entry in enumerate(entries, start=1):
            record = _as_record(entry)
            if record is not None:
                yield f"{where}[{number}]", record
        return
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        start = stripped.find("{")
        try:
            entry = json.loads(stripped if strict else stripped[max(start, 0) :])
        except json.JSONDecodeError as err:
            if strict or _LABEL_KEY in stripped or '"predictions"' in stripped:
                raise _unreadable(where, number, str(err)) from err
            continue
        record = _as_record(entry)
        if record is not None:
            yield f"{where}:{number}", record


def _unreadable(where: str, line: int, why: str) -> ConfigError:
    return ConfigError(
        f"{where}, line {line}: not a readable prediction record ({why})",
        hint="The line is cut or damaged (a file copied while written?); remove that line "
        "or pass the files the service published (predictions-*.jsonl).",
    )


def _files(fs: Any, root: str, source: str) -> list[str]:
    """The log files at ``root``: itself, or a folder's (recursively) in name order."""
    if not fs.isdir(root):
        return [root]
    found = [
        path
        for path in fs.find(root)
        if path.endswith(_TEXT_SUFFIXES + _PARQUET_SUFFIXES)
        # Staging files are hidden (".predictions-...") until published whole.
        and not any(part.startswith(".") for part in path[len(root) :].split("/") if part)
    ]
    if not found:
        raise ConfigError(
            f"no prediction log files (*.jsonl, *.parquet) in {source}",
            hint="The service publishes a file when it rotates one or shuts down; stop it "
            "(SIGTERM) or wait for NB2PROD_PREDICTION_LOG_ROTATE_SECONDS. " + _LOG_HINT,
        )
    return sorted(found)


def _parquet_rows(data: bytes, where: str) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise MissingExtraError("batch", "reading Parquet", err) from err
    try:
        rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as err:
        raise ConfigError(
            f"{where} is not a readable Parquet file ({err})",
            hint="Pass the Parquet files as written, or JSON Lines.",
        ) from err
    return rows


def _filesystem(source: str) -> tuple[Any, str]:
    """An fsspec filesystem and the path in it (gs:// needs gcsfs)."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(source)
    except ImportError as err:
        raise MissingExtraError("gcs", f"reading {source}", err) from err
    return fs, str(root).rstrip("/") or str(root)


def _display(source: str, root: str, path: str) -> str:
    if path == root:
        return source
    return f"{source.rstrip('/')}/{path[len(root) :].lstrip('/')}"


def _bigquery_frame(source: str, what: str) -> pd.DataFrame:
    """The whole table ``bq://project.dataset.table`` (pandas-gbq, the ``bigquery`` extra)."""
    parts = source[len("bq://") :].split(".")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(
            f"{what} {source} is not bq://project.dataset.table",
            hint="Name the table in full, e.g. bq://my-project.logs.nb2prod_predictions.",
        )
    try:
        import pandas_gbq
    except ImportError as err:
        raise MissingExtraError("bigquery", f"reading {source}", err) from err
    project = parts[0]
    query = f"SELECT * FROM `{'.'.join(parts)}`"  # noqa: S608 - a table name, not user data
    try:
        return pandas_gbq.read_gbq(query, project_id=project, progress_bar_type=None)
    except Exception as err:
        raise ConfigError(
            f"cannot read {source} from BigQuery ({err})",
            hint="Check the table name and your credentials (gcloud auth "
            "application-default login).",
        ) from err


def _bigquery_records(source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    frame = _bigquery_frame(source, "--predictions")
    for number, entry in enumerate(frame.to_dict("records"), start=1):
        record = _as_record(_plain_python(entry))
        if record is not None:
            yield f"{source}, row {number}", record


def _plain_python(value: Any) -> Any:
    """numpy arrays and scalars (as pandas-gbq returns nested columns) as lists and numbers."""
    if isinstance(value, dict):
        return {key: _plain_python(item) for key, item in value.items()}
    if hasattr(value, "tolist"):
        return _plain_python(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain_python(item) for item in value]
    return value


# --- reading labels --------------------------------------------------------------------------


def load_labels(source: str, key: str) -> pd.DataFrame:
    """The ``key`` column (and ``row`` with key request_id, when present) and ``label`` of the
    ground truth at ``source``; rows without a label are left out."""
    frame = _label_frame(source)
    missing = [name for name in (key, LABEL_COLUMN) if name not in frame.columns]
    if missing:
        raise ConfigError(
            f"labels {source} have no {' or '.join(repr(name) for name in missing)} column "
            f"(columns: {', '.join(map(str, frame.columns[:12]))})",
            hint=f"A labels file has the key column ({key!r}, set by --key) and a 'label' "
            "column with the true value; with --key request_id, an optional 'row' column "
            "names the row within a multi-row request.",
        )
    columns = [key, LABEL_COLUMN]
    if key == REQUEST_KEY and ROW_COLUMN in frame.columns:
        columns.insert(1, ROW_COLUMN)
    labels = frame[columns].dropna(subset=[key, LABEL_COLUMN]).reset_index(drop=True)
    if ROW_COLUMN in labels.columns:
        try:
            labels[ROW_COLUMN] = labels[ROW_COLUMN].astype("int64")
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"labels {source}: the 'row' column is not whole numbers ({err})",
                hint="'row' is the 0-based index of the row within its request.",
            ) from err
    return labels


def _label_frame(source: str) -> pd.DataFrame:
    if source.startswith("bq://"):
        return _bigquery_frame(source, "--labels")
    fs, path = _filesystem(source)
    if not fs.exists(path) or fs.isdir(path):
        raise ConfigError(
            f"--labels {source} is not a file",
            hint="Pass a CSV, Parquet or JSON Lines file (or gs://... or bq://...).",
        )
    lower = path.lower()
    try:
        with fs.open(path, "rb") as handle:
            if lower.endswith(_PARQUET_SUFFIXES):
                return pd.read_parquet(handle)
            if lower.endswith((".jsonl", ".ndjson")):
                return pd.read_json(handle, lines=True, dtype=False)
            # Keys stay text: "007" is a request id, not the number 7.
            return pd.read_csv(handle, dtype={REQUEST_KEY: str})
    except ImportError as err:
        raise MissingExtraError("batch", "reading Parquet labels", err) from err
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"cannot read labels {source} ({err})",
            hint="Labels are a CSV (with a header), Parquet or JSON Lines file.",
        ) from err
