"""Sensitive columns at build time: ``# nb2prod: sensitive=a,b`` in the parameters cell and
``--sensitive a,b`` reach the model card's ``sensitive_columns`` (their union), and a name that
is no input column stops the build with the cell and line that named it and the input columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli, write_notebook

from nb2prod.build.notebook import read_notebook
from nb2prod.errors import ConfigError, NotebookError
from nb2prod.models import SensitiveColumn
from nb2prod.runtime.notebook_path import ContractError
from nb2prod.runtime.training import _sensitive_columns

Cells = list[tuple[str, "list[str] | None"]]

IMPORTS = "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
LOAD = (
    "raw = pd.DataFrame({'age': [20.0, 30.0, 40.0, 50.0, 60.0, 70.0],\n"
    "                    'ssn': [11.0, 12.0, 13.0, 14.0, 15.0, 16.0],\n"
    "                    'email': [1.0, 0.0, 1.0, 0.0, 1.0, 0.0],\n"
    "                    'y': [0, 0, 0, 1, 1, 1]})\n"
    "X = raw[['age', 'ssn', 'email']]\n"
    "y = raw['y']"
)
PREPROCESS = "def preprocess(df):\n    return df[['age', 'ssn', 'email']] * 1.0"
TRAIN = "model = LogisticRegression().fit(preprocess(X), y)"
PREDICT = "def predict(model, features):\n    return model.predict(features)"


def cells(parameters: str, *, preprocess_extra: str = "") -> Cells:
    """imports (cell 1), parameters (2), load (3), preprocess (4), train (5), predict (6)."""
    return [
        (IMPORTS, None),
        (parameters, ["parameters"]),
        (LOAD, ["load"]),
        (preprocess_extra + PREPROCESS, ["preprocess"]),
        (TRAIN, ["train"]),
        (PREDICT, ["predict"]),
    ]


def test_the_directive_and_the_flag_are_read_in_order_each_name_once(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "nb.ipynb",
        cells("C = 1.0\n# nb2prod: sensitive=ssn, email\n#nb2prod:sensitive = ssn"),
    )
    spec = read_notebook(path, sensitive=("email", "age"))
    where = "cell 2 [parameters] ('C = 1.0'), line 2"
    assert spec.sensitive_columns == (
        SensitiveColumn("ssn", where),
        SensitiveColumn("email", where),
        SensitiveColumn("age", "--sensitive"),
    )
    assert spec.parameters == {"C": 1.0}  # a comment, not a parameter


def test_no_directive_no_flag_means_none(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "nb.ipynb", cells("C = 1.0\n# nb2prod: strict-ish comment"))
    assert read_notebook(path).sensitive_columns == ()


@pytest.mark.parametrize(
    "line", ["# nb2prod: sensitive", "# nb2prod: sensitive=", "# nb2prod: sensitive=ssn,,email"]
)
def test_a_directive_without_names_is_refused_with_its_line(tmp_path: Path, line: str) -> None:
    path = write_notebook(tmp_path / "nb.ipynb", cells(f"C = 1.0\n\n{line}"))
    with pytest.raises(NotebookError) as caught:
        read_notebook(path)
    assert "cell 2 [parameters]" in str(caught.value) and "line 3" in str(caught.value)
    assert line in str(caught.value)


def test_the_bare_directive_as_a_cells_first_line_says_it_names_no_columns(
    tmp_path: Path,
) -> None:
    """On a cell's first line it reads like a role directive; the error must be about the
    missing columns, not an unknown role."""
    path = write_notebook(tmp_path / "nb.ipynb", cells("# nb2prod: sensitive\nC = 1.0"))
    with pytest.raises(NotebookError) as caught:
        read_notebook(path)
    assert "names no columns" in str(caught.value) and "unknown role" not in str(caught.value)
    assert "sensitive=ssn,email" in (caught.value.hint or "")


def test_the_directive_outside_the_parameters_cell_is_refused(tmp_path: Path) -> None:
    # Silently ignoring it there would log the column its author meant to hide.
    path = write_notebook(
        tmp_path / "nb.ipynb", cells("C = 1.0", preprocess_extra="# nb2prod: sensitive=ssn\n")
    )
    result = run_cli("check", path, cwd=tmp_path)
    assert result.returncode == NotebookError.exit_code, result.stderr
    (error,) = result.error_lines
    assert "cell 4 [preprocess]" in error and "line 1" in error and "parameters cell" in error


def test_an_empty_flag_value_is_a_usage_error(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "nb.ipynb", cells("C = 1.0"))
    result = run_cli("generate", path, "--sensitive", "ssn,", "-o", "out", cwd=tmp_path)
    assert result.returncode == ConfigError.exit_code, result.stderr
    assert "--sensitive" in result.error_lines[0]
    assert not (tmp_path / "out").exists()


def test_generate_writes_the_union_into_the_build_record(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "nb.ipynb", cells("C = 1.0\n# nb2prod: sensitive=ssn"))
    result = run_cli("generate", path, "--sensitive", "email", "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "build.json").read_text())
    assert record["sensitive_columns"] == [
        {"name": "ssn", "source": "cell 2 [parameters] ('C = 1.0'), line 2"},
        {"name": "email", "source": "--sensitive"},
    ]


def test_a_build_puts_the_union_on_the_card(tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "nb.ipynb", cells("C = 1.0\n# nb2prod: sensitive=ssn"))
    result = run_cli(
        "build", path, "--no-docker", "--sensitive", "email", "-o", "out", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "out" / "model" / "model_card.json").read_text())
    assert card["sensitive_columns"] == ["ssn", "email"]


def test_a_typo_stops_the_build_naming_the_cell_line_and_the_input_columns(
    tmp_path: Path,
) -> None:
    directives = "# nb2prod: sensitive=ssn\n# nb2prod: sensitive=emial"
    path = write_notebook(tmp_path / "nb.ipynb", cells(f"C = 1.0\n{directives}"))
    result = run_cli("build", path, "--no-docker", "-o", "out", cwd=tmp_path)
    assert result.returncode == NotebookError.exit_code, result.stderr
    (error,) = result.error_lines
    assert "cell 2 [parameters]" in error and "line 3" in error
    assert "'emial'" in error and "age, ssn, email" in error
    assert not (tmp_path / "out").exists()  # nothing half-built is left


def test_a_sensitive_column_the_model_ignores_stays_on_the_card() -> None:
    # `nb2prod batch --keep ssn` carries an ignored column into the log's records; only the
    # card's sensitive columns keep it out.
    schema = {"columns": [{"name": "age"}, {"name": "email"}], "ignored_columns": ["ssn"]}
    marked = [{"name": "ssn", "source": "--sensitive"}, {"name": "email", "source": "--sensitive"}]
    assert _sensitive_columns(marked, schema) == ["ssn", "email"]
    with pytest.raises(ContractError, match="'emial'"):
        _sensitive_columns([{"name": "emial", "source": "--sensitive"}], schema)


@pytest.mark.parametrize(
    "line",
    ["C = 1.0  # nb2prod: sensitive=ssn", "# NB2PROD: Sensitive=ssn", "#nb2prod:SENSITIVE=ssn"],
)
def test_a_directive_that_would_be_skipped_is_refused(tmp_path: Path, line: str) -> None:
    # Skipping it silently would log the column its author meant to hide.
    path = write_notebook(tmp_path / "nb.ipynb", cells(f"D = 2.0\n{line}"))
    with pytest.raises(NotebookError) as caught:
        read_notebook(path)
    assert "cell 2 [parameters]" in str(caught.value) and "line 2" in str(caught.value)
    assert "nb2prod: sensitive=ssn,email" in (caught.value.hint or "")
