"""`nb2prod check --run`: what only data shows, found without training the model.

Each refusal is checked against `nb2prod build` itself (the independent source): the static
`check` passes, `check --run` refuses with build's exit code and message, and a notebook
`check --run` accepts is one build accepts. The train cells raise, so a passing `check --run`
also shows the model was never fitted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import messy_reference
import pytest
from helpers import CliResult, run_cli, run_cli_process, write_notebook

from nb2prod.errors import NotebookError, ParityError, TrainingError

IMPORTS = (
    "import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
)
LOAD = (
    "rng = np.random.default_rng(0)\n"
    "df = pd.DataFrame({'a': rng.normal(size=60), 'b': rng.normal(size=60),\n"
    "                   'city': rng.choice(['x', 'y', 'z'], size=60)})\n"
    "df['y'] = (df['a'] + df['b'] > 0).astype(int)"
)
TRAIN = "model = LogisticRegression().fit(X[['a', 'b', 'a_scaled']], X['y'])"
PREDICT = "predictions = model.predict(X[['a', 'b', 'a_scaled']])"
#: A train cell check --run must never reach: it fails loudly if it runs.
TRAIN_NEVER = "raise RuntimeError('check --run trained the model')\n" + TRAIN


def notebook(tmp_path: Path, preprocess: str, train: str = TRAIN) -> Path:
    return write_notebook(
        tmp_path / "nb.ipynb",
        [
            (IMPORTS, None),
            (LOAD, ["load"]),
            ("df.describe()", None),
            (preprocess, ["preprocess"]),
            (train, ["train"]),
            (PREDICT, ["predict"]),
        ],
    )


GOOD = "X = df.copy()\nX['a_scaled'] = (X['a'] - X['a'].mean()) / X['a'].std()"

#: Preprocessing that only data breaks: (cells, exit code build refuses with, in its message).
REFUSED = {
    # A statistic over the request's rows that nb2prod does not record: the row's feature
    # depends on the rows around it (the brief's single-row bug).
    "rank over the request": (
        "X = df.copy()\nX['a_scaled'] = X['a'].rank(pct=True)",
        ParityError.exit_code,
        "alone but",
    ),
    # A row label only the training frame has: fails on the sample rows.
    "row label": (
        "X = df.copy()\nX['a_scaled'] = X['a'] / X.loc[0, 'b']",
        NotebookError.exit_code,
        "fails on the sample rows",
    ),
    # Rows filtered out on the serving path: fewer predictions than request rows.
    "drops rows": (
        "X = df[df['a'] > 0].copy()\nX['a_scaled'] = X['a'] * 2",
        NotebookError.exit_code,
        "one per input row",
    ),
}


def first_error(result: CliResult) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("Error:"))


@pytest.mark.parametrize("case", list(REFUSED))
def test_check_run_refuses_what_build_refuses(case: str, tmp_path: Path) -> None:
    preprocess, code, fragment = REFUSED[case]
    build_dir = tmp_path / "build-it"
    built = run_cli(
        "build", notebook(build_dir, preprocess), "--no-docker", "-o", "out", cwd=build_dir
    )
    assert built.returncode == code, built.stderr
    assert fragment in built.stderr

    here = tmp_path / "check-it"
    path = notebook(here, preprocess, TRAIN_NEVER)
    assert run_cli("check", path, cwd=here).returncode == 0  # the code alone looks fine
    ran = run_cli("check", path, "--run", cwd=here)
    assert ran.returncode == code, ran.stderr
    assert fragment in ran.stderr
    assert "Traceback" not in ran.stderr
    # The same finding, named the same way: the cell, its first line and the failing line.
    assert "cell 4 [preprocess]" in first_error(ran)
    if case != "drops rows":  # (build counts predictions; check --run, rows of features)
        # build's batch also holds rows with nulls, so only the numbers may differ
        assert first_error(ran)[:48] == first_error(built)[:48]
    assert sorted(p.name for p in here.iterdir()) == ["nb.ipynb"]  # nothing written

    as_json = run_cli("check", path, "--run", "--json", cwd=here)
    assert as_json.returncode == code
    report = json.loads(as_json.stdout)
    assert report["ok"] is False and report["exit_code"] == code
    assert fragment in report["error"]


def test_check_run_passes_what_build_builds_without_training(tmp_path: Path) -> None:
    build_dir = tmp_path / "build-it"
    built = run_cli("build", notebook(build_dir, GOOD), "--no-docker", "-o", "out", cwd=build_dir)
    assert built.returncode == 0, built.stderr

    path = notebook(tmp_path, GOOD, TRAIN_NEVER)
    ran = run_cli("check", path, "--run", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "stopped before train cell 5" in ran.stdout
    assert "each row's features are the same alone as in the batch" in ran.stdout
    # The statistics preprocess records at training are listed as the build records them.
    assert "X['a'].mean()" in ran.stdout and "X['a'].std()" in ran.stdout

    report = json.loads(run_cli("check", path, "--run", "--json", cwd=tmp_path).stdout)
    run = report["run"]
    assert report["ok"] is True and run["ran"] is True
    assert run["cells"] == [2, 4] and run["stopped_before"] == 5 and run["trained"] == []
    assert run["raw_input"] == "df" and run["output"] == "X" and run["training_rows"] == 60
    assert run["features_single"][0] == 1 and run["features_batch"][0] == run["batch_rows"] == 8
    assert run["compared_alone_and_batch"] is True
    assert {site["expression"] for site in run["recorded"]} == {"X['a'].mean()", "X['a'].std()"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build-it", "nb.ipynb"]


def test_train_cells_run_only_when_preprocess_needs_them(tmp_path: Path) -> None:
    """A scaler fitted in the train cell that preprocess applies: that cell must run, and the
    report says so and why."""
    cells = [
        (IMPORTS + "\nfrom sklearn.preprocessing import StandardScaler", None),
        (LOAD, ["load"]),
        ("def preprocess(frame):\n    return scaler.transform(frame[['a', 'b']])", ["preprocess"]),
        ("scaler = StandardScaler().fit(df[['a', 'b']])", ["train"]),
        ("model = LogisticRegression().fit(preprocess(df), df['y'])", ["train"]),
        ("def predict(model, features):\n    return model.predict(features)", ["predict"]),
    ]
    path = write_notebook(tmp_path / "nb.ipynb", cells)
    report = json.loads(run_cli("check", path, "--run", "--json", cwd=tmp_path).stdout)
    run = report["run"]
    assert run["trained"] == [4] and run["needs"] == {"scaler": 4}
    assert run["stopped_before"] == 5 and run["ran"] is True
    text = run_cli("check", path, "--run", cwd=tmp_path).stdout
    assert "train cell(s) 4 ran too: preprocess reads `scaler` (cell 4)" in text


def test_a_cell_that_fails_names_it(tmp_path: Path) -> None:
    path = notebook(tmp_path, "X = df.copy()\nX['a_scaled'] = X['no_such_column'] * 2", TRAIN_NEVER)
    ran = run_cli("check", path, "--run", cwd=tmp_path)
    assert ran.returncode == TrainingError.exit_code, ran.stderr
    assert "nb2prod check --run failed in cell 4 [preprocess]" in ran.stderr
    assert "X['no_such_column']" in ran.stderr and "KeyError" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_without_a_preprocess_step_it_says_there_is_nothing_to_run(tmp_path: Path) -> None:
    cells = [
        (IMPORTS, None),
        (LOAD, ["load"]),
        ("X = df[['a', 'b']]\nmodel = LogisticRegression().fit(X, df['y'])", ["train"]),
        ("predictions = model.predict(X)", ["predict"]),
    ]
    path = write_notebook(tmp_path / "nb.ipynb", cells)
    ran = run_cli("check", path, "--run", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "nothing to run before training (the notebook has no preprocess step)" in ran.stdout


@pytest.mark.parametrize("name", [*messy_reference.CASES, "kale_titanic"])
def test_the_messy_corpus_passes_as_it_builds(name: str, tmp_path: Path) -> None:
    """Every corpus notebook builds and serves like the notebook (test_messy_parity.py), so
    check --run must accept it: a false refusal here is a bug, as much as a missed one."""
    folder = Path(shutil.copytree(messy_reference.notebook_dir(name), tmp_path / name))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    # A fresh process, as users run it (pytest makes the notebooks' SyntaxWarnings errors).
    ran = run_cli_process("check", folder / f"{name}.ipynb", "--run", "--json", cwd=folder)
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)["run"]
    assert run["seconds"] >= 0 and run["cells"], run
    if run["ran"] and isinstance(run["features_single"], list):
        assert run["features_single"][0] == 1  # one request row, one row of features
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
