"""Shared fixtures: an isolated HOME, in-memory notebooks, and the golden-file refresh option.

Plain helpers (paths, the example list, running the CLI, serving a build) live in helpers.py,
where module-scoped fixtures and module-level tables can use them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON_KERNELSPEC, write_notebook

#: Snapshots of rendered build contexts (with their own tests/ folder): data, not tests.
collect_ignore = ["golden"]
#: The Cloud Run tests' ``build_dir`` (built and pushed), ``fake`` (the API) and ``jobs_fake``
#: (the API with jobs) fixtures.
pytest_plugins = ["fake_cloudrun", "fake_cloudrun_jobs"]

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
        return write_notebook(
            (folder or tmp_path) / f"{name}.ipynb", cells, kernelspec, language_info
        )

    return make
