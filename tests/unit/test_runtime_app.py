"""The serving runtime end to end: a real iris model, a hand-written model dir, real HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import httpx
import numpy as np
import pandas as pd
import pytest
from fake_build import make_card, write_model_dir
from helpers import free_port
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from nb2prod.runtime.app import create_app
from nb2prod.runtime.card import GoldenSet
from nb2prod.runtime.loader import Predictor
from nb2prod.runtime.plan import Bindings, CellsStep, FunctionStep, NoStep, ServingPlan
from nb2prod.runtime.schema import infer_schema, to_jsonable

with warnings.catch_warnings():
    # starlette >= 1.10 asks for httpx2 when its TestClient runs on httpx; both work the same.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "nb2prod" / "runtime"
NUMERIC = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SITE = "site / region"  # a string column whose name has a space and a slash
GRADE = "grade"  # an ordered pandas category
GOLDEN_INDEX = [0, 1, 50, 51, 100, 101, 149]

FUNCTION_CODE = """
import numpy as np

NUMERIC = {numeric!r}
CATEGORICAL = {categorical!r}


def preprocess(df):
    encoded = encoder.transform(df[CATEGORICAL].astype(str))
    return np.hstack([scaler.transform(df[NUMERIC]), encoded])


def predict(model, features):
    return model.predict(features)
"""

SCRIPT_CODE = """
import numpy as np

NUMERIC = {numeric!r}
CATEGORICAL = {categorical!r}


def run_preprocess_cells(*, df, scaler, encoder):
    numeric = scaler.transform(df[NUMERIC])
    X = np.hstack([numeric, encoder.transform(df[CATEGORICAL].astype(str))])
    return {{"numeric": numeric, "X": X}}


def run_predict_cells(*, model, X):
    y_pred = model.predict(X)
    return y_pred
"""

PROBA_CODE = """
FEATURES = {numeric!r}


def predict(clf, features):
    return clf.predict_proba(features[FEATURES])
"""

SERVING_PY = """
from pathlib import Path

import model_code
from nb2prod_runtime.app import create_app

app = create_app(Path(__file__).resolve().parent / "model", model_code)
"""


@dataclass
class Build:
    """A hand-made build directory: model/ (card + state) and model_code.py."""

    root: Path
    card: dict[str, Any]
    golden: dict[str, Any]  # model/golden.json
    frame: pd.DataFrame  # raw training input, target included

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def model_code(self) -> ModuleType:
        name = f"model_code_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(name, self.root / "model_code.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def app(self, **kwargs: Any) -> Any:
        return create_app(self.model_dir, self.model_code(), **kwargs)

    @property
    def golden_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.golden["rows"]
        return rows


def iris_frame() -> tuple[pd.DataFrame, np.ndarray]:
    """Iris plus a string and a category column; labels are the species names (strings)."""
    iris = load_iris(as_frame=True)
    frame = iris.frame.copy()
    position = np.arange(len(frame))
    frame.insert(4, SITE, pd.Series(np.array(["north", "south", "east"])[position % 3]))
    frame.insert(
        5,
        GRADE,
        pd.Categorical(
            np.array(["low", "high"])[position % 2], categories=["low", "high"], ordered=True
        ),
    )
    labels = np.asarray(iris.target_names)[iris.target.to_numpy()]
    return frame, labels


def write_build(
    root: Path,
    frame: pd.DataFrame,
    state: dict[str, Any],
    serving: ServingPlan,
    code: str,
    golden_predictions: list[Any],
    output: dict[str, Any],
) -> Build:
    (root / "model").mkdir(parents=True)
    with (root / "model" / "state.pkl").open("wb") as handle:
        cloudpickle.dump(state, handle)
    (root / "model_code.py").write_text(code)
    schema = infer_schema(frame, ["target"])
    card = make_card(
        name="iris_test",
        model_version="0123456789ab",
        notebook={"path": "iris.ipynb", "sha256": "0" * 64},
        python=sys.version.split()[0],
        data_fingerprint={"sha256": "0" * 64, "rows": len(frame), "columns": frame.shape[1]},
        input_schema=schema,
        output=output,
        serving=serving,
    )
    golden = GoldenSet(
        rows=to_jsonable(frame.drop(columns="target").iloc[GOLDEN_INDEX]),
        predictions=golden_predictions,
    )
    write_model_dir(root, card, golden)
    return Build(root=root, card=card.to_json(), golden=golden.to_json(), frame=frame)


def fit_label_model(frame: pd.DataFrame, labels: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Scaler + one-hot encoder + logistic regression; returns the state and its predictions."""
    scaler = StandardScaler().fit(frame[NUMERIC])
    categorical = frame[[SITE, GRADE]].astype(str)
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(categorical)
    features = np.hstack([scaler.transform(frame[NUMERIC]), encoder.transform(categorical)])
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    return {"model": model, "scaler": scaler, "encoder": encoder}, model.predict(features)


def _label_build(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    code_template: str,
    serving: ServingPlan,
    state: dict[str, Any],
    predicted: np.ndarray,
) -> Build:
    """A build of the label model on the iris frame, with ``code_template`` as model_code.py."""
    code = code_template.format(numeric=NUMERIC, categorical=[SITE, GRADE])
    golden = [str(label) for label in predicted[GOLDEN_INDEX]]
    root = tmp_path_factory.mktemp(name)
    frame, _ = iris_frame()
    return write_build(
        root, frame, state, serving, code, golden, {"kind": "label", "dtype": "object"}
    )


@pytest.fixture(scope="module")
def function_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    frame, labels = iris_frame()
    state, predicted = fit_label_model(frame, labels)
    serving = ServingPlan(
        preprocess=FunctionStep(cells=(3,), params=("df",)),
        predict=FunctionStep(cells=(5,), params=("model", "features")),
        globals=("scaler", "encoder"),
        bindings=Bindings(
            features="features",
            predict_args=(("model", "model"),),
            state=("encoder", "model", "scaler"),
        ),
    )
    return _label_build(
        tmp_path_factory, "function_build", FUNCTION_CODE, serving, state, predicted
    )


@pytest.fixture(scope="module")
def script_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    frame, labels = iris_frame()
    state, predicted = fit_label_model(frame, labels)
    serving = ServingPlan(
        preprocess=CellsStep(
            cells=(3,),
            reads=("df", "scaler", "encoder"),
            binds=("numeric", "X"),
            result="X",
            ends_with_expression=False,
        ),
        predict=CellsStep(
            cells=(5,),
            reads=("model", "X"),
            binds=("y_pred",),
            result="y_pred",
            ends_with_expression=False,
        ),
        bindings=Bindings(
            features="X",
            raw_input="df",
            preprocess_output="X",
            state=("encoder", "model", "scaler"),
        ),
    )
    return _label_build(tmp_path_factory, "script_build", SCRIPT_CODE, serving, state, predicted)


@pytest.fixture(scope="module")
def proba_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Numeric columns only (the all-float fast path), no preprocess, probability vectors."""
    iris = load_iris(as_frame=True)
    frame = iris.frame.copy()
    model = LogisticRegression(max_iter=1000).fit(frame[NUMERIC], iris.target)
    proba = model.predict_proba(frame[NUMERIC].iloc[GOLDEN_INDEX])
    serving = ServingPlan(
        preprocess=NoStep(),
        predict=FunctionStep(cells=(5,), params=("clf", "features")),
        bindings=Bindings(features="features", predict_args=(("clf", "model"),), state=("model",)),
    )
    root = tmp_path_factory.mktemp("proba_build")
    return write_build(
        root,
        frame,
        {"model": model},
        serving,
        PROBA_CODE.format(numeric=NUMERIC),
        proba.tolist(),
        {"kind": "vector", "dtype": "float64"},
    )


@pytest.fixture(scope="module")
def client(function_build: Build) -> Iterator[TestClient]:
    with TestClient(function_build.app()) as test_client:
        yield test_client


def split_payload(rows: list[dict[str, Any]]) -> dict[str, Any]:
    columns = list(rows[0])
    return {"columns": columns, "data": [[row[c] for c in columns] for row in rows]}


# --- Predictor ---------------------------------------------------------------------------------


@pytest.mark.parametrize("build_name", ["function_build", "script_build"])
def test_predictor_reproduces_golden_labels(
    build_name: str, request: pytest.FixtureRequest
) -> None:
    build: Build = request.getfixturevalue(build_name)
    predictor = Predictor(build.model_dir, build.model_code())
    predictions = predictor.predict_records(build.golden_rows)
    assert predictions == build.golden["predictions"]
    assert all(isinstance(label, str) for label in predictions)
    assert predictor.model_version == "0123456789ab"
    assert predictor.schema == build.card["input_schema"]


def test_predictor_sets_globals_on_model_code(function_build: Build) -> None:
    module = function_build.model_code()
    Predictor(function_build.model_dir, module)
    assert isinstance(module.scaler, StandardScaler)
    assert isinstance(module.encoder, OneHotEncoder)


def test_predictor_frame_has_training_dtypes(function_build: Build) -> None:
    predictor = Predictor(function_build.model_dir, function_build.model_code())
    frame = predictor.frames.from_records(function_build.golden_rows)
    training = function_build.frame
    assert list(frame.columns) == list(training.columns[training.columns != "target"]) + ["target"]
    for column in training.columns.drop("target"):
        assert frame[column].dtype == training[column].dtype, column
    assert frame["target"].isna().all()
    assert list(frame[GRADE].cat.categories) == ["low", "high"]
    assert frame[GRADE].cat.ordered


# --- /predict ----------------------------------------------------------------------------------


@pytest.mark.parametrize("build_name", ["function_build", "script_build"])
@pytest.mark.parametrize("source", ["instances", "dataframe_records", "dataframe_split"])
def test_predict_formats_give_golden_predictions(
    build_name: str, source: str, request: pytest.FixtureRequest
) -> None:
    build: Build = request.getfixturevalue(build_name)
    rows = build.golden_rows
    body = {source: split_payload(rows) if source == "dataframe_split" else rows}
    with TestClient(build.app()) as client:
        response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "predictions": build.golden["predictions"],
        "model_version": "0123456789ab",
    }


def test_predict_labels_stay_strings_and_match_sklearn(
    client: TestClient, function_build: Build
) -> None:
    frame, labels = iris_frame()
    _, predicted = fit_label_model(frame, labels)
    rows = to_jsonable(frame.drop(columns="target").iloc[:20])
    response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert predictions == [str(label) for label in predicted[:20]]
    assert set(predictions) <= {"setosa", "versicolor", "virginica"}


def test_predict_vectors_of_floats(proba_build: Build) -> None:
    rows = proba_build.golden_rows
    with TestClient(proba_build.app()) as client:
        response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 200
    got = np.array(response.json()["predictions"])
    np.testing.assert_allclose(got, np.array(proba_build.golden["predictions"]), rtol=1e-6)
    assert got.shape == (len(rows), 3)


def test_predict_ignores_unknown_keys_and_index(client: TestClient, function_build: Build) -> None:
    rows = [dict(row, extra=1) for row in function_build.golden_rows[:2]]
    split = dict(split_payload(function_build.golden_rows[:2]), index=[7, 8])
    for body in ({"instances": rows}, {"dataframe_split": split, "params": {}}):
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == function_build.golden["predictions"][:2]


def test_category_and_string_columns_round_trip(client: TestClient, function_build: Build) -> None:
    row = dict(function_build.golden_rows[0])
    seen: list[Any] = []
    client.app.state.after_predict.append(lambda frame, preds, rid: seen.append(frame))  # type: ignore[attr-defined]
    try:
        for site, grade in [("north", "low"), ("east", "high")]:
            response = client.post(
                "/predict", json={"instances": [dict(row, **{SITE: site, GRADE: grade})]}
            )
            assert response.status_code == 200, response.text
    finally:
        client.app.state.after_predict.clear()  # type: ignore[attr-defined]
    assert [frame[SITE].iloc[0] for frame in seen] == ["north", "east"]
    assert [frame[GRADE].iloc[0] for frame in seen] == ["low", "high"]
    assert seen[0][GRADE].dtype == function_build.frame[GRADE].dtype
    assert seen[0][SITE].dtype == function_build.frame[SITE].dtype


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    return detail


def test_wrong_type_is_422_naming_the_column(client: TestClient, function_build: Build) -> None:
    row = dict(function_build.golden_rows[0], **{"petal width (cm)": "wide"})
    errors = errors_of(client.post("/predict", json={"instances": [row]}))
    assert errors[0]["loc"] == ["body", "instances", 0, "petal width (cm)"]


def test_missing_column_is_422_naming_the_column(client: TestClient, function_build: Build) -> None:
    row = dict(function_build.golden_rows[0])
    del row[SITE]
    errors = errors_of(client.post("/predict", json={"dataframe_records": [row]}))
    assert errors[0]["loc"] == ["body", "dataframe_records", 0, SITE]
    assert errors[0]["type"] == "missing"


def test_unknown_category_level_is_422(client: TestClient, function_build: Build) -> None:
    row = dict(function_build.golden_rows[0], **{GRADE: "medium"})
    errors = errors_of(client.post("/predict", json={"instances": [row]}))
    assert errors[0]["loc"][-1] == GRADE


def test_split_with_wrong_type_names_row_and_column(
    client: TestClient, function_build: Build
) -> None:
    split = split_payload(function_build.golden_rows[:2])
    split["data"][1][0] = [1, 2]
    errors = errors_of(client.post("/predict", json={"dataframe_split": split}))
    assert errors[0]["loc"] == ["body", "dataframe_split", 1, NUMERIC[0]]


@pytest.mark.parametrize(
    ("content", "loc"),
    [
        (b"", ["body", "instances"]),
        (b"{}", ["body", "instances"]),
        (b'{"instances": []}', ["body", "instances"]),
        (b'{"instances": [', ["body"]),
        (b"[1, 2]", ["body"]),
        (b'{"dataframe_split": {"columns": ["a"]}}', ["body", "dataframe_split"]),
    ],
)
def test_bad_bodies_are_422(client: TestClient, content: bytes, loc: list[Any]) -> None:
    response = client.post(
        "/predict", content=content, headers={"content-type": "application/json"}
    )
    assert errors_of(response)[0]["loc"] == loc


def test_two_row_sources_is_422(client: TestClient, function_build: Build) -> None:
    rows = function_build.golden_rows[:1]
    errors = errors_of(client.post("/predict", json={"instances": rows, "dataframe_records": rows}))
    assert "exactly one" in errors[0]["msg"]


def _preprocess_raising(tmp_path: Path, like: Build, exception: str) -> Build:
    """``like``'s model, with a preprocess step that raises ``exception`` (Python source)."""
    shutil.copytree(like.model_dir, tmp_path / "model")
    code = f"def preprocess(df):\n    raise {exception}\n\n\n" + (
        "def predict(model, features):\n    return features\n"
    )
    (tmp_path / "model_code.py").write_text(code)
    return Build(root=tmp_path, card=like.card, golden=like.golden, frame=like.frame)


def test_model_code_value_error_is_422_not_500(tmp_path: Path, function_build: Build) -> None:
    build = _preprocess_raising(tmp_path, function_build, "ValueError('sepal too long')")
    with TestClient(build.app()) as client:
        response = client.post("/predict", json={"instances": build.golden_rows[:1]})
    assert response.status_code == 422
    assert response.json() == {"detail": "ValueError: sepal too long"}


def test_unexpected_model_error_is_logged_500(
    tmp_path: Path, function_build: Build, capsys: pytest.CaptureFixture[str]
) -> None:
    build = _preprocess_raising(tmp_path, function_build, "RuntimeError('boom')")
    with TestClient(build.app()) as client:
        capsys.readouterr()
        response = client.post(
            "/predict", json={"instances": build.golden_rows[:1]}, headers={"X-Request-ID": "r-500"}
        )
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "r-500"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    error = next(
        line for line in lines if line["severity"] == "ERROR" and "boom" in line["message"]
    )
    assert "Traceback" in error["message"]
    assert error["requestId"] == "r-500"


# --- ops endpoints ----------------------------------------------------------------------------


def test_readyz_is_503_until_loaded(function_build: Build) -> None:
    app = function_build.app()
    unstarted = TestClient(app)  # no context manager: the lifespan (model load) has not run
    response = unstarted.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "loading"}
    assert unstarted.get("/healthz").status_code == 200
    assert unstarted.post("/predict", json={"instances": []}).status_code == 503
    with TestClient(app) as started:
        assert started.get("/readyz").status_code == 200
        assert started.get("/readyz").json()["status"] == "ready"
    unstarted.close()


def test_healthz_and_metadata(client: TestClient, function_build: Build) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    served = client.get("/metadata").json()
    card = function_build.card
    # Only what a client needs: no golden rows, profile, parameters, paths or examples.
    assert served == {
        "name": card["name"],
        "model_version": card["model_version"],
        "nb2prod_version": card["nb2prod_version"],
        "trained_at": card["trained_at"],
        "metrics": card["metrics"],
        "output": {"kind": card["output"]["kind"]},
        "notebook": {"path": Path(card["notebook"]["path"]).name},
        "input_schema": {
            "columns": [
                {k: v for k, v in column.items() if k != "example"}
                for column in card["input_schema"]["columns"]
            ]
        },
    }


def test_metrics_count_requests_and_predictions(client: TestClient, function_build: Build) -> None:
    client.post("/predict", json={"instances": function_build.golden_rows[:3]})
    client.post("/predict", json={"instances": []})
    client.get("/no-such-path")
    text = client.get("/metrics").text
    assert 'nb2prod_requests_total{method="POST",path="/predict",status="200"}' in text
    assert 'nb2prod_requests_total{method="POST",path="/predict",status="422"}' in text
    assert 'nb2prod_requests_total{method="GET",path="unmatched",status="404"}' in text
    assert (
        'nb2prod_request_duration_seconds_bucket{le="0.005",method="POST",path="/predict"}' in text
    )
    assert 'nb2prod_model_info{model_version="0123456789ab"} 1.0' in text
    predicted = next(
        line for line in text.splitlines() if line.startswith("nb2prod_predictions_total ")
    )
    assert float(predicted.split()[1]) >= 3


def test_each_app_has_its_own_registry(function_build: Build) -> None:
    with TestClient(function_build.app()) as first, TestClient(function_build.app()) as second:
        first.get("/healthz")
        assert 'path="/healthz"' not in second.get("/metrics").text


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == (
        "abc-123"
    )
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert client.get("/missing").headers["x-request-id"]
    assert client.post("/predict", content=b"").headers["x-request-id"]


def test_openapi_types_every_column(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    row = schemas["InputRow"]
    properties = row["properties"]
    assert set(properties) == {*NUMERIC, SITE, GRADE}
    assert properties[NUMERIC[0]]["type"] == "number"
    sepal_length = np.sort(load_iris(as_frame=True).frame[NUMERIC[0]].to_numpy())
    assert properties[NUMERIC[0]]["examples"] == [sepal_length[len(sepal_length) // 2]]
    assert properties[SITE]["type"] == "string"
    assert properties[GRADE]["enum"] == ["low", "high"]
    assert set(row["required"]) == set(properties)
    request = schemas["PredictRequest"]
    objects, lists = request["properties"]["instances"]["anyOf"]
    assert objects["items"] == {"$ref": "#/components/schemas/InputRow"}
    # List rows: one value per column, in the card's column order, each titled with its name.
    columns = [*NUMERIC, SITE, GRADE]
    assert lists["items"]["minItems"] == lists["items"]["maxItems"] == len(columns)
    assert [item["title"] for item in lists["items"]["prefixItems"]] == columns
    assert lists["items"]["prefixItems"][-1]["enum"] == ["low", "high"]
    assert json.dumps(columns) in request["properties"]["instances"]["description"]
    # A row source is required and never null: what the endpoint enforces, so generated
    # clients and schemathesis send what it accepts.
    assert request["minProperties"] == 1
    assert "anyOf" not in request["properties"]["dataframe_records"]
    assert set(request["examples"][0]["instances"][0]) == {*NUMERIC, SITE, GRADE}
    paths = client.get("/openapi.json").json()["paths"]
    body_ref = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_ref == {"$ref": "#/components/schemas/PredictRequest"}


def test_after_predict_hooks_get_frame_predictions_and_id(function_build: Build) -> None:
    calls: list[tuple[pd.DataFrame, list[Any], str]] = []

    def failing_hook(frame: pd.DataFrame, predictions: list[Any], request_id: str) -> None:
        raise RuntimeError("monitoring is down")

    app = function_build.app(after_predict=[failing_hook, lambda *args: calls.append(args)])
    with TestClient(app) as client:
        response = client.post(
            "/predict",
            json={"instances": function_build.golden_rows[:2]},
            headers={"X-Request-ID": "hook-1"},
        )
    assert response.status_code == 200  # a failing hook never fails the request
    frame, predictions, request_id = calls[0]
    assert len(frame) == 2 and predictions == response.json()["predictions"]
    assert request_id == "hook-1"


# --- logs ---------------------------------------------------------------------------------------


def test_logs_are_json_lines_with_severity_and_http_request(
    function_build: Build, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    with TestClient(function_build.app()) as client:
        capsys.readouterr()
        client.post(
            "/predict?verbose=1",
            json={"instances": function_build.golden_rows[:1]},
            headers={"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"},
        )
        client.post("/predict", json={})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines and all({"severity", "message"} <= set(line) for line in lines)
    access = [line for line in lines if "httpRequest" in line]
    ok, bad = access
    assert ok["severity"] == "INFO"
    assert ok["httpRequest"]["requestMethod"] == "POST"
    assert ok["httpRequest"]["requestUrl"] == "/predict?verbose=1"
    assert ok["httpRequest"]["status"] == 200
    assert ok["httpRequest"]["latency"].endswith("s")
    assert float(ok["httpRequest"]["latency"][:-1]) >= 0
    assert ok["logging.googleapis.com/trace"] == (
        "projects/my-project/traces/105445aa7843bc8bf206b12000100000"
    )
    assert bad["severity"] == "WARNING" and bad["httpRequest"]["status"] == 422
    assert "logging.googleapis.com/trace" not in bad


# --- the vendored copy under a real uvicorn -------------------------------------------------------


def vendored_build(build: Build, root: Path) -> Path:
    """A build dir like `nb2prod generate` writes: nb2prod_runtime/, model_code.py, serving.py."""
    shutil.copytree(build.model_dir, root / "model")
    shutil.copy(build.root / "model_code.py", root / "model_code.py")
    shutil.copytree(
        RUNTIME_DIR, root / "nb2prod_runtime", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / "serving.py").write_text(SERVING_PY)
    return root


def test_vendored_runtime_imports_nothing_from_nb2prod(
    function_build: Build, tmp_path: Path
) -> None:
    root = vendored_build(function_build, tmp_path)
    check = textwrap.dedent(
        """
        import sys
        import serving
        top = {name.split(".")[0] for name in sys.modules}
        assert "nb2prod" not in top, "the runtime imported nb2prod"
        assert not top & {"sklearn", "scipy", "nbformat", "click", "jinja2"}, top
        """
    )
    subprocess.run([sys.executable, "-c", check], cwd=root, check=True, timeout=60)


def test_real_uvicorn_server(function_build: Build, tmp_path: Path) -> None:
    root = vendored_build(function_build, tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "LOG_LEVEL"}}
    env["GOOGLE_CLOUD_PROJECT"] = "proj"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "serving:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, timeout=5) as http:
            while True:
                assert server.poll() is None, server.communicate()
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server never became ready"
                time.sleep(0.1)
            response = http.post(
                "/predict",
                json={"dataframe_split": split_payload(function_build.golden_rows)},
                headers={"X-Request-ID": "live-1", "X-Cloud-Trace-Context": "abc/1;o=1"},
            )
            assert response.status_code == 200
            assert response.headers["x-request-id"] == "live-1"
            assert response.json()["predictions"] == function_build.golden["predictions"]
            bad = http.post("/predict", json={"instances": [{"sepal length (cm)": "x"}]})
            assert bad.status_code == 422
            assert "nb2prod_requests_total" in http.get("/metrics").text
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert all("severity" in line and "message" in line for line in lines)
    messages = [line["message"] for line in lines]
    assert any("Uvicorn running on" in message for message in messages), messages  # uvicorn's own
    access = next(line for line in lines if line.get("requestId") == "live-1")
    assert access["httpRequest"]["remoteIp"] == "127.0.0.1"
    assert access["httpRequest"]["userAgent"].startswith("python-httpx")
    assert access["logging.googleapis.com/trace"] == "projects/proj/traces/abc"
    assert "Traceback" not in out + err


def test_requests_predicted_together_reach_each_hook_with_their_own_rows_and_ids(
    function_build: Build,
) -> None:
    from nb2prod.runtime import app as runtime_app
    from nb2prod.runtime.batcher import BatchAwareHook

    app = function_build.app()
    predictor = Predictor(function_build.model_dir, function_build.model_code())
    names = [column["name"] for column in function_build.card["input_schema"]["columns"]]
    rows = [[row.get(name) for name in names] for row in function_build.golden_rows]
    requests = [(rows[0:1], "a"), (rows[1:4], "b"), (rows[4:6], "c")]
    plain: list[tuple[pd.DataFrame, list[Any], str]] = []
    batched: list[tuple[int, list[Any], list[tuple[str, int, int]]]] = []
    app.state.after_predict = [
        lambda frame, predictions, rid: plain.append((frame.copy(), predictions, rid)),
        BatchAwareHook(
            lambda *_: None,
            lambda frame, predictions, spans: batched.append((len(frame), predictions, spans)),
        ),
    ]
    answers = runtime_app._predict_requests(app, predictor, requests)
    golden = function_build.golden["predictions"]
    assert answers == [golden[0:1], golden[1:4], golden[4:6]]
    # The plain hook: once per request, its own rows (as a fresh 0-based frame) and answers.
    assert [rid for _, _, rid in plain] == ["a", "b", "c"]
    assert [predictions for _, predictions, _ in plain] == answers
    for (frame, _, _), (request_rows, _) in zip(plain, requests, strict=True):
        pd.testing.assert_frame_equal(frame, predictor.frames.from_rows(request_rows))
    # The batch-aware hook: once, with the whole frame and each request's span.
    assert batched == [(6, golden[0:6], [("a", 0, 1), ("b", 1, 4), ("c", 4, 6)])]
