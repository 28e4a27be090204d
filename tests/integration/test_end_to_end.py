"""Each example notebook, built and served for real: ``nb2prod build --no-docker`` then
``nb2prod serve`` on loopback, checked over HTTP against the notebook's own predictions.

The expected predictions come from ``tests/reference.py``, which runs the notebook in a Jupyter
kernel and shares no code with nb2prod. The model card's golden set is only where the rows come
from: comparing the service with the card alone would let a bug in training hide itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import reference
from helpers import (
    EXAMPLES,
    PUBLIC_CARD_FIELDS,
    ServeProcess,
    assert_same_predictions,
    build_example,
    example_notebook,
)

pytestmark = pytest.mark.slow


# --- fixtures: one build and one server per example ------------------------------------------


@dataclass
class Built:
    name: str
    notebook: Path
    directory: Path
    card: dict[str, Any]
    golden: dict[str, Any]  # model/golden.json: kept beside the card, out of the image
    build_stdout: str


@pytest.fixture(scope="module", params=EXAMPLES)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    name: str = request.param
    root = tmp_path_factory.mktemp("e2e")
    notebook = example_notebook(name)
    result = build_example(name, root / name, "--no-docker")
    card = json.loads((root / name / "model" / "model_card.json").read_text())
    golden = json.loads((root / name / "model" / "golden.json").read_text())
    return Built(name, notebook, root / name, card, golden, result.stdout)


@pytest.fixture(scope="module")
def server(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    served = ServeProcess(built.directory, tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        yield served
    finally:
        served.close()


@pytest.fixture(scope="module")
def expected(built: Built) -> list[Any]:
    """What the notebook's own code, run in a Jupyter kernel, predicts for the golden rows."""
    rows = built.golden["rows"]
    predictions: list[Any] = reference.reference_predictions(built.notebook, rows)
    return predictions


# --- the build --------------------------------------------------------------------------------


def test_build_reports_the_model_and_writes_the_card(built: Built) -> None:
    card = built.card
    assert card["model_version"] in built.build_stdout
    assert len(built.golden["rows"]) >= 5
    assert len(built.golden["predictions"]) == len(built.golden["rows"])
    assert "golden" not in card, "training rows stay out of the card (it is served and shipped)"
    assert card["notebook"]["sha256"]
    assert card["input_schema"]["columns"]
    assert card["metrics"], "the evaluate cell binds metrics"
    assert not (built.directory.parent / f".{built.name}.render").exists()
    leftovers = [p.name for p in built.directory.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_golden_set_matches_the_notebook_run_in_jupyter(built: Built, expected: list[Any]) -> None:
    """The card's golden predictions are the notebook's, not something nb2prod made up."""
    assert_same_predictions(expected, built.golden["predictions"])


# --- the service ------------------------------------------------------------------------------


def test_readiness_is_503_or_unreachable_until_loaded(server: ServeProcess) -> None:
    assert all(seen in (503, "unreachable") for seen in server.readiness), server.readiness
    response = httpx.get(f"{server.url}/readyz")
    assert response.status_code == 200
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def _payloads(built: Built) -> dict[str, Any]:
    rows = built.golden["rows"]
    columns = [column["name"] for column in built.card["input_schema"]["columns"]]
    return {
        "instances": {"instances": rows},
        "dataframe_records": {"dataframe_records": rows},
        "dataframe_split": {
            "dataframe_split": {
                "columns": columns,
                "data": [[row[column] for column in columns] for row in rows],
            }
        },
    }


@pytest.mark.parametrize("shape", ["instances", "dataframe_records", "dataframe_split"])
def test_predict_matches_the_notebook(
    server: ServeProcess, built: Built, expected: list[Any], shape: str
) -> None:
    response = httpx.post(f"{server.url}/predict", json=_payloads(built)[shape], timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == built.card["model_version"]
    assert_same_predictions(expected, body["predictions"])


def test_predict_one_row_at_a_time_matches_the_notebook(
    server: ServeProcess, built: Built, expected: list[Any]
) -> None:
    for row, want in zip(built.golden["rows"], expected, strict=True):
        response = httpx.post(f"{server.url}/predict", json={"instances": [row]}, timeout=30)
        assert response.status_code == 200, response.text
        assert_same_predictions([want], response.json()["predictions"])


def _detail_text(response: httpx.Response) -> str:
    return json.dumps(response.json())


def test_a_missing_column_is_a_422_naming_it(server: ServeProcess, built: Built) -> None:
    row = dict(built.golden["rows"][0])
    column = built.card["input_schema"]["columns"][0]["name"]
    del row[column]
    response = httpx.post(f"{server.url}/predict", json={"instances": [row]})
    assert response.status_code == 422, response.text
    assert column in _detail_text(response)


def test_a_wrong_type_is_a_422_naming_the_field(server: ServeProcess, built: Built) -> None:
    row = dict(built.golden["rows"][0])
    numeric = next(
        c for c in built.card["input_schema"]["columns"] if c["kind"] in ("number", "integer")
    )
    row[numeric["name"]] = "not a number"
    response = httpx.post(f"{server.url}/predict", json={"instances": [row]})
    assert response.status_code == 422, response.text
    assert numeric["name"] in _detail_text(response)


@pytest.mark.parametrize("body", [b"", b"{}"])
def test_an_empty_body_is_a_422_naming_the_field(server: ServeProcess, body: bytes) -> None:
    response = httpx.post(
        f"{server.url}/predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "instances" in _detail_text(response)


def test_request_id_is_echoed_or_generated(server: ServeProcess, built: Built) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    rows = built.golden["rows"][:1]
    response = httpx.post(
        f"{server.url}/predict", json={"instances": rows}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    generated = httpx.post(f"{server.url}/predict", json={"instances": rows})
    assert generated.headers.get("x-request-id")
    # Logs are one JSON object per line, with severity and message, carrying the request id.
    time.sleep(0.2)
    records = []
    for line in server.log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    assert records and all("severity" in r and "message" in r for r in records)
    assert any(request_id in json.dumps(r) for r in records)


def test_metadata_is_the_public_part_of_the_model_card(server: ServeProcess, built: Built) -> None:
    response = httpx.get(f"{server.url}/metadata")
    assert response.status_code == 200
    served = response.json()
    assert set(served) == PUBLIC_CARD_FIELDS
    for field in ("name", "model_version", "metrics", "trained_at"):
        assert served[field] == built.card[field], field
    names = [column["name"] for column in built.card["input_schema"]["columns"]]
    assert [column["name"] for column in served["input_schema"]["columns"]] == names
    assert not Path(served["notebook"]["path"]).is_absolute()


def test_metrics_count_requests(server: ServeProcess, built: Built) -> None:
    httpx.post(f"{server.url}/predict", json={"instances": built.golden["rows"][:1]})
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert "nb2prod_requests_total" in response.text


def test_openapi_types_every_input_column(server: ServeProcess, built: Built) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    text = json.dumps(schema)
    for column in built.card["input_schema"]["columns"]:
        assert json.dumps(column["name"]) in text, column["name"]


# --- reproducibility --------------------------------------------------------------------------


def test_train_py_twice_gives_the_same_model(built: Built, expected: list[Any]) -> None:
    cards = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "train.py"],
            cwd=built.directory,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        model_dir = built.directory / "model"
        cards.append(
            (
                json.loads((model_dir / "model_card.json").read_text()),
                json.loads((model_dir / "golden.json").read_text()),
            )
        )
    (first, first_golden), (second, second_golden) = cards
    assert first["model_version"] == second["model_version"] == built.card["model_version"]
    assert first_golden == second_golden == built.golden
    assert first["data_fingerprint"] == second["data_fingerprint"]
    assert_same_predictions(expected, second_golden["predictions"])
