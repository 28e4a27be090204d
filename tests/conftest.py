"""Shared fixtures: an isolated HOME, in-memory notebooks, and the golden-file refresh option."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nbformat
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
EXAMPLES_DIR = REPO_DIR / "example_notebooks"
GOLDEN_DIR = TESTS_DIR / "golden"
EXAMPLES = ("iris_function", "wine_script", "diabetes_regression")

#: Snapshots of rendered build contexts (with their own tests/ folder): data, not tests.
collect_ignore = ["golden"]

PYTHON_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

MakeNotebook = Callable[..., Path]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ from the current rendering instead of comparing with it.",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to refresh the golden files (``--update-golden``)."""
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point HOME and DOCKER_CONFIG at a throwaway folder, as cookiecutter's tests do.

    Nothing a test runs (cookiecutter's user config, Docker credentials, pip caches) may read
    or write the real home directory.
    """
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))


def notebook_node(
    cells: Iterable[Any],
    kernelspec: dict[str, Any] | None = PYTHON_KERNELSPEC,
    language_info: dict[str, Any] | None = None,
) -> nbformat.NotebookNode:
    """An nbformat 4 notebook from ``(source, tags)`` pairs or ready-made cells."""
    nb = nbformat.v4.new_notebook()
    if kernelspec is not None:
        nb.metadata["kernelspec"] = dict(kernelspec)
    if language_info is not None:
        nb.metadata["language_info"] = dict(language_info)
    built = []
    for cell in cells:
        if isinstance(cell, nbformat.NotebookNode):
            built.append(cell)
            continue
        source, tags = cell
        metadata = {"tags": list(tags)} if tags else {}
        built.append(nbformat.v4.new_code_cell(source, metadata=metadata))
    nb.cells = built
    return nb


@pytest.fixture
def make_notebook(tmp_path: Path) -> MakeNotebook:
    """Write an in-memory notebook to ``tmp_path/<name>.ipynb`` and return its path.

    ``make_notebook([("x = 1", ["train"]), ("import numpy as np", None)], kernelspec=...)``
    """

    def make(
        cells: Iterable[Any],
        *,
        name: str = "nb",
        kernelspec: dict[str, Any] | None = PYTHON_KERNELSPEC,
        language_info: dict[str, Any] | None = None,
        folder: Path | None = None,
    ) -> Path:
        nb = notebook_node(cells, kernelspec, language_info)
        path = (folder or tmp_path) / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        return path

    return make
