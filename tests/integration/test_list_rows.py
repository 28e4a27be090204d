"""Rows as lists in column order, served for real: ``nb2prod build --no-docker``, ``nb2prod serve``.

A client that knows only what the service publishes (the column order in ``/metadata``) sends the
golden rows as lists and as objects; both must get the very same predictions, on the small-body
path and, with a batch larger than ``NB2PROD_OFFLOAD_BYTES``, on the large-body path too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import EXAMPLES, ServeProcess, build_example

pytestmark = pytest.mark.slow

#: The default of NB2PROD_OFFLOAD_BYTES: larger bodies take the large-body path.
OFFLOAD_BYTES = 64 * 1024


@pytest.fixture(scope="module", params=EXAMPLES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, list[dict[str, Any]]]]:
    """A served build of one example, and its golden rows (objects, as training saw them)."""
    root = tmp_path_factory.mktemp("list_rows")
    build_example(request.param, root / "build", "--no-docker", "-q")
    golden = json.loads((root / "build" / "model" / "golden.json").read_text())
    server = ServeProcess(root / "build", root / "serve.log")
    try:
        yield server, golden["rows"]
    finally:
        server.close()


def predict(http: httpx.Client, rows: list[Any]) -> tuple[list[Any], int]:
    """The predictions for ``{"instances": rows}``, and the body's size in bytes."""
    body = json.dumps({"instances": rows}).encode()
    response = http.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    predictions: list[Any] = response.json()["predictions"]
    return predictions, len(body)


def test_list_rows_and_object_rows_get_identical_predictions(
    served: tuple[ServeProcess, list[dict[str, Any]]],
) -> None:
    server, objects = served
    with httpx.Client(base_url=server.url, timeout=60) as http:
        columns = http.get("/metadata").json()["input_schema"]["columns"]
        names = [column["name"] for column in columns]
        lists = [[row[name] for name in names] for row in objects]
        by_objects, _ = predict(http, objects)
        by_lists, _ = predict(http, lists)
        assert by_lists == by_objects
        assert len(by_lists) == len(objects)
        # A batch big enough that both bodies are parsed off the event loop, in chunks.
        copies = OFFLOAD_BYTES // len(json.dumps(lists[0])) // len(lists) + 1
        many_objects, objects_size = predict(http, objects * copies)
        many_lists, lists_size = predict(http, lists * copies)
        assert min(objects_size, lists_size) > OFFLOAD_BYTES
        assert many_lists == many_objects == by_objects * copies
        # A row one value short is refused, naming the columns a list row needs, in order.
        short = http.post("/predict", json={"instances": [lists[0][:-1]]})
        assert short.status_code == 422
        assert json.dumps(names) in short.json()["detail"][0]["msg"]
    assert "Traceback" not in Path(server.log).read_text()
