"""The example notebooks are real, tagged notebooks, committed as their generator writes them.

Running them in a Jupyter kernel, and the reference oracle built on that, is in
tests/integration/test_example_kernels.py.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import nbformat
import pytest
from helpers import EXAMPLES, EXAMPLES_DIR, example_notebook
from reference import cell_tags

ROLES = {"parameters", "load", "preprocess", "train", "evaluate", "predict", "skip"}
KALE_TAGS = {"imports", "pipeline-parameters"}


def _make_examples() -> ModuleType:
    """example_notebooks/make_examples.py, imported by path (that folder is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "nb2prod_make_examples", EXAMPLES_DIR / "make_examples.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tags(nb: nbformat.NotebookNode) -> list[str]:
    return [tag for cell in nb.cells for tag in cell_tags(cell)]


def test_committed_notebooks_match_their_generator() -> None:
    make_examples = _make_examples()
    assert sorted(make_examples.EXAMPLES) == sorted(EXAMPLES)
    for name in EXAMPLES:
        committed = example_notebook(name).read_text(encoding="utf-8")
        assert committed == make_examples.render(name), (
            f"{name}.ipynb is stale: run python example_notebooks/make_examples.py"
        )


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_a_tagged_python_notebook(name: str) -> None:
    nb = nbformat.read(example_notebook(name), as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.language_info.name == "python"
    tags = _tags(nb)
    assert tags.count("train") == 1
    assert tags.count("predict") == 1
    assert set(tags) <= ROLES | KALE_TAGS
    assert any(cell.cell_type == "markdown" for cell in nb.cells)
    assert any(not cell_tags(c) for c in nb.cells if c.cell_type == "code")
