"""The runtime's schema helpers: inference, request rows -> frame, predictions -> JSON."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nb2prod.runtime.schema import (
    FrameBuilder,
    frame_from_records,
    infer_schema,
    predictions_to_list,
    to_jsonable,
)


@pytest.fixture
def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "city / zone": ["paris", "lyon", None],
            "count": [1, 2, 3],
            "ratio": [0.5, None, 1.5],
            "size": pd.Categorical(["s", "l", "s"], categories=["s", "m", "l"], ordered=True),
            "when": pd.to_datetime(["2024-01-01", "2024-02-01", None]),
            "flag": [True, False, True],
            "maybe": pd.array([1, None, 3], dtype="Int64"),
            "raw": pd.Series(["a", None, "b"], dtype=object),
            "target": [0, 1, 0],
        }
    )


def column(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in schema["columns"] if c["name"] == name)


def test_infer_schema_kinds_levels_and_examples(mixed_frame: pd.DataFrame) -> None:
    schema = infer_schema(mixed_frame, ["target"])
    json.dumps(schema)  # JSON-ready
    assert [c["name"] for c in schema["columns"]] == list(mixed_frame.columns[:-1])
    assert schema["ignored_columns"] == ["target"]
    kinds = {c["name"]: c["kind"] for c in schema["columns"]}
    assert kinds == {
        "city / zone": "string",
        "count": "integer",
        "ratio": "number",
        "size": "category",
        "when": "datetime",
        "flag": "boolean",
        "maybe": "integer",
        "raw": "string",
    }
    assert column(schema, "city / zone")["levels"] == ["lyon", "paris"]
    assert column(schema, "city / zone")["nullable"] is True
    assert column(schema, "count")["nullable"] is False
    assert column(schema, "count")["levels"] is None
    assert column(schema, "size")["levels"] == ["s", "m", "l"]  # category order kept
    # Examples are served at /docs: a median or a shared level, never one row's own value.
    assert column(schema, "when")["example"] == "2024-02-01T00:00:00"  # upper median of two
    assert column(schema, "ratio")["example"] == 1.5
    assert column(schema, "count")["example"] == 2
    assert column(schema, "flag")["example"] is True  # the most frequent value
    assert column(schema, "size")["example"] == "s"  # the first category
    assert column(schema, "city / zone")["example"] == "text"  # no value shared by 5 rows


def test_a_text_example_is_a_value_many_rows_share() -> None:
    frame = pd.DataFrame({"plan": ["basic"] * 6 + ["pro"] * 2 + ["Ada Lovelace"]})
    assert infer_schema(frame, [])["columns"][0]["example"] == "basic"


def test_many_distinct_strings_have_no_levels() -> None:
    frame = pd.DataFrame({"id": [f"user-{i}" for i in range(51)]})
    assert infer_schema(frame, [])["columns"][0]["levels"] is None


def test_frame_from_records_round_trips_dtypes(mixed_frame: pd.DataFrame) -> None:
    schema = infer_schema(mixed_frame, ["target"])
    records = to_jsonable(mixed_frame.drop(columns="target"))
    frame = frame_from_records(records, schema)
    assert list(frame.columns) == list(mixed_frame.columns)
    for name in mixed_frame.columns.drop("target"):
        assert frame[name].dtype == mixed_frame[name].dtype, name
    pd.testing.assert_frame_equal(frame.drop(columns="target"), mixed_frame.drop(columns="target"))
    assert frame["target"].isna().all()


def test_frame_from_records_missing_values() -> None:
    schema = infer_schema(pd.DataFrame({"n": [1, 2], "b": [True, False]}), [])
    frame = frame_from_records([{"n": 1, "b": True}, {"n": None}], schema)
    assert frame["n"].dtype == np.float64  # an integer column with a gap is float, as in pandas
    assert np.isnan(frame["n"].iloc[1])
    assert frame["b"].iloc[1] is None


def test_all_float_fast_path_fills_ignored_columns() -> None:
    schema = infer_schema(pd.DataFrame({"a b": [1.0], "c/d": [2.0], "y": [0]}), ["y"])
    builder = FrameBuilder(schema)
    frame = builder.from_rows([[1.5, None], [2.5, 3.5]])
    assert list(frame.columns) == ["a b", "c/d", "y"]
    assert frame.dtypes.tolist() == [np.float64] * 3
    assert frame["a b"].tolist() == [1.5, 2.5]
    assert np.isnan(frame.loc[0, "c/d"]) and frame["y"].isna().all()
    assert builder.from_rows([]).shape == (0, 3)


def test_unknown_category_level_is_missing() -> None:
    schema = infer_schema(pd.DataFrame({"c": pd.Categorical(["x", "y"])}), [])
    frame = frame_from_records([{"c": "z"}, {"c": "x"}], schema)
    assert frame["c"].isna().tolist() == [True, False]


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        (np.array([0, 1]), [0, 1]),
        (np.array(["setosa", "virginica"], dtype=object), ["setosa", "virginica"]),
        (np.array(["a", "b"]), ["a", "b"]),
        (np.array([[0.25, 0.75]]), [[0.25, 0.75]]),
        (np.array([1.5, np.nan]), [1.5, None]),
        (pd.Series([True, False]), [True, False]),
        (pd.Series(["x", None], dtype="str"), ["x", None]),
        (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), [[1, "x"], [2, "y"]]),
        ([np.int64(3), np.float32(0.5)], [3, 0.5]),
        ((1, 2), [1, 2]),
        (np.float64(2.5), [2.5]),
        ("label", ["label"]),
        (pd.Series(pd.to_datetime(["2024-01-01", None])), ["2024-01-01T00:00:00", None]),
    ],
)
def test_predictions_to_list(pred: Any, expected: list[Any]) -> None:
    result = predictions_to_list(pred)
    assert result == expected
    json.dumps(result, allow_nan=False)
    assert all(type(item) in (int, float, str, bool, list, type(None)) for item in result)


def test_to_jsonable_recurses() -> None:
    value = {
        "n": np.int32(4),
        "f": [np.nan, np.float32(1.5), float("inf")],
        "t": pd.Timestamp("2024-05-01 12:00"),
        "na": pd.NA,
        "nat": pd.NaT,
        "s": pd.Series([1, 2]),
        "a": np.array([[1, 2]]),
        5: "int key",
    }
    assert to_jsonable(value) == {
        "n": 4,
        "f": [None, 1.5, None],
        "t": "2024-05-01T12:00:00",
        "na": None,
        "nat": None,
        "s": [1, 2],
        "a": [[1, 2]],
        "5": "int key",
    }
