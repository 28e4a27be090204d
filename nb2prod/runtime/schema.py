"""The input schema of a model: inferred from the training frame, used to rebuild request frames.

Training calls :func:`infer_schema` on the raw input frame and stores the result in the model card.
Serving turns JSON rows back into a frame with the same column order and dtypes
(:class:`FrameBuilder`, on the hot path) and turns predictions into plain JSON
(:func:`predictions_to_list`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MAX_STRING_LEVELS",
    "FrameBuilder",
    "frame_from_records",
    "infer_schema",
    "predictions_to_list",
    "to_jsonable",
]

#: String columns with at most this many distinct training values record them as ``levels``.
MAX_STRING_LEVELS = 50

_OBJECT_KINDS = {
    "boolean": "boolean",
    "integer": "integer",
    "floating": "number",
    "mixed-integer-float": "number",
    "decimal": "number",
    "datetime": "datetime",
    "datetime64": "datetime",
    "date": "datetime",
}


def _column_kind(series: pd.Series) -> str:
    """Map a column's dtype to one of the schema kinds."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_object_dtype(dtype):
        # Object columns hold whatever the notebook put there: look at the values.
        return _OBJECT_KINDS.get(pd.api.types.infer_dtype(series, skipna=True), "string")
    return "string"


#: A text value is shown as an example only when at least this many training rows share it.
_EXAMPLE_MIN_COUNT = 5


def _example(series: pd.Series, kind: str) -> Any:
    """An example value for the OpenAPI docs, as JSON, that is no training row's own value.

    ``/docs`` is public: one record from the training data (a patient, a customer) must
    not be shown there. Numbers get the median; text the most frequent value when many
    rows share it (a level, not a person), else a placeholder.
    """
    non_null = series.dropna()
    if not len(non_null):
        return None
    if kind in ("number", "integer", "datetime"):
        median = non_null.sort_values().iloc[len(non_null) // 2]
        return to_jsonable(median)
    if kind == "category":
        return str(series.cat.categories[0])
    counts = non_null.astype(str).value_counts()
    if kind == "boolean" or counts.iloc[0] >= _EXAMPLE_MIN_COUNT:
        return to_jsonable(non_null[non_null.astype(str) == counts.index[0]].iloc[0])
    return "text"


def infer_schema(frame: pd.DataFrame, ignored: list[str]) -> dict[str, Any]:
    """Describe the raw training input: the card's ``input_schema``.

    Columns in ``ignored`` (the target, ids) are left out of the schema but recorded, because
    serving code may still refer to them; serving fills them with missing values.
    """
    columns: list[dict[str, Any]] = []
    for name in frame.columns:
        if name in ignored:
            continue
        series = frame[name]
        kind = _column_kind(series)
        levels: list[str] | None = None
        column: dict[str, Any] = {"name": str(name), "dtype": str(series.dtype), "kind": kind}
        if kind == "category":
            # Training order, not sorted: category codes (and ordered comparisons) depend on it.
            levels = [str(level) for level in series.cat.categories]
            column["ordered"] = bool(series.cat.ordered)
        elif kind == "string":
            distinct = series.dropna().unique()
            if len(distinct) <= MAX_STRING_LEVELS:
                levels = sorted(str(value) for value in distinct)
        column["nullable"] = bool(series.isna().any())
        column["levels"] = levels
        column["example"] = _example(series, kind)
        columns.append(column)
    return {"columns": columns, "ignored_columns": [str(name) for name in ignored]}


# --- request rows -> frame -------------------------------------------------------------------

Converter = Callable[[Sequence[Any]], Any]


def _object_array(values: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _numeric_converter(dtype: str, kind: str) -> Converter:
    np_dtype = np.dtype(dtype)

    def convert(values: Sequence[Any]) -> Any:
        if kind == "number" or None not in values:
            return np.asarray(values, dtype=np_dtype)
        # An integer column with a missing value is float64, as pandas would make it.
        return np.asarray(values, dtype=np.float64)

    return convert


def _boolean_converter(dtype: str) -> Converter:
    def convert(values: Sequence[Any]) -> Any:
        if None in values:
            return pd.Series(_object_array(values), dtype=object)
        return np.asarray(values, dtype=np.dtype(dtype))

    return convert


def _category_converter(column: Mapping[str, Any]) -> Converter:
    levels = list(column.get("levels") or [])
    cat_dtype = pd.CategoricalDtype(levels, ordered=bool(column.get("ordered", False)))
    codes = {level: code for code, level in enumerate(levels)}

    def convert(values: Sequence[Any]) -> Any:
        # from_codes is several times faster than Categorical(values, categories=...).
        found = [codes.get(v if isinstance(v, str) or v is None else str(v), -1) for v in values]
        return pd.Categorical.from_codes(found, dtype=cat_dtype)

    return convert


def _datetime_converter(dtype: str) -> Converter:
    target = pd.api.types.pandas_dtype(dtype)
    tz = getattr(target, "tz", None)

    def convert(values: Sequence[Any]) -> Any:
        if tz is None and all(
            value is None or (isinstance(value, dt.datetime) and value.tzinfo is None)
            for value in values
        ):
            # Validated requests carry naive datetimes: numpy converts them ~100x faster.
            return np.array(values, dtype=target)
        try:
            stamps = pd.to_datetime(list(values), utc=True, format="ISO8601")
        except ValueError:
            stamps = pd.to_datetime(list(values), utc=True)
        stamps = stamps.tz_convert(tz) if tz is not None else stamps.tz_localize(None)
        return stamps.astype(target) if stamps.dtype != target else stamps

    return convert


def _extension_converter(dtype: str) -> Converter:
    def convert(values: Sequence[Any]) -> Any:
        return pd.array(list(values), dtype=dtype)

    return convert


def _object_converter(values: Sequence[Any]) -> Any:
    # A bare object ndarray of strings would be re-inferred as "str" by pandas 3.
    return pd.Series(_object_array(values), dtype=object)


def _converter(column: Mapping[str, Any]) -> Converter:
    """Pick the function that turns one column's JSON values into its training dtype."""
    kind, dtype = column["kind"], column["dtype"]
    if kind == "category":
        return _category_converter(column)
    if dtype == "object":
        return _object_converter
    if kind == "datetime":
        return _datetime_converter(dtype)
    if kind in ("number", "integer", "boolean"):
        try:
            np.dtype(dtype)
        except TypeError:  # pandas extension dtypes: Int64, Float64, boolean
            return _extension_converter(dtype)
        return _boolean_converter(dtype) if kind == "boolean" else _numeric_converter(dtype, kind)
    return _extension_converter(dtype)  # str / string


class FrameBuilder:
    """Turns JSON rows into a frame with the schema's column order and training dtypes.

    Built once per schema; calls are on the request hot path. When every column is float64,
    the frame is made from one 2-D array (a single pandas block), several times faster than
    a column dict for small batches.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        columns = list(schema["columns"])
        self.names: list[str] = [column["name"] for column in columns]
        self.ignored: list[str] = list(schema.get("ignored_columns") or [])
        self._index = pd.Index(self.names + self.ignored)
        self._converters = [_converter(column) for column in columns]
        self._all_float = bool(columns) and all(
            column["dtype"] == "float64" and column["kind"] == "number" for column in columns
        )

    def from_rows(self, rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
        """Build the frame from rows of values in schema column order (missing = ``None``)."""
        n_rows = len(rows)
        if self._all_float:
            array = np.full((n_rows, len(self._index)), np.nan)
            if n_rows:
                array[:, : len(self.names)] = rows
            return pd.DataFrame(array, columns=self._index, copy=False)
        columns = list(zip(*rows, strict=True)) if n_rows else [() for _ in self.names]
        data: dict[str, Any] = {
            name: convert(values)
            for name, convert, values in zip(self.names, self._converters, columns, strict=True)
        }
        for name in self.ignored:
            data[name] = np.full(n_rows, np.nan)
        return pd.DataFrame(data, columns=self._index, copy=False)

    def from_columns(self, columns: Mapping[str, Any], n_rows: int) -> pd.DataFrame:
        """:meth:`from_rows` from validated values column by column (batch scoring): numbers
        as float arrays (NaN: missing), other values as object arrays (None: missing)."""
        if self._all_float:
            array = np.full((n_rows, len(self._index)), np.nan)
            for position, name in enumerate(self.names):
                array[:, position] = columns[name]
            return pd.DataFrame(array, columns=self._index, copy=False)
        data: dict[str, Any] = {
            name: convert(columns[name])
            for name, convert in zip(self.names, self._converters, strict=True)
        }
        for name in self.ignored:
            data[name] = np.full(n_rows, np.nan)
        return pd.DataFrame(data, columns=self._index, copy=False)

    def from_records(self, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """Build the frame from ``{column: value}`` records; absent columns become missing."""
        names = self.names
        return self.from_rows([[record.get(name) for name in names] for record in records])


def frame_from_records(records: list[dict[str, Any]], schema: Mapping[str, Any]) -> pd.DataFrame:
    """Turn JSON records into a frame shaped like the training input (see :class:`FrameBuilder`).

    For repeated calls build a :class:`FrameBuilder` once instead.
    """
    return FrameBuilder(schema).from_records(records)


# --- values -> JSON -----------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Turn numpy/pandas values (recursively) into plain JSON; NaN, NA and NaT become None."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.timedelta64):
        return None if np.isnat(value) else pd.Timedelta(value).total_seconds()
    if isinstance(value, np.generic):  # before float/int: np.float64 subclasses float
        return to_jsonable(value.item())
    if isinstance(value, float):
        return to_jsonable(float(value))
    if isinstance(value, (bool, int)):
        return int(value) if not isinstance(value, bool) else bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()  # pandas Timestamp is a datetime
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, np.ndarray):
        return _array_to_list(value)
    if isinstance(value, pd.DataFrame):
        return [
            {str(key): to_jsonable(item) for key, item in row.items()}
            for row in value.to_dict(orient="records")
        ]
    if isinstance(value, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in value]
    if hasattr(value, "__float__"):  # Decimal, fractions
        return to_jsonable(float(value))
    return str(value)


def _array_to_list(array: np.ndarray) -> list[Any]:
    """ndarray -> nested lists of plain values; the common numeric case is one ``tolist()``."""
    if array.ndim == 0:
        return [to_jsonable(array[()])]
    kind = array.dtype.kind
    if kind in "iubU" or (kind == "f" and np.isfinite(array).all()):
        plain: list[Any] = array.tolist()
        return plain
    if kind == "f":
        return [to_jsonable(item) for item in array.tolist()]
    # Objects, datetimes, timedeltas: convert element by element (tolist() would give ns ints).
    return [to_jsonable(item) for item in array]


def predictions_to_list(pred: Any) -> list[Any]:
    """Turn whatever the notebook's predict code returned into a JSON-ready list.

    ndarray and Series give one value per row, a 2-D array or a DataFrame gives one list per
    row, a scalar gives a one-item list. Strings stay strings.
    """
    if isinstance(pred, np.ndarray):
        return _array_to_list(pred)
    if isinstance(pred, pd.DataFrame):
        return _array_to_list(pred.to_numpy())
    if isinstance(pred, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        return _array_to_list(np.asarray(pred.to_numpy()))
    if isinstance(pred, (list, tuple)):
        return [to_jsonable(item) for item in pred]
    return [to_jsonable(pred)]
