"""The example notebooks run top to bottom in a Jupyter kernel, and the reference oracle
(tests/reference.py) predicts from them: the oracle every end-to-end test compares with.

Each kernel start costs seconds, so these live here and not in tests/unit.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import reference
from helpers import EXAMPLES, example_notebook, write_notebook
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_executes_top_to_bottom(name: str) -> None:
    path = example_notebook(name)
    nb = nbformat.read(path, as_version=4)
    # Every cell, skip and exploration cells included, as "Run All" in Jupyter would.
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    errors = [
        output
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]
    assert errors == []


EXPECTED = {
    # name: (Python type of each prediction, check on the five values)
    "iris_function": (
        str,
        lambda p: p == ["setosa", "setosa", "versicolor", "versicolor", "virginica"],
    ),
    "wine_script": (int, lambda p: p == [0, 0, 1, 1, 2]),
    "diabetes_regression": (float, lambda p: all(25.0 <= v <= 346.0 for v in p)),
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_reference_predicts_rows_from_the_notebooks_dataset(name: str) -> None:
    rows = reference.example_rows(name, 5)
    assert len(rows) == 5
    predictions = reference.reference_predictions(
        example_notebook(name), rows, reference.RECIPES[name]
    )
    kind, plausible = EXPECTED[name]
    assert len(predictions) == 5
    assert all(type(value) is kind for value in predictions), predictions
    assert plausible(predictions), predictions
    # Cached: the same call again gives the same answer without a second kernel run.
    assert reference.reference_predictions(example_notebook(name), rows) == predictions


def test_reference_runs_untagged_cells_drops_skip_cells_and_types_rows(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "tiny.ipynb",
        [
            ("import pandas as pd\nimport numpy as np\noffset = 10", None),
            ("raw = pd.DataFrame({'n': [1, 2], 'city': ['a', 'b']})", ["load"]),
            ("raise RuntimeError('never run')", ["skip"]),
            ("%%time\nlabel = np.where(raw['n'] + offset > 11, raw['city'], 'low')", ["predict"]),
        ],
    )
    recipe = (
        "raw = __like(raw)\nassert str(raw['n'].dtype) == 'int64'\n{{cells:predict}}\n__out = label"
    )
    rows = [{"city": "x", "n": 5}, {"n": 1, "city": "y"}]
    assert reference.reference_predictions(path, rows, recipe) == ["x", "low"]
