"""Dependency hints: what `!pip install` lines tell nb2prod, and what it tells users to install.

``nb2prod check`` prints the hints a notebook's pip lines name (``-r`` files read beside the
notebook, flags and paths left out), and an import that is not installed is answered with the
distribution to install, not the import name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from helpers import CliResult, run_cli, write_notebook

#: A small valid notebook; ``model`` is a number, so predict needs no library.
LOAD = "raw = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0], 'y': [0, 0, 1, 1]})\nX = raw[['a']]"
TRAIN = "model = float(X['a'].mean())"
PREDICT = "def predict(model, features):\n    return features['a'] > model"


def check(folder: Path, pip_lines: str, predict: str = PREDICT, imports: str = "") -> CliResult:
    """``nb2prod check`` on a notebook in ``folder`` whose first cell holds ``pip_lines``."""
    cells = [
        (pip_lines + "\nimport pandas as pd\n" + imports, None),
        (LOAD, ["load"]),
        (TRAIN, ["train"]),
        (predict, ["predict"]),
    ]
    return run_cli("check", write_notebook(folder / "nb.ipynb", cells))


def hints(result: CliResult) -> str:
    assert result.returncode == 0, result.stderr
    return next(line for line in result.stdout.splitlines() if line.startswith("pip hints:"))


# --- what a pip line contributes -------------------------------------------------------------


def test_a_requirements_file_is_read_beside_the_notebook(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "pandas==2.2.0\n# comment\n\n-e .\n--index-url https://example.org/simple\n"
        "scikit-learn >= 1.4 ; python_version >= '3.10'  # why\n./wheels/local.whl\n"
    )
    result = check(tmp_path, "!pip install -r requirements.txt")
    assert hints(result) == "pip hints: pandas==2.2.0, scikit-learn>=1.4"


def test_a_requirements_file_is_found_from_the_notebook_folder_not_the_working_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "project" / "deps").mkdir(parents=True)
    (tmp_path / "project" / "deps" / "reqs.txt").write_text("shap==0.46.0\n")
    result = check(tmp_path / "project", "%pip install --requirement deps/reqs.txt lightgbm")
    assert hints(result) == "pip hints: shap==0.46.0, lightgbm"


def test_a_missing_requirements_file_is_a_notice_not_an_error(tmp_path: Path) -> None:
    result = check(tmp_path, "!pip install -r requirements.txt")
    assert result.returncode == 0, result.stderr
    assert "pip hints:" not in result.stdout
    notices = [line for line in result.stdout.splitlines() if line.startswith("notice:")]
    assert notices == [
        f"notice: `pip install -r requirements.txt`: {tmp_path / 'requirements.txt'} is not "
        "there, so its packages are not dependency hints"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("!pip install -q --upgrade xgboost==2.1.0 ./wheels/x.whl", "xgboost==2.1.0"),
        ("!pip install -i https://example.org/simple 'shap[plots]>=0.45'", "shap[plots]>=0.45"),
        ("!pip install -e ../mylib dist/pkg-1.0.tar.gz catboost .", "catboost"),
        ("!python -m pip install -U lightgbm==4.3.0  # a comment", "lightgbm==4.3.0"),
    ],
)
def test_flags_and_paths_are_not_hints_and_specifiers_are_kept(
    tmp_path: Path, line: str, expected: str
) -> None:
    assert hints(check(tmp_path, line)) == f"pip hints: {expected}"


def test_a_pip_line_of_only_flags_and_paths_gives_no_hints(tmp_path: Path) -> None:
    result = check(tmp_path, "!pip install -e . requirements.txt ../lib ~/src/x.whl")
    assert result.returncode == 0, result.stderr
    assert "pip hints:" not in result.stdout


# --- what to install for an import that is not installed -------------------------------------


def missing(module: str) -> str:
    """``module`` after checking it is not installed here, so the test means what it says."""
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed in this environment")
    return module


def install_hint(folder: Path, module: str, pip_lines: str = "") -> str:
    predict = f"def predict(model, features):\n    return {module}.__name__ and features['a']"
    result = check(folder, pip_lines, predict=predict, imports=f"import {module}")
    assert result.returncode != 0
    assert result.error_lines == [
        f"Error: the notebook imports `{module}`, which is not installed where nb2prod runs"
    ]
    return next(line for line in result.stderr.splitlines() if line.startswith("Hint:"))


@pytest.mark.parametrize(
    ("module", "distribution"),
    [("cv2", "opencv-python-headless"), ("skimage", "scikit-image"), ("fitz", "PyMuPDF")],
)
def test_an_import_name_is_answered_with_its_distribution(
    tmp_path: Path, module: str, distribution: str
) -> None:
    hint = install_hint(tmp_path, missing(module))
    assert hint == f"Hint: Install it (pip install {distribution}) so nb2prod can pin its version."


def test_an_import_outside_the_table_is_its_own_distribution(tmp_path: Path) -> None:
    hint = install_hint(tmp_path, missing("catboost"))
    assert "(pip install catboost)" in hint


def test_the_notebooks_own_pip_line_wins_over_the_table(tmp_path: Path) -> None:
    hint = install_hint(tmp_path, missing("skimage"), "!pip install -q scikit-image==0.24.0")
    assert "(pip install scikit-image==0.24.0)" in hint
    # Another distribution of the same import counts too; an unrelated one does not.
    hint = install_hint(tmp_path, missing("cv2"), "!pip install opencv-python==4.10.0.84")
    assert "(pip install opencv-python==4.10.0.84)" in hint
    hint = install_hint(tmp_path, missing("catboost"), "!pip install cat==1.0 catboost-extras")
    assert "(pip install catboost)" in hint
