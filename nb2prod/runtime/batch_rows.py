"""Batch rows: the service's request rules for a whole chunk, and scoring that isolates the rows
the model code refuses. Used by ``nb2prod batch`` (batch.py) and the Spark UDF (spark.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .loader import Predictor
from .schema import FrameBuilder

__all__ = ["Scored", "Validator", "bad_reason", "predict_isolating", "score_rows"]


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


@dataclass(frozen=True)
class Scored:
    """A frame's rows, scored: ``nb2prod batch`` writes them to files, the Spark UDF to columns."""

    rows: np.ndarray  # positions of the rows that scored, ascending
    predictions: list[Any]  # one per scored row, in the same order
    rejected: list[tuple[int, str]]  # (position, reason) of every other row, ascending
    #: The scored rows as the service's request frame (what the prediction log records).
    request: pd.DataFrame | None = None


def score_rows(predictor: Predictor, validator: Validator, frame: pd.DataFrame) -> Scored:
    """Validate ``frame`` (positional index) and predict its valid rows; the rest rejected."""
    request, ok, reasons = validator.check(frame)
    predictions, failed = predict_isolating(predictor, request)
    valid = np.flatnonzero(ok)
    rejected = [(int(i), r) for i, r in zip(np.flatnonzero(~ok), reasons, strict=True)]
    rejected += [(int(valid[position]), reason) for position, reason in failed.items()]
    scored = np.ones(len(valid), dtype=bool)
    scored[list(failed)] = False
    if failed:
        request = request[scored].reset_index(drop=True)
    return Scored(valid[scored], predictions, sorted(rejected), request)
