"""The messy corpus (tests/messy/) served as written: the acceptance target for "the notebook
serves as it is written".

Each corpus notebook is built as it is (``nb2prod build --no-docker``), served, and sent its own
held-out raw rows: all of them in one request, then one row per request. Every prediction must be
the notebook's own for that row, read from the notebook's run in a Jupyter kernel
(``tests/messy_reference.py``, which shares no code with nb2prod). One row at a time matters:
these notebooks compute statistics, encoders and dummy columns over whole frames, so a service
that recomputes them on the request's rows answers differently for a batch of one.

Notebooks nb2prod cannot serve yet are listed in :data:`KNOWN_GAPS` with what stops them; delete
an entry when the feature lands (an entry whose notebook passes shows up as XPASS).

Time: a kernel run, a build and a server start each cost seconds of imports, so the kernels and
the builds run ahead on two background threads (each one process at a time) while the test in
front serves and queries the build it needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import messy_reference
import pytest
from helpers import ServeProcess, assert_serves_like_the_notebook, error_lines, run_cli_process

#: Corpus notebook -> what stops it serving as written today (nb2prod's error, or the mismatch),
#: e.g. "xgboost_booster": "the request is a 422 'Field required' for diagnosis". Each entry marks
#: that notebook's parity test xfail (not strict); delete it once the notebook serves.
KNOWN_GAPS: dict[str, str] = {}

#: One-row requests per notebook: the first rows only, to keep the file within its time budget.
ONE_ROW_REQUESTS = 60
MAKE_MESSY = messy_reference.MESSY_DIR / "make_messy.py"
#: The builds, their training runs and the servers use one BLAS thread, as the oracle's kernel.
ENV = {**os.environ, **messy_reference.SINGLE_THREADED}


def _corpus() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=False))
        if name in KNOWN_GAPS
        else name
        for name in messy_reference.CASES
    ]


def _selected(request: pytest.FixtureRequest, *tests: str) -> list[str]:
    """The corpus notebooks this session runs ``tests`` (all of this module's if none) on."""
    names = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module
        and hasattr(item, "callspec")
        and (not tests or getattr(item, "originalname", item.name) in tests)
    ]
    return list(dict.fromkeys(names))


@pytest.fixture(scope="module", autouse=True)
def _kernel_runs_ahead(request: pytest.FixtureRequest) -> Iterator[None]:
    messy_reference.prefetch(_selected(request))
    yield
    messy_reference.cancel_pending()


@dataclass(frozen=True)
class Build:
    directory: Path
    result: subprocess.CompletedProcess[str]


def _build(name: str, root: Path) -> Build:
    """``nb2prod build --no-docker`` on a copy of the notebook's folder, as a user runs it."""
    folder = Path(shutil.copytree(messy_reference.notebook_dir(name), root / name))
    out = root / "build"
    notebook = folder / f"{name}.ipynb"
    result = run_cli_process("build", notebook, "--no-docker", "-o", out, env=ENV, timeout=600)
    return Build(out, result)


@pytest.fixture(scope="module")
def builds(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Build]]]:
    """The selected notebooks' builds, started in order, one at a time, on a background thread."""
    names = _selected(request, "test_served_predictions_match_the_notebook")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="messy-build") as pool:
        started = {
            name: pool.submit(_build, name, tmp_path_factory.mktemp(f"messy-{name}"))
            for name in names
        }
        try:
            yield started
        finally:
            for future in started.values():
                future.cancel()


def test_make_messy_reports_the_committed_corpus_current() -> None:
    result = subprocess.run(
        [sys.executable, MAKE_MESSY, "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", _corpus())
def test_served_predictions_match_the_notebook(
    name: str, builds: dict[str, Future[Build]], tmp_path: Path
) -> None:
    build = builds[name].result()
    errors = error_lines(build.result.stderr)
    assert build.result.returncode == 0, (
        f"{errors[0] if errors else f'exit {build.result.returncode}'}\n"
        f"{build.result.stdout[-3000:]}\n{build.result.stderr[-3000:]}"
    )
    server = ServeProcess(
        build.directory, tmp_path / "serve.log", env=messy_reference.SINGLE_THREADED
    )
    try:
        expected = messy_reference.reference(name)
        assert_serves_like_the_notebook(
            server, expected.rows, expected.predictions, ONE_ROW_REQUESTS
        )
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(messy_reference.CASES))
def test_corpus_notebook_runs_top_to_bottom(name: str) -> None:
    """Run All in a kernel, skip cells included; and the oracle reads rows and predictions."""
    expected = messy_reference.reference(name)
    assert expected.run_all_error is None, expected.run_all_error
    assert expected.rows and len(expected.rows) == len(expected.predictions)
