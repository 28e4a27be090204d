"""The untagged corpus (tests/untagged/) from notebook as written to served predictions, the way a
user gets there: ``nb2prod tag NB --write``, ``nb2prod check NB --json``, ``nb2prod build NB
--no-docker``, then ``nb2prod serve``.

The Kubeflow Kale notebook is built twice: as written (Kale's tags are read directly, no tagging
step) and after ``tag --write``. For ``attrition_mixed``, whose only predictions sit in a cell
that also prints metrics, ``tag --json`` must offer the missing predict cell; the test adds it
with nbformat after the cell it names, as a user would, before writing the tags.

Every served prediction, for all held-out rows in one request and for the first rows one per
request, must be the ORIGINAL notebook's own, read from its run in a Jupyter kernel
(``tests/messy_reference.py``, which shares no code with nb2prod). Kernels and the
tag/check/build steps run ahead on two background threads while the test in front serves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import messy_reference
import nbformat
import pytest
from helpers import ServeProcess, assert_serves_like_the_notebook, error_lines, run_cli_process

#: One-row requests per notebook: the first rows only, to keep the file within its time budget.
ONE_ROW_REQUESTS = 30
MAKE_UNTAGGED = messy_reference.UNTAGGED_DIR / "make_untagged.py"
ENV = {**os.environ, **messy_reference.SINGLE_THREADED}
#: Scenario -> (corpus notebook, whether ``nb2prod tag --write`` runs first).
SCENARIOS: dict[str, tuple[str, bool]] = {
    "kale_titanic-as-written": ("kale_titanic", False),
    **{name: (name, True) for name in messy_reference.UNTAGGED_CASES},
}
#: The corpus notebook whose predictions are only in a mixed cell: ``tag`` must offer one.
PREDICT_MISSING = "attrition_mixed"


def _selected_scenarios(request: pytest.FixtureRequest) -> list[str]:
    """The scenarios this session runs the serving test on, in collection order."""
    return [
        item.callspec.params["scenario"]
        for item in request.session.items
        if item.module is request.module
        and hasattr(item, "callspec")
        and "scenario" in item.callspec.params
    ]


def _selected_notebooks(request: pytest.FixtureRequest) -> list[str]:
    names = [
        item.callspec.params.get("name") or SCENARIOS[item.callspec.params["scenario"]][0]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    return list(dict.fromkeys(names))


@pytest.fixture(scope="module", autouse=True)
def _kernel_runs_ahead(request: pytest.FixtureRequest) -> Iterator[None]:
    messy_reference.prefetch(_selected_notebooks(request))
    yield
    messy_reference.cancel_pending()


@dataclass
class Prepared:
    """What the CLI said on the way from the notebook as written to a build directory."""

    notebook: Path
    out: Path
    proposed: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    #: Why the way stopped before a build directory: the step and what the CLI printed.
    failure: str | None = None
    steps: list[str] = field(default_factory=list)


def _cli(prepared: Prepared, *args: str | Path) -> subprocess.CompletedProcess[str] | None:
    """Run one CLI step; on a non-zero exit record the failure and return None."""
    result = run_cli_process(*args, env=ENV, timeout=600)
    step = " ".join(arg.name if isinstance(arg, Path) else arg for arg in args)
    prepared.steps.append(step)
    if result.returncode != 0:
        errors = error_lines(result.stderr)
        prepared.failure = (
            f"`nb2prod {step}` exited {result.returncode}: "
            f"{errors[0] if errors else ''}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
        return None
    return result


def _json_of(prepared: Prepared, result: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as err:
        prepared.failure = (
            f"`nb2prod {prepared.steps[-1]}` printed no JSON ({err}):\n{result.stdout}"
        )
        return None


def add_predict_cell(notebook: Path, proposal: dict[str, Any]) -> None:
    """Insert ``tag --json``'s missing predict cell after cell ``after_cell`` (counted from 1
    over all cells), as a user would with nbformat."""
    nb = nbformat.read(notebook, as_version=4)
    cell = nbformat.v4.new_code_cell(proposal["source"])
    nb.cells.insert(int(proposal["after_cell"]), cell)
    nbformat.write(nb, notebook)


def _prepare(scenario: str, root: Path) -> Prepared:
    """Copy the notebook's folder, tag it (unless Kale as written), check and build it."""
    name, tag_first = SCENARIOS[scenario]
    folder = Path(shutil.copytree(messy_reference.notebook_dir(name), root / name))
    prepared = Prepared(folder / f"{name}.ipynb", root / "build")
    if tag_first:
        result = _cli(prepared, "tag", prepared.notebook, "--json")
        if result is None or (proposed := _json_of(prepared, result)) is None:
            return prepared
        prepared.proposed = proposed
        if proposed.get("predict_missing"):
            add_predict_cell(prepared.notebook, proposed["predict_missing"])
        if _cli(prepared, "tag", prepared.notebook, "--write") is None:
            return prepared
    result = _cli(prepared, "check", prepared.notebook, "--json")
    if result is None or (check := _json_of(prepared, result)) is None:
        return prepared
    prepared.check = check
    _cli(prepared, "build", prepared.notebook, "--no-docker", "-o", prepared.out)
    return prepared


@pytest.fixture(scope="module")
def prepared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Prepared]]]:
    """The selected scenarios' tag/check/build runs, in order, one at a time, in the background."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="untagged-build") as pool:
        started = {
            scenario: pool.submit(_prepare, scenario, tmp_path_factory.mktemp(scenario))
            for scenario in _selected_scenarios(request)
        }
        try:
            yield started
        finally:
            for future in started.values():
                future.cancel()


def _code_cell_numbers(notebook: Path) -> set[int]:
    nb = nbformat.read(notebook, as_version=4)
    return {n for n, cell in enumerate(nb.cells, start=1) if cell.cell_type == "code"}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_untagged_notebook_serves_its_own_predictions(
    scenario: str, prepared: dict[str, Future[Prepared]], tmp_path: Path
) -> None:
    name = SCENARIOS[scenario][0]
    ready = prepared[scenario].result()
    if ready.proposed is not None:
        offered = ready.proposed.get("predict_missing")
        if name == PREDICT_MISSING:
            assert offered, f"tag --json offered no predict cell:\n{ready.proposed}"
        else:
            assert offered is None, f"a predict cell offered where one exists: {offered}"
    assert ready.failure is None, ready.failure
    assert ready.check is not None and ready.check["ok"] is True, ready.check
    listed = {entry["cell"] for entry in ready.check["cells"]}
    missing = _code_cell_numbers(ready.notebook) - listed
    assert not missing, f"check --json leaves out code cells {sorted(missing)}"
    server = ServeProcess(ready.out, tmp_path / "serve.log", env=messy_reference.SINGLE_THREADED)
    try:
        expected = messy_reference.reference(name)
        assert_serves_like_the_notebook(
            server, expected.rows, expected.predictions, ONE_ROW_REQUESTS
        )
    finally:
        server.close()


def _without_tags(notebook: dict[str, Any]) -> dict[str, Any]:
    """The notebook JSON with every cell's ``metadata.tags`` removed."""
    stripped = json.loads(json.dumps(notebook))
    for cell in stripped["cells"]:
        cell.get("metadata", {}).pop("tags", None)
    return stripped


@pytest.mark.parametrize("name", list(messy_reference.UNTAGGED_CASES))
def test_tag_write_changes_only_the_tags(name: str, tmp_path: Path) -> None:
    """``tag --write`` adds the roles ``tag --json`` proposed, and changes nothing else."""
    notebook = Path(shutil.copy(messy_reference.notebook_dir(name) / f"{name}.ipynb", tmp_path))
    before = json.loads(notebook.read_text(encoding="utf-8"))
    proposed = run_cli_process("tag", notebook, "--json", env=ENV, timeout=300)
    assert proposed.returncode == 0, proposed.stderr
    written = run_cli_process("tag", notebook, "--write", env=ENV, timeout=300)
    assert written.returncode == 0, written.stderr
    after = json.loads(notebook.read_text(encoding="utf-8"))
    assert _without_tags(after) == _without_tags(before)
    roles = {entry["cell"]: entry["role"] for entry in json.loads(proposed.stdout)["cells"]}
    for number, cell in enumerate(after["cells"], start=1):
        old = before["cells"][number - 1].get("metadata", {}).get("tags", [])
        new = cell.get("metadata", {}).get("tags", [])
        assert set(old) <= set(new), (number, old, new)
        role = roles.get(number)
        if role is not None:
            assert role in new, f"cell {number}: proposed {role!r}, wrote {new}"
        elif cell["cell_type"] == "code":
            assert new == old, f"cell {number}: no role proposed, but wrote {new}"


def test_make_untagged_reports_the_committed_corpus_current() -> None:
    result = subprocess.run(
        [sys.executable, MAKE_UNTAGGED, "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", list(messy_reference.UNTAGGED_CASES))
def test_hand_tags_name_every_code_cell_and_only_those(name: str) -> None:
    folder = messy_reference.notebook_dir(name)
    hand = json.loads((folder / "hand_tags.json").read_text(encoding="utf-8"))["cells"]
    assert {int(number) for number in hand} == _code_cell_numbers(folder / f"{name}.ipynb")
    roles = {"parameters", "load", "preprocess", "train", "evaluate", "predict", "skip", None}
    assert set(hand.values()) <= roles
    assert "train" in hand.values()
    # The mixed-cell notebook has no cell a person would tag predict: tag must offer one.
    assert ("predict" in hand.values()) is (name != PREDICT_MISSING)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(messy_reference.UNTAGGED_CASES))
def test_untagged_notebook_runs_top_to_bottom(name: str) -> None:
    """Run All in a kernel, every cell; and the oracle reads rows and predictions."""
    expected = messy_reference.reference(name)
    assert expected.run_all_error is None, expected.run_all_error
    assert expected.rows and len(expected.rows) == len(expected.predictions)
