"""The example notebooks are real, runnable notebooks, and the reference oracle works on them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbclient import NotebookClient

TESTS_DIR = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = TESTS_DIR.parent / "example_notebooks"
EXAMPLES = ["iris_function", "wine_script", "diabetes_regression"]
ROLES = {"parameters", "load", "preprocess", "train", "evaluate", "predict", "skip"}
KALE_TAGS = {"imports", "pipeline-parameters"}


def _load(name: str, path: Path) -> ModuleType:
    """Import a helper module by path (tests/ and example_notebooks/ are not packages)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


reference = _load("nb2prod_tests_reference", TESTS_DIR / "reference.py")
make_examples = _load("nb2prod_make_examples", EXAMPLES_DIR / "make_examples.py")


def _tags(nb: nbformat.NotebookNode) -> list[str]:
    return [tag for cell in nb.cells for tag in reference.cell_tags(cell)]


def test_committed_notebooks_match_their_generator() -> None:
    assert sorted(make_examples.EXAMPLES) == sorted(EXAMPLES)
    for name in EXAMPLES:
        committed = (EXAMPLES_DIR / f"{name}.ipynb").read_text(encoding="utf-8")
        assert committed == make_examples.render(name), (
            f"{name}.ipynb is stale: run python example_notebooks/make_examples.py"
        )


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_a_tagged_python_notebook(name: str) -> None:
    nb = nbformat.read(EXAMPLES_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.language_info.name == "python"
    tags = _tags(nb)
    assert tags.count("train") == 1
    assert tags.count("predict") == 1
    assert set(tags) <= ROLES | KALE_TAGS
    assert any(cell.cell_type == "markdown" for cell in nb.cells)
    assert any(not reference.cell_tags(c) for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_executes_top_to_bottom(name: str) -> None:
    path = EXAMPLES_DIR / f"{name}.ipynb"
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
        reference.example_path(name), rows, reference.RECIPES[name]
    )
    kind, plausible = EXPECTED[name]
    assert len(predictions) == 5
    assert all(type(value) is kind for value in predictions), predictions
    assert plausible(predictions), predictions
    # Cached: the same call again gives the same answer without a second kernel run.
    assert reference.reference_predictions(reference.example_path(name), rows) == predictions


def test_reference_runs_untagged_cells_drops_skip_cells_and_types_rows(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("import pandas as pd\nimport numpy as np\noffset = 10"),
        nbformat.v4.new_code_cell(
            "raw = pd.DataFrame({'n': [1, 2], 'city': ['a', 'b']})", metadata={"tags": ["load"]}
        ),
        nbformat.v4.new_code_cell("raise RuntimeError('never run')", metadata={"tags": ["skip"]}),
        nbformat.v4.new_code_cell(
            "%%time\nlabel = np.where(raw['n'] + offset > 11, raw['city'], 'low')",
            metadata={"tags": ["predict"]},
        ),
    ]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    recipe = (
        "raw = __like(raw)\nassert str(raw['n'].dtype) == 'int64'\n{{cells:predict}}\n__out = label"
    )
    rows = [{"city": "x", "n": 5}, {"n": 1, "city": "y"}]
    assert reference.reference_predictions(path, rows, recipe) == ["x", "low"]
