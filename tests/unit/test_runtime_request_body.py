"""Request body parsing: the stepwise decoder is json.loads, and both paths give the same rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nb2prod.runtime.limits import Limits
from nb2prod.runtime.monitoring.feedback import (
    FeedbackError,
    FeedbackItem,
    LiveQuality,
    PredictionStore,
    known_classes,
)
from nb2prod.runtime.request_body import BodyError, PredictBodyParser, decode_json_in_steps

SCHEMA = {
    "columns": [
        {"name": "x", "dtype": "float64", "kind": "number", "nullable": False, "example": 1.5},
        {"name": "n", "dtype": "int64", "kind": "integer", "nullable": False, "example": 2},
        {
            "name": "city",
            "dtype": "object",
            "kind": "string",
            "nullable": True,
            "levels": ["a", "b"],
            "example": "a",
        },
    ],
    "ignored_columns": [],
}

DOCUMENTS = [
    "{}",
    "[]",
    " 3 ",
    '"text \\u00e9 \\" quote"',
    '{"instances": [{"x": 1.5, "n": 2, "city": null}, {"x": -1e3, "n": 0, "city": "b"}]}',
    '{"dataframe_split": {"columns": ["x", "n"], "data": [[1, 2], [3, 4]], "index": [0, 1]}}',
    '{ "a" : [ [ [1, 2], {"b": [true, false, null]} ] , "c" ] , "d": {"e": {"f": []}} }',
    '{"dup": 1, "dup": 2}',
    "[NaN, Infinity, -Infinity, 1E400]",
    '{"emoji": "\\ud83d\\ude00", "nested": [[[[[[1]]]]]]}',
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_decoding_in_steps_equals_json_loads(text: str) -> None:
    assert json.dumps(decode_json_in_steps(text)) == json.dumps(json.loads(text))


@pytest.mark.parametrize(
    "text", ['{"a": 1,}', "[1 2]", '{"a" 1}', "{1: 2}", "[1] x", "", '{"a": [1, 2}', "[" * 10]
)
def test_bad_json_is_a_value_error_as_in_json_loads(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        decode_json_in_steps(text)


def test_too_deep_json_is_a_recursion_error() -> None:
    with pytest.raises(RecursionError):
        decode_json_in_steps('{"instances": [' + "[" * 100_000)


def test_an_outer_array_over_max_items_is_413_before_the_rest_is_decoded() -> None:
    text = '{"instances": [' + ", ".join(["{}"] * 11) + ', "never reached'
    with pytest.raises(BodyError) as caught:
        decode_json_in_steps(text, max_items=10)
    assert caught.value.status == 413


def body(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"instances": rows}).encode()


def test_both_paths_give_the_same_rows() -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    rows = [{"x": float(i), "n": i, "city": "ab"[i % 2]} for i in range(600)]
    expected = [[float(i), i, "ab"[i % 2]] for i in range(600)]
    assert parser.parse_small(body(rows)) == expected
    assert parser.parse_large(body(rows)) == expected


def test_large_path_errors_name_the_row_across_chunks() -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    rows = [{"x": 1.0, "n": 1, "city": "a"} for _ in range(600)]
    rows[300]["x"] = True  # a boolean is not a number
    for parse in (parser.parse_small, parser.parse_large):
        with pytest.raises(BodyError) as caught:
            parse(body(rows))
        assert caught.value.status == 422
        assert caught.value.detail[0]["loc"] == ["body", "instances", 300, "x"]


def test_row_limit_on_both_paths() -> None:
    parser = PredictBodyParser(SCHEMA, Limits(max_rows=5))
    rows = [{"x": 1.0, "n": 1, "city": "a"}] * 6
    for parse in (parser.parse_small, parser.parse_large):
        with pytest.raises(BodyError) as caught:
            parse(body(rows))
        assert caught.value.status == 413


@pytest.mark.parametrize("value", ["", "0", "-3", "4MB", "1.5"])
def test_limits_refuse_values_that_are_not_positive_integers(value: str) -> None:
    if value == "":
        assert Limits.from_env({"NB2PROD_MAX_ROWS": value}).max_rows == Limits().max_rows
        return
    with pytest.raises(ValueError, match="NB2PROD_MAX_ROWS"):
        Limits.from_env({"NB2PROD_MAX_ROWS": value})


# --- feedback validation (monitoring/feedback.py) ----------------------------------------------


def test_known_classes_only_from_a_complete_categorical_profile() -> None:
    profile = {"kind": "categorical", "levels": ["cat", "dog"], "counts": [5, 7], "other": 0}
    assert known_classes(profile) == ["cat", "dog"]
    assert known_classes({**profile, "other": 3}) is None  # some levels were bucketed
    assert known_classes({"kind": "numeric"}) is None


@pytest.mark.parametrize("label", [{"a": 1}, float("nan"), "zzz", None, [1]])
def test_labels_the_model_cannot_produce_are_refused(label: Any) -> None:
    quality = LiveQuality("label", 10, ["cat", "dog"])
    with pytest.raises(FeedbackError) as caught:
        quality.check_labels([label])
    assert caught.value.status == 422
    if label == "zzz":
        assert "cat" in str(caught.value) and "dog" in str(caught.value)
    quality.check_labels(["dog"])  # a known class passes


def test_a_reused_request_id_is_409_and_both_predictions_stay_unjoined() -> None:
    store = PredictionStore(max_rows=100)
    store.remember("r1", ["cat"])
    store.remember("r1", ["dog"])
    store.remember("r2", ["cat"])
    with pytest.raises(FeedbackError) as caught:
        store.take([FeedbackItem("r1", ["cat"])])
    assert caught.value.status == 409
    assert store.take([FeedbackItem("r2", ["cat"])]) == [(["cat"], ["cat"])]
