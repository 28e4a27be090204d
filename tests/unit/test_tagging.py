"""``nb2prod tag`` and ``check --json`` on untagged and Kubeflow Kale notebooks.

Every notebook here is written by nbformat into ``tmp_path``; the expected role of each cell
comes from what the cell does (read a CSV, show the data, fit the model, ...), never from
nb2prod's own output. Cell numbers count every cell, markdown included, as Jupyter shows them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import PYTHON_KERNELSPEC, CliResult, run_cli

from nb2prod.build.notebook import read_notebook

CSV = "a,b,y\n0.0,1.0,0\n1.0,0.0,0\n,1.0,0\n3.0,0.0,0\n4.0,1.0,1\n5.0,0.0,1\n6.0,1.0,1\n7.0,0.0,1\n"

IMPORTS = (
    "import pandas as pd\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.metrics import accuracy_score\n"
    "from sklearn.model_selection import train_test_split"
)
LOAD = 'df = pd.read_csv("data.csv")'
HEAD = "df.head()"
CLEAN = 'df["a"] = df["a"].fillna(df["a"].median())'
SPLIT = (
    "X_train, X_test, y_train, y_test = train_test_split(\n"
    '    df[["a", "b"]], df["y"], test_size=0.25, random_state=0\n'
    ")"
)
TRAIN = "model = LogisticRegression().fit(X_train, y_train)"
PREDICT = "preds = model.predict(X_test)"
SCORE = "accuracy_score(y_test, preds)"


def _code(source: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    metadata = {"tags": list(tags)} if tags else {}
    return nbformat.v4.new_code_cell(source, metadata=metadata)


def _write(path: Path, cells: list[nbformat.NotebookNode], **metadata: Any) -> Path:
    """Write ``cells`` as a Python notebook at ``path`` (with data.csv beside it)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(PYTHON_KERNELSPEC)
    nb.metadata.update(metadata)
    nb.cells = cells
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "data.csv").write_text(CSV)
    nbformat.write(nb, path)
    return path


def _number(path: Path, source: str) -> int:
    """The 1-based Jupyter position of the cell whose source is ``source``."""
    cells = nbformat.read(path, as_version=4).cells
    return next(n for n, c in enumerate(cells, start=1) if c.source == source)


def _untagged(path: Path) -> Path:
    """The untagged notebook: markdown, imports, load, look, clean, split, fit, predict, score.

    Cell 5 (``df.head()``) carries another tool's tag and an output; the notebook carries a
    widgets entry: ``tag --write`` must keep all three.
    """
    head = _code(HEAD, ["hide-input"])
    head.execution_count = 3
    head.outputs = [
        nbformat.v4.new_output(
            "execute_result", {"text/plain": "     a    b  y\n0  0.0  1.0  0"}, execution_count=3
        )
    ]
    widgets = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    cells = [
        nbformat.v4.new_markdown_cell("# Churn model\nA first look at the data."),
        _code(IMPORTS),
        _code(LOAD),
        head,
        _code(CLEAN),
        _code(SPLIT),
        _code(TRAIN),
        _code(PREDICT),
        _code(SCORE),
    ]
    return _write(path, cells, widgets=widgets)


#: What each cell of _untagged does, by source: the role a reader would give it.
EXPECTED_ROLES = {
    LOAD: "load",
    HEAD: "skip",
    CLEAN: "preprocess",
    SPLIT: "preprocess",
    TRAIN: "train",
    PREDICT: "predict",
    SCORE: "evaluate",
}


def _json(result: CliResult) -> dict[str, Any]:
    assert result.stdout.strip(), f"no JSON on stdout:\n{result.stderr}"
    return json.loads(result.stdout)


def _without_tags(nb: dict[str, Any]) -> dict[str, Any]:
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("tags", None)
    return nb


# --- 1, 2, 7: an untagged notebook ---------------------------------------------------------------


def test_tag_json_proposes_a_role_per_cell_and_writes_nothing(tmp_path: Path) -> None:
    nb = _untagged(tmp_path / "nb.ipynb")
    before = nb.read_bytes()

    result = run_cli("tag", nb, "--json")

    assert result.returncode == 0, result.stderr
    rows = {row["cell"]: row for row in _json(result)["cells"]}
    for source, role in EXPECTED_ROLES.items():
        number = _number(nb, source)
        assert rows[number]["role"] == role, (source, rows[number])
        assert rows[number]["from"] == "proposed"
    assert 1 not in rows  # the markdown cell is not a code cell
    assert rows[_number(nb, IMPORTS)]["role"] is None  # imports: left untagged, pooled
    assert nb.read_bytes() == before
    assert run_cli("tag", nb).returncode == 0  # the table, too, changes nothing
    assert nb.read_bytes() == before


def test_check_refuses_the_untagged_notebook_naming_the_fit_cell(tmp_path: Path) -> None:
    nb = _untagged(tmp_path / "nb.ipynb")

    result = run_cli("check", nb)

    assert result.returncode == 3
    assert len(result.error_lines) == 1, result.stderr
    error = result.error_lines[0]
    assert "`train`" in error
    assert f"cells calling `.fit(`: {_number(nb, TRAIN)}" in error
    assert "nb2prod tag nb.ipynb" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_json_on_a_refused_notebook(tmp_path: Path) -> None:
    nb = _untagged(tmp_path / "nb.ipynb")

    result = run_cli("check", nb, "--json")

    assert result.returncode == 3
    report = _json(result)
    assert report["ok"] is False
    assert report["exit_code"] == 3
    assert str(_number(nb, TRAIN)) in report["error"]
    assert "nb2prod tag" in report["hint"]
    code_cells = [_number(nb, s) for s in (IMPORTS, *EXPECTED_ROLES)]
    assert [row["cell"] for row in report["cells"]] == code_cells
    assert all(row["role"] is None and not row["runs_in_training"] for row in report["cells"])


# --- 3: tag --write ------------------------------------------------------------------------------


def test_tag_write_adds_only_tags_and_check_then_passes(tmp_path: Path) -> None:
    nb = _untagged(tmp_path / "nb.ipynb")
    original = json.loads(nb.read_text())

    written = run_cli("tag", nb, "--write")

    assert written.returncode == 0, written.stderr
    after = json.loads(nb.read_text())
    assert _without_tags(after) == _without_tags(original)
    assert after["metadata"]["widgets"] == original["metadata"]["widgets"]
    head = after["cells"][_number(nb, HEAD) - 1]
    assert head["outputs"] == original["cells"][_number(nb, HEAD) - 1]["outputs"]
    assert head["metadata"]["tags"] == ["hide-input", "skip"]
    for source, role in EXPECTED_ROLES.items():
        assert role in after["cells"][_number(nb, source) - 1]["metadata"]["tags"], source
    assert "tags" not in after["cells"][_number(nb, IMPORTS) - 1]["metadata"]

    checked = run_cli("check", nb, "--json")

    assert checked.returncode == 0, checked.stderr
    report = _json(checked)
    assert report["ok"] is True
    rows = report["cells"]
    assert [r["cell"] for r in rows] == [_number(nb, s) for s in (IMPORTS, *EXPECTED_ROLES)]
    for row in rows:
        assert set(row) == {"cell", "role", "runs_in_training", "from", "first_line"}
    by_cell = {r["cell"]: r for r in rows}
    for source, role in EXPECTED_ROLES.items():
        row = by_cell[_number(nb, source)]
        assert (row["role"], row["from"]) == (role, "tag")
        assert row["first_line"] == source.splitlines()[0]
        # Training runs every role but skip (predict too: its output is the parity reference).
        assert row["runs_in_training"] is (role != "skip")


# --- 4: predictions only inside a metrics cell ---------------------------------------------------


def test_tag_proposes_a_predict_cell_when_only_metrics_predict(tmp_path: Path) -> None:
    metrics = "print(accuracy_score(y_test, model.predict(X_test)))"
    cells = [
        nbformat.v4.new_markdown_cell("# Model"),
        _code(IMPORTS),
        _code(LOAD),
        _code(SPLIT),
        _code(TRAIN),
        _code(metrics),
    ]
    nb = _write(tmp_path / "metrics.ipynb", cells)

    result = run_cli("tag", nb, "--json")

    assert result.returncode == 0, result.stderr
    report = _json(result)
    assert all(row["role"] != "predict" for row in report["cells"])
    missing = report["predict_missing"]
    assert missing is not None
    # The new cell needs the fitted model and X_test: after the train cell.
    assert _number(nb, TRAIN) <= missing["after_cell"] <= _number(nb, metrics)
    assert missing["source"].startswith("# nb2prod: predict")
    assert "model.predict(X_test)" in missing["source"]


# --- 5: Kubeflow Kale ----------------------------------------------------------------------------

KALE_IMPORTS = IMPORTS + "\n\n\ndef features(frame):\n    return frame[['a', 'b']]"
KALE_PARAMS = "C = 1.0"
KALE_LOAD = 'raw = pd.read_csv("data.csv").dropna()'
KALE_CONTINUE = "X = features(raw)\ny = raw['y']"
KALE_SKIP = "raw.describe()"
KALE_AFTER_SKIP = "X = X * 2.0"
KALE_TRAIN = "model = LogisticRegression(C=C).fit(X, y)"
KALE_PREDICT = "preds = model.predict(X)"
KALE_METRICS = "accuracy = accuracy_score(y, preds)"


def _kale(path: Path, extra_tags: dict[str, list[str]] | None = None) -> Path:
    extra = extra_tags or {}
    tagged = [
        (KALE_IMPORTS, ["imports"]),
        (KALE_PARAMS, ["pipeline-parameters"]),
        (KALE_LOAD, ["block:load"]),
        (KALE_CONTINUE, []),
        (KALE_SKIP, ["skip"]),
        (KALE_AFTER_SKIP, []),
        (KALE_TRAIN, ["block:train", "prev:load"]),
        (KALE_PREDICT, ["block:predict", "prev:train"]),
        (KALE_METRICS, ["pipeline-metrics"]),
    ]
    cells = [nbformat.v4.new_markdown_cell("# Kale pipeline")]
    cells += [_code(src, tags + extra.get(src, [])) for src, tags in tagged]
    return _write(path, cells)


#: Kale's reading: special tags map directly, untagged cells continue the step above them
#: (``skip`` never continues: the cell after it continues the block above the skip).
KALE_ROLES = {
    KALE_IMPORTS: "definitions",
    KALE_PARAMS: "parameters",
    KALE_LOAD: "load",
    KALE_CONTINUE: "load",
    KALE_SKIP: "skip",
    KALE_AFTER_SKIP: "load",
    KALE_TRAIN: "train",
    KALE_PREDICT: "predict",
    KALE_METRICS: "evaluate",
}


def test_kale_tags_are_read_with_kales_continuation_rules(tmp_path: Path) -> None:
    nb = _kale(tmp_path / "kale.ipynb")

    spec = read_notebook(nb)

    by_number = {c.number: c for c in spec.cells}
    for source, role in KALE_ROLES.items():
        if source in (KALE_SKIP, KALE_AFTER_SKIP):
            continue  # below: `skip` is nb2prod's tag too, and the cell after it
        cell = by_number[_number(nb, source)]
        assert (cell.role, cell.origin) == (role, "kale"), source
    skipped = by_number[_number(nb, KALE_SKIP)]
    assert skipped.role == "skip" and skipped.origin in ("tag", "kale")
    load = next(b for b in spec.kale_blocks if b.name == "load")
    assert load.cells[:2] == (_number(nb, KALE_LOAD), _number(nb, KALE_CONTINUE))


def test_the_cell_after_a_kale_skip_continues_the_block_above(tmp_path: Path) -> None:
    nb = _kale(tmp_path / "kale.ipynb")

    spec = read_notebook(nb)

    after = next(c for c in spec.cells if c.number == _number(nb, KALE_AFTER_SKIP))
    assert (after.role, after.origin) == ("load", "kale")
    load = next(b for b in spec.kale_blocks if b.name == "load")
    assert load.cells == tuple(_number(nb, s) for s in (KALE_LOAD, KALE_CONTINUE, KALE_AFTER_SKIP))


def test_an_nb2prod_tag_wins_over_kale(tmp_path: Path) -> None:
    nb = _kale(tmp_path / "kale.ipynb", {KALE_AFTER_SKIP: ["preprocess"]})

    spec = read_notebook(nb)

    by_number = {c.number: c for c in spec.cells}
    mine = by_number[_number(nb, KALE_AFTER_SKIP)]
    assert (mine.role, mine.origin) == ("preprocess", "tag")
    load = by_number[_number(nb, KALE_LOAD)]
    assert (load.role, load.origin) == ("load", "kale")


def test_role_map_changes_a_kale_blocks_role(tmp_path: Path) -> None:
    nb = _kale(tmp_path / "kale.ipynb")

    spec = read_notebook(nb, role_map={"load": "preprocess"})
    by_number = {c.number: c for c in spec.cells}
    for source in (KALE_LOAD, KALE_CONTINUE):
        assert by_number[_number(nb, source)].role == "preprocess", source

    result = run_cli("check", nb, "--json", "--role-map", "load=preprocess")

    assert result.returncode == 0, result.stderr
    blocks = {b["block"]: b for b in _json(result)["kale_blocks"]}
    assert blocks["load"]["role"] == "preprocess"
    assert blocks["load"]["how"] == "--role-map"
    assert blocks["train"]["how"] != "--role-map"


def test_role_map_naming_an_unknown_block_is_a_clean_error(tmp_path: Path) -> None:
    nb = _kale(tmp_path / "kale.ipynb")

    result = run_cli("check", nb, "--role-map", "featureengineering=preprocess")

    assert result.returncode == 2
    assert len(result.error_lines) == 1, result.stderr
    assert "featureengineering" in result.error_lines[0]
    assert "Traceback" not in result.stderr


# --- 6: untagged definition cells, and untagged cells that compute -------------------------------

HELPER = 'PATH = os.path.join("data", "x.csv")\n\n\ndef clean(frame):\n    return frame.dropna()'


def _with_helper(path: Path, between: str | None = None) -> Path:
    """A tagged notebook whose load cell uses an untagged helper cell (and, optionally, whose
    train cell reads ``m`` from the untagged cell ``between``)."""
    train = "model = LogisticRegression().fit(X * m, y)" if between else "model = LR().fit(X, y)"
    cells = [
        nbformat.v4.new_markdown_cell("# With a helper"),
        _code(
            "import os\n\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
        ),
        _code("LR = LogisticRegression"),
        _code(HELPER),
        _code("df = clean(pd.read_csv(PATH))\nX = df[['a', 'b']]\ny = df['y']", ["load"]),
    ]
    if between:
        cells.append(_code(between))
    cells += [_code(train, ["train"]), _code("preds = model.predict(X)", ["predict"])]
    return _write(path, cells)


def test_an_untagged_definition_cell_used_by_tagged_cells_runs(tmp_path: Path) -> None:
    nb = _with_helper(tmp_path / "helper.ipynb")

    spec = read_notebook(nb)

    number = _number(nb, HELPER)
    helper = next(c for c in spec.cells if c.number == number)
    assert (helper.role, helper.origin) == ("definitions", "definition")
    alias = next(c for c in spec.cells if c.number == _number(nb, "LR = LogisticRegression"))
    assert (alias.role, alias.origin) == ("definitions", "definition")
    notice = next(n for n in spec.notices if "only define" in n)
    assert str(number) in notice
    assert "clean" in notice and "PATH" in notice


def test_an_untagged_cell_computing_from_data_is_refused(tmp_path: Path) -> None:
    mean = 'm = df["a"].mean()'
    nb = _with_helper(tmp_path / "mean.ipynb", between=mean)

    result = run_cli("check", nb)

    assert result.returncode == 3
    assert len(result.error_lines) == 1, result.stderr
    error = result.error_lines[0]
    assert f"cell {_number(nb, mean)}" in error
    assert "`m`" in error
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_check_exit_code_is_the_same_with_json(tmp_path: Path, as_json: bool) -> None:
    nb = _with_helper(tmp_path / "mean.ipynb", between='m = df["a"].mean()')

    result = run_cli("check", nb, *(["--json"] if as_json else []))

    assert result.returncode == 3
    if as_json:
        report = _json(result)
        assert (report["ok"], report["exit_code"]) == (False, 3)
        assert "`m`" in report["error"] and report["hint"]
