"""Request body parsing: the stepwise decoder is json.loads, both paths give the same rows, and
rows sent as lists in column order are objects by another name (parser and a real app)."""

from __future__ import annotations

import importlib.util
import json
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from fake_build import make_card, write_model_dir
from sklearn.linear_model import LogisticRegression

from nb2prod.runtime.app import create_app
from nb2prod.runtime.card import GoldenSet
from nb2prod.runtime.limits import Limits
from nb2prod.runtime.monitoring.feedback import (
    FeedbackError,
    FeedbackItem,
    LiveQuality,
    PredictionStore,
    known_classes,
)
from nb2prod.runtime.plan import Bindings, FunctionStep, ServingPlan
from nb2prod.runtime.request_body import BodyError, PredictBodyParser, decode_json_in_steps
from nb2prod.runtime.schema import infer_schema, to_jsonable

with warnings.catch_warnings():
    # starlette >= 1.10 asks for httpx2 when its TestClient runs on httpx; both work the same.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

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


# --- rows as lists, in schema column order ---------------------------------------------------

COLUMNS = ["x", "n", "city"]
Parse = Callable[[bytes], list[list[Any]]]


def both_paths(parser: PredictBodyParser) -> list[Parse]:
    return [parser.parse_small, parser.parse_large]


def refused(parse: Parse, payload: Any, status: int = 422) -> list[dict[str, Any]]:
    """The error list (or 413 text) a body gets; fails unless it is refused with ``status``."""
    with pytest.raises(BodyError) as caught:
        parse(json.dumps(payload).encode())
    assert caught.value.status == status, caught.value.detail
    detail: list[dict[str, Any]] = caught.value.detail
    return detail


def test_list_rows_give_the_rows_object_rows_give_on_both_paths() -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    objects = [{"x": i / 4, "n": i, "city": [None, "a", "b"][i % 3]} for i in range(600)]
    lists = [[row["x"], row["n"], row["city"]] for row in objects]
    expected = [[i / 4, i, [None, "a", "b"][i % 3]] for i in range(600)]
    for parse in both_paths(parser):
        assert parse(body(objects)) == expected
        assert parse(json.dumps({"instances": lists}).encode()) == expected
        # Types as for objects: an int where a number goes is a float, the row a list.
        one = parse(b'{"instances": [[1, 2, "b"]]}')
        assert one == [[1.0, 2, "b"]] and type(one[0][0]) is float and type(one[0]) is list


def test_pretty_printed_and_padded_list_bodies_are_lists() -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    text = json.dumps({"params": {"k": 1}, "instances": [[0.5, 1, "a"], [1.5, 2, None]]}, indent=4)
    for parse in both_paths(parser):
        assert parse(text.encode()) == [[0.5, 1, "a"], [1.5, 2, None]]


@pytest.mark.parametrize("row", [[1.5, 2], [1.5, 2, "a", "extra"], [], ["a", 2]])
def test_a_list_row_of_the_wrong_length_names_row_count_and_columns(row: list[Any]) -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    rows = [[0.5, 1, "a"]] * 3 + [row]
    for parse in both_paths(parser):
        errors = refused(parse, {"instances": rows})
        # One error for the row, however many values are missing; its values are not judged.
        assert len(errors) == 1, errors
        assert errors[0]["loc"] == ["body", "instances", 3]
        message = errors[0]["msg"]
        assert "row 3" in message and f"{len(row)} values" in message
        assert "exactly 3" in message and '["x", "n", "city"]' in message


@pytest.mark.parametrize(
    ("position", "value"),
    [(0, "wide"), (0, True), (0, None), (1, 2.5), (1, None), (2, 7.0), (2, ["a"])],
)
def test_a_bad_list_value_names_its_column(position: int, value: Any) -> None:
    """The same value in an object row fails the same way, at the same place."""
    parser = PredictBodyParser(SCHEMA, Limits())
    good = [1.0, 1, "a"]
    lists = [good] * 400
    lists[300] = [*good[:position], value, *good[position + 1 :]]  # past the first chunk
    objects = [dict(zip(COLUMNS, row, strict=True)) for row in lists]
    for parse in both_paths(parser):
        errors = refused(parse, {"instances": lists})
        assert errors[0]["loc"] == ["body", "instances", 300, COLUMNS[position]]
        as_objects = refused(parse, {"instances": objects})
        assert [(e["loc"], e["type"], e["msg"]) for e in errors] == [
            (e["loc"], e["type"], e["msg"]) for e in as_objects
        ]


def test_null_only_where_the_column_is_nullable() -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    for parse in both_paths(parser):
        assert parse(b'{"instances": [[1.0, 1, null]]}') == [[1.0, 1, None]]
        errors = refused(parse, {"instances": [[1.0, None, None]]})
        assert [error["loc"] for error in errors] == [["body", "instances", 0, "n"]]


def test_too_many_list_rows_is_413_on_both_paths() -> None:
    parser = PredictBodyParser(SCHEMA, Limits(max_rows=5))
    for parse in both_paths(parser):
        assert "at most 5 rows" in str(refused(parse, {"instances": [[1.0, 1, "a"]] * 6}, 413))
        assert len(parse(json.dumps({"instances": [[1.0, 1, "a"]] * 5}).encode())) == 5


def test_a_list_row_longer_than_the_row_limit_is_a_length_error_not_413() -> None:
    parser = PredictBodyParser(SCHEMA, Limits(max_rows=2))
    for parse in both_paths(parser):
        errors = refused(parse, {"instances": [list(range(10))]})
        assert errors[0]["type"] == "too_long"


@pytest.mark.parametrize("lists_first", [True, False])
def test_mixed_row_forms_are_refused_naming_the_row(lists_first: bool) -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    as_list, as_object = [1.0, 1, "a"], {"x": 1.0, "n": 1, "city": "a"}
    first, other = (as_list, as_object) if lists_first else (as_object, as_list)
    rows = [first] * 5 + [other] + [first] * 400
    for parse in both_paths(parser):
        errors = refused(parse, {"instances": rows})
        assert errors[0]["loc"] == ["body", "instances", 5]
        assert "one form" in errors[0]["msg"] and "row 5" in errors[0]["msg"]


def test_a_row_that_is_neither_is_refused_in_the_batch_form() -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    for parse in both_paths(parser):
        errors = refused(parse, {"instances": [[1.0, 1, "a"], 7]})
        assert errors[0]["loc"] == ["body", "instances", 1]
        assert errors[0]["msg"] == "Input should be a list of 3 values in column order"


def test_dataframe_records_stay_objects() -> None:
    parser = PredictBodyParser(SCHEMA, Limits())
    for parse in both_paths(parser):
        errors = refused(parse, {"dataframe_records": [[1.0, 1, "a"]]})
        assert errors[0]["loc"] == ["body", "dataframe_records", 0]
        assert "'instances'" in errors[0]["msg"]  # says where list rows go
        errors = refused(parse, {"instances": [[1.0, 1, "a"]], "dataframe_records": []})
        assert "exactly one" in errors[0]["msg"]


def test_a_nested_instances_key_does_not_decide_the_row_form() -> None:
    """The small path guesses the form from the first "instances" in the text: a wrong guess
    must cost only speed."""
    parser = PredictBodyParser(SCHEMA, Limits())
    decoy = {"meta": {"instances": [[1]]}}
    for parse in both_paths(parser):
        objects = {**decoy, "instances": [{"x": 2.0, "n": 1, "city": "b"}]}
        assert parse(json.dumps(objects).encode()) == [[2.0, 1, "b"]]
        split = {**decoy, "dataframe_split": {"columns": COLUMNS, "data": [[2.0, 1, "b"]]}}
        assert parse(json.dumps(split).encode()) == [[2.0, 1, "b"]]
        # "\u0069nstances" is "instances" in JSON, but not in the bytes the guess looks at.
        escaped = b'{"\\u0069nstances": [[2.0, 1, "b"]]}'
        assert parse(escaped) == [[2.0, 1, "b"]]


def test_list_rows_are_decoded_whole_and_not_counted_as_rows() -> None:
    text = '{"instances": [[1, 2, 3, 4, 5], [6]], "dataframe_split": {"data": [[1], [2]]}}'
    assert decode_json_in_steps(text, max_items=2) == json.loads(text)
    with pytest.raises(BodyError) as caught:
        decode_json_in_steps('{"dataframe_split": {"data": [[1], [2], [3]]}}', max_items=2)
    assert caught.value.status == 413


# --- list rows through a real app: a model over every column kind --------------------------------

MIXED_CODE = """
import numpy as np


def preprocess(df):
    return np.column_stack(
        [
            df["width"],
            df["count"],
            df["ratio"].fillna(-1.0),
            df["grade"].cat.codes,
            (df["site / region"] == "north").astype(float),
            df["flag"].astype(float),
            df["when"].dt.day_of_year,
        ]
    )


def predict(model, features):
    return model.predict(features)
"""


def mixed_frame() -> pd.DataFrame:
    """Every column kind; ``ratio`` has gaps (nullable), the others none."""
    rng = np.random.default_rng(7)
    size = 120
    frame = pd.DataFrame(
        {
            "width": rng.normal(5.0, 2.0, size),
            "count": rng.integers(0, 20, size),
            "ratio": np.where(np.arange(size) % 9 == 0, np.nan, rng.uniform(0, 1, size)),
            "grade": pd.Categorical(
                rng.choice(["low", "mid", "high"], size),
                categories=["low", "mid", "high"],
                ordered=True,
            ),
            "site / region": rng.choice(["north", "south", "east"], size).astype(object),
            "flag": rng.integers(0, 2, size).astype(bool),
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, size), "D"),
        }
    )
    frame["target"] = np.where(frame["width"] + frame["count"] / 4 > 7.5, "big", "small")
    return frame


@pytest.fixture(scope="module")
def mixed_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, list[str]]:
    """A model dir whose model reads all columns; the frame and the model's own predictions."""
    root = tmp_path_factory.mktemp("mixed_build")
    frame = mixed_frame()
    namespace: dict[str, Any] = {}
    exec(MIXED_CODE, namespace)  # noqa: S102 - the notebook's own code, to fit the model
    features = namespace["preprocess"](frame)
    model = LogisticRegression(max_iter=2000).fit(features, frame["target"])
    predicted = [str(label) for label in model.predict(features)]
    (root / "model").mkdir()
    with (root / "model" / "state.pkl").open("wb") as handle:
        cloudpickle.dump({"model": model}, handle)
    (root / "model_code.py").write_text(MIXED_CODE)
    serving = ServingPlan(
        preprocess=FunctionStep(cells=(1,), params=("df",)),
        predict=FunctionStep(cells=(2,), params=("model", "features")),
        bindings=Bindings(
            features="features", predict_args=(("model", "model"),), state=("model",)
        ),
    )
    card = make_card(input_schema=infer_schema(frame, ["target"]), serving=serving)
    rows = to_jsonable(frame.drop(columns="target").iloc[:5])
    write_model_dir(root, card, GoldenSet(rows=rows, predictions=predicted[:5]))
    return root, frame, predicted


def mixed_app(root: Path) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"mixed_{uuid.uuid4().hex}", root / "model_code.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return create_app(root / "model", module)


@pytest.fixture(params=["small", "large"])
def mixed_client(
    request: pytest.FixtureRequest,
    mixed_build: tuple[Path, pd.DataFrame, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    """The app on ``mixed_build``, parsing bodies on the small or (every body) the large path."""
    if request.param == "large":
        monkeypatch.setenv("NB2PROD_OFFLOAD_BYTES", "1")
    monkeypatch.setenv("NB2PROD_MAX_ROWS", "50")
    with TestClient(mixed_app(mixed_build[0])) as client:
        yield client


def test_list_rows_predict_as_object_rows_through_the_app(
    mixed_client: TestClient, mixed_build: tuple[Path, pd.DataFrame, list[str]]
) -> None:
    _, frame, predicted = mixed_build
    objects = to_jsonable(frame.drop(columns="target").iloc[:40])
    assert any(row["ratio"] is None for row in objects)  # a null in the nullable column
    names = [
        column["name"] for column in mixed_client.get("/metadata").json()["input_schema"]["columns"]
    ]
    lists = [[row[name] for name in names] for row in objects]
    frames: list[pd.DataFrame] = []
    hooks = mixed_client.app.state.after_predict  # type: ignore[attr-defined]
    hooks.append(lambda raw, predictions, request_id: frames.append(raw))
    by_objects = mixed_client.post("/predict", json={"instances": objects})
    by_lists = mixed_client.post("/predict", json={"instances": lists})
    assert by_objects.status_code == by_lists.status_code == 200, by_lists.text
    assert by_lists.json() == by_objects.json()
    assert by_lists.json()["predictions"] == predicted[:40]
    pd.testing.assert_frame_equal(frames[1], frames[0])  # same values, same training dtypes
    assert str(frames[1]["grade"].dtype) == "category" and frames[1]["when"].dtype.kind == "M"


def test_list_row_errors_through_the_app(
    mixed_client: TestClient, mixed_build: tuple[Path, pd.DataFrame, list[str]]
) -> None:
    _, frame, _ = mixed_build
    names = list(frame.columns.drop("target"))
    row = [to_jsonable(value) for value in frame[names].iloc[0]]

    def errors(rows: list[Any], status: int = 422) -> Any:
        response = mixed_client.post("/predict", json={"instances": rows})
        assert response.status_code == status, response.text
        return response.json()["detail"]

    null_width = [None, *row[1:]]
    assert errors([row, null_width])[0]["loc"] == ["body", "instances", 1, "width"]
    bad_level = [*row[:3], "huge", *row[4:]]
    assert errors([bad_level])[0]["loc"] == ["body", "instances", 0, "grade"]
    short = errors([row, row[:-1]])[0]
    assert short["loc"] == ["body", "instances", 1]
    assert json.dumps(names) in short["msg"] and "exactly 7" in short["msg"]
    assert "rows" in errors([row] * 51, 413)
    object_row = dict(zip(names, row, strict=True))
    assert errors([row, object_row])[0]["loc"] == ["body", "instances", 1]


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
