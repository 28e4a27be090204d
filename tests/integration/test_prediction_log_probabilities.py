"""Class probabilities in the prediction log of a real service (uvicorn on loopback, file sink).

- A served classifier (the iris example): every record of a batch request and of one-row
  requests carries ``classes`` (the species names the service answers with) and one list of
  probabilities per row, equal within 1e-9 to the notebook's own ``model.predict_proba``
  computed independently in a Jupyter kernel; rows sum to 1 and the most likely class is the
  prediction. The same holds for the build served without its golden rows (as in an image).
- A regressor (the diabetes example) logs no probabilities.
- A notebook whose predict function changes the features before calling the model logs none
  either (the check turns them off) rather than wrong ones.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from helpers import example_notebook, run_cli_process
from reference import example_rows, reference_predictions
from service_server import Uvicorn, prediction_log_settled

PROBA_RECIPE = "__out = model.predict_proba(preprocess(__like(X)))"
CLASSES_RECIPE = "__out = target_names[model.classes_]"


@pytest.fixture(scope="module")
def iris(built_examples: Callable[[str], Path]) -> Path:
    return built_examples("iris_function")


def _serve_and_log(
    build_dir: Path, folder: Path, batch: list[dict[str, Any]], singles: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str]:
    """Serve ``build_dir`` logging to ``folder``; POST ``batch`` as one request, then each of
    ``singles`` alone. The published records, and the service's output."""
    requests = [("batch", batch)] + [(f"one-{i:02d}", [row]) for i, row in enumerate(singles)]
    server = Uvicorn(build_dir, {"NB2PROD_PREDICTION_LOG": str(folder)})
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for request_id, rows in requests:
                response = client.post(
                    "/predict", json={"instances": rows}, headers={"X-Request-ID": request_id}
                )
                assert response.status_code == 200, response.text
                if request_id == "batch":
                    prediction_log_settled(server.url)  # the writer drains it on its own
    finally:
        server.stop()
    output = server.log.read_text()
    assert "Application shutdown complete." in output
    records = [
        json.loads(line)
        for path in sorted(folder.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert sorted(r["request_id"] for r in records) == sorted(r for r, _ in requests)
    return records, output


def _check_probabilities(
    records: list[dict[str, Any]],
    rows_of: dict[str, list[dict[str, Any]]],
    expected: dict[str, list[float]],
    classes: list[str],
) -> None:
    for record in records:
        assert record["classes"] == classes, record
        sent = rows_of[record["request_id"]]
        assert len(record["probabilities"]) == len(sent) == len(record["predictions"])
        for row, probabilities, prediction in zip(
            sent, record["probabilities"], record["predictions"], strict=True
        ):
            want = expected[json.dumps(row, sort_keys=True)]
            assert probabilities == pytest.approx(want, abs=1e-9)
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-9)
            assert classes[probabilities.index(max(probabilities))] == prediction


def test_a_classifier_logs_the_probabilities_of_its_own_model(iris: Path, tmp_path: Path) -> None:
    rows = example_rows("iris_function", 12)  # spread over the dataset: all three species
    singles = rows[::2]
    notebook = example_notebook("iris_function")
    proba = reference_predictions(notebook, rows, PROBA_RECIPE)
    expected = {json.dumps(row, sort_keys=True): p for row, p in zip(rows, proba, strict=True)}
    classes = reference_predictions(notebook, rows[:1], CLASSES_RECIPE)
    assert sorted(classes) == ["setosa", "versicolor", "virginica"]
    rows_of = {"batch": rows, **{f"one-{i:02d}": [row] for i, row in enumerate(singles)}}

    records, _ = _serve_and_log(iris, tmp_path / "log", rows, singles)
    assert {r["predictions"][0] for r in records if r["rows"] == 1} >= {"setosa", "virginica"}
    _check_probabilities(records, rows_of, expected, classes)

    # Served without the golden rows, as from the image: the first drained request checks.
    image = tmp_path / "image" / "build"
    shutil.copytree(iris, image)
    (image / "model" / "golden.json").unlink()
    records, output = _serve_and_log(image, tmp_path / "image-log", rows, singles)
    _check_probabilities(records, rows_of, expected, classes)
    assert "are not logged" not in output


def test_a_regressor_logs_no_probabilities(
    built_examples: Callable[[str], Path], tmp_path: Path
) -> None:
    rows = example_rows("diabetes_regression", 6)
    records, output = _serve_and_log(
        built_examples("diabetes_regression"), tmp_path / "log", rows, rows[:3]
    )
    assert all("probabilities" not in r and "classes" not in r for r in records), records[0]
    assert all(isinstance(r["predictions"][0], float) for r in records)
    assert "could not be computed" not in output


def test_a_predict_step_that_changes_the_features_logs_no_probabilities(tmp_path: Path) -> None:
    """``model.predict(features * 1.5)``: predict_proba of the preprocessed rows would not be
    what the service answered with, so the log must carry none."""
    notebook = nbformat.read(example_notebook("iris_function"), as_version=4)
    (cell,) = [c for c in notebook.cells if "predict" in c.get("metadata", {}).get("tags", [])]
    assert "model.predict(features)" in cell.source
    cell.source = cell.source.replace("model.predict(features)", "model.predict(features * 1.5)")
    path = tmp_path / "iris_scaled_predict.ipynb"
    nbformat.write(notebook, path)
    build = tmp_path / "build"
    result = run_cli_process("build", path, "-o", build, "--no-docker", timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr

    rows = example_rows("iris_function", 12)
    records, output = _serve_and_log(build, tmp_path / "log", rows, rows[:4])
    assert records and all("probabilities" not in r for r in records)
    assert "the predict step changes the features" in output
