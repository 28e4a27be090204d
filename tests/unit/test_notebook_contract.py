"""The notebook contract, rule by rule, on notebooks built in memory.

Each rule of the notebook contract (the README's "The notebook contract") has a test here;
each refusal is checked twice: in process (the message names the cell, its first line and the
line) and through the CLI (exit code, exactly one ``Error:`` line, no traceback, no output
directory left behind).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON_KERNELSPEC, CliResult, run_cli, write_notebook

from nb2prod import pipeline
from nb2prod.build.notebook import parse_parameter, read_notebook
from nb2prod.build.requirements import resolve_requirements
from nb2prod.errors import ConfigError, NotebookError

Cells = list[tuple[str, "list[str] | None"]]

# --- a small valid notebook, function style ---------------------------------------------

IMPORTS = "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
PARAMETERS = "C = 1.0\nthreshold = 0.5"
LOAD = (
    "raw = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],\n"
    "                    'b': [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],\n"
    "                    'y': [0, 0, 0, 0, 1, 1, 1, 1]})\n"
    "X = raw[['a', 'b']]\n"
    "y = raw['y']"
)
PREPROCESS_FN = "def preprocess(df):\n    return df[['a', 'b']] * scale"
TRAIN = "scale = 2.0\nmodel = LogisticRegression(C=C).fit(preprocess(X), y)"
PREDICT_FN = "def predict(model, features):\n    return model.predict(features)"


def function_cells() -> Cells:
    return [
        (IMPORTS, None),
        (PARAMETERS, ["parameters"]),
        (LOAD, ["load"]),
        (PREPROCESS_FN, ["preprocess"]),
        (TRAIN, ["train"]),
        (PREDICT_FN, ["predict"]),
    ]


def script_cells() -> Cells:
    return [
        (IMPORTS, None),
        (LOAD, ["load"]),
        ("features = raw[['a', 'b']] * 2.0", ["preprocess"]),
        ("model = LogisticRegression().fit(features, raw['y'])", ["train"]),
        ("predictions = model.predict(features)", ["predict"]),
    ]


def replace(cells: Cells, index: int, source: str, tags: list[str] | None) -> Cells:
    cells = list(cells)
    cells[index] = (source, tags)
    return cells


# --- roles: tags and `# nb2prod:` comments -------------------------------------------------


#: The role of each cell of function_cells(), by cell number.
FUNCTION_ROLES = {1: None, 2: "parameters", 3: "load", 4: "preprocess", 5: "train", 6: "predict"}


def roles(spec: Any) -> dict[int, str | None]:
    return {cell.number: cell.role for cell in spec.cells}


def test_roles_come_from_cell_tags(make_notebook: Callable[..., Path]) -> None:
    spec = read_notebook(make_notebook(function_cells()))
    assert roles(spec) == FUNCTION_ROLES
    assert spec.cells_with_role("train")[0].first_line == "scale = 2.0"


def test_roles_come_from_a_first_line_comment(make_notebook: Callable[..., Path]) -> None:
    cells = [
        (IMPORTS, None),
        ("# nb2prod: parameters\nC = 1.0\nthreshold = 0.5", None),
        ("\n#nb2prod:load\n" + LOAD, None),
        ("# nb2prod: preprocess\n" + PREPROCESS_FN, None),
        ("#  nb2prod :  train\n" + TRAIN, None),
        ("# nb2prod: predict\n" + PREDICT_FN, ["predict"]),  # tag and comment agree
    ]
    spec = read_notebook(make_notebook(cells))
    assert [roles(spec)[n] for n in range(2, 7)] == [
        "parameters",
        "load",
        "preprocess",
        "train",
        "predict",
    ]
    # The comment is not code: it does not end up in what runs, and line numbers are kept.
    train = spec.cells_with_role("train")[0]
    assert "nb2prod" not in train.code
    assert train.code.splitlines()[1] == "scale = 2.0"
    assert spec.parameters == {"C": 1.0, "threshold": 0.5}


def test_a_comment_naming_an_unknown_role_is_refused(make_notebook: Callable[..., Path]) -> None:
    cells = replace(function_cells(), 4, "# nb2prod: trian\n" + TRAIN, None)
    with pytest.raises(NotebookError, match=r"cell 5: unknown role 'trian'"):
        read_notebook(make_notebook(cells))


def test_a_cell_with_two_roles_is_refused(make_notebook: Callable[..., Path]) -> None:
    cells = replace(function_cells(), 4, TRAIN, ["train", "evaluate"])
    with pytest.raises(NotebookError, match=r"cell 5 \('scale = 2.0'\) has several roles"):
        read_notebook(make_notebook(cells))


@pytest.mark.parametrize("tags", [["imports"], ["pipeline-parameters"], ["prev:y"], ["Train"]])
def test_unknown_tags_are_ignored(make_notebook: Callable[..., Path], tags: list[str]) -> None:
    # Kale's special tags make no Kale pipeline without a `block:`/`step:` tag (test_kale.py).
    cells = function_cells()
    cells.insert(1, ("unused = 42", tags))
    spec = read_notebook(make_notebook(cells))
    assert roles(spec)[2] is None
    # Cell 1 holds only imports: that is where notebooks keep them, not skipped work.
    assert "untagged cells are not run: 2" in spec.notices


def test_kale_tags_next_to_a_role_keep_the_role(make_notebook: Callable[..., Path]) -> None:
    cells = function_cells()
    cells[0] = (IMPORTS, ["imports"])
    cells[1] = (PARAMETERS, ["pipeline-parameters", "parameters"])
    cells[4] = (TRAIN, ["step:train", "train", "prev:load"])
    spec = read_notebook(make_notebook(cells))
    assert roles(spec) == FUNCTION_ROLES
    # In a Kale pipeline (a `step:` tag), Kale's `pipeline-parameters` are the parameters...
    cells[1] = (PARAMETERS, ["pipeline-parameters"])
    spec = read_notebook(make_notebook(cells, name="kale_only"))
    assert spec.parameters == {"C": 1.0, "threshold": 0.5}
    assert spec.cells[1].origin == "kale" and spec.cells[4].origin == "tag"
    # ...without any step there is no Kale pipeline, and the tag alone is not papermill's.
    cells[4] = (TRAIN, ["train"])
    spec = read_notebook(make_notebook(cells, name="no_steps"))
    assert spec.parameters == {}


def test_untagged_and_skip_cells_are_not_run_and_untagged_are_listed(
    make_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    cells = function_cells()
    cells.insert(3, ("raw.describe()", None))
    cells.insert(4, ("raise SystemExit('never run')", ["skip"]))
    cells.append(("predict(model, preprocess(X))", None))
    cells.append(("", None))  # an empty cell is not worth a notice
    path = make_notebook(cells)
    spec = read_notebook(path)
    assert "untagged cells are not run: 4, 9" in spec.notices  # cell 1: imports only
    context = pipeline.generate(path, tmp_path / "out")
    train_py = (context.path / "train.py").read_text()
    assert "raw.describe()" not in train_py
    assert "never run" not in train_py
    assert "predict(model, preprocess(X))" not in train_py
    checked = run_cli("check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "notice: untagged cells are not run: 4, 9" in checked.stdout


# --- imports -----------------------------------------------------------------------------


def test_imports_are_pooled_from_untagged_cells(make_notebook: Callable[..., Path]) -> None:
    spec = read_notebook(make_notebook(function_cells()))
    statements = {b.statement for b in spec.imports}
    assert {
        "import pandas as pd",
        "from sklearn.linear_model import LogisticRegression",
    } <= statements
    # Imported names are not serving state: they are imported again, not pickled.
    assert "pd" not in spec.serving_reads
    assert "model" not in spec.serving_reads  # predict gets the model as its argument...
    assert "scale" in spec.serving_reads  # ...and preprocess reads the fitted scale


def test_imports_used_by_serving_code_reach_model_code(
    make_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    cells = [("import numpy as np", None), *function_cells()]
    cells[-1] = (
        "def predict(model, features):\n    return np.asarray(model.predict(features))",
        ["predict"],
    )
    context = pipeline.generate(make_notebook(cells), tmp_path / "out")
    model_code = (context.path / "model_code.py").read_text()
    assert "import numpy as np" in model_code
    assert "import pandas as pd" not in model_code  # only training reads pandas
    train_py = (context.path / "train.py").read_text()
    assert "import pandas as pd" in train_py
    assert "from sklearn.linear_model import LogisticRegression" in train_py


def test_unused_imports_are_dropped_with_their_packages(
    make_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    cells = [
        ("import requests\nimport scipy.stats\nimport not_installed_anywhere_xyz", None),
        *function_cells(),
    ]
    path = make_notebook(cells)
    spec = read_notebook(path)
    names = {r.distribution.lower() for r in resolve_requirements(spec)}
    assert "scikit-learn" in names  # sklearn -> scikit-learn via importlib.metadata
    assert "pandas" in names
    assert "requests" not in names  # imported, never used
    # an unused import of a package that is not even installed is no problem either
    context = pipeline.generate(path, tmp_path / "out")
    text = (context.path / "requirements.txt").read_text()
    assert "requests" not in text
    assert "not_installed" not in text
    assert "import requests" not in (context.path / "train.py").read_text()


def test_a_used_import_that_is_not_installed_is_refused(
    make_notebook: Callable[..., Path],
) -> None:
    cells = [("import not_installed_anywhere_xyz as nix", None), *function_cells()]
    cells[-1] = ("def predict(model, features):\n    return nix.go(model, features)", ["predict"])
    with pytest.raises(ConfigError, match="not_installed_anywhere_xyz"):
        pipeline.check(make_notebook(cells))


# --- magics and shell lines ----------------------------------------------------------------


def test_magics_and_shell_lines_are_stripped_and_pip_becomes_hints(
    make_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    cells = [
        ("%matplotlib inline\n!pip install -q lightgbm==4.3.0\n%pip install shap", None),
        *function_cells(),
    ]
    cells[3] = ("%load_ext autoreload\n" + LOAD + "\nfiles = !ls\n!echo done", ["load"])
    cells[5] = ("%%time\n" + TRAIN, ["train"])
    spec = read_notebook(make_notebook(cells))
    assert spec.pip_hints == ("lightgbm==4.3.0", "shap")
    load = spec.cells_with_role("load")[0]
    assert "%" not in load.code and "!" not in load.code
    assert load.code.splitlines()[1].startswith("raw = pd.DataFrame")  # line numbers kept
    train = spec.cells_with_role("train")[0]
    assert "scale = 2.0" in train.code and "%%time" not in train.code
    context = pipeline.generate(make_notebook(cells, name="magic"), tmp_path / "out")
    train_py = (context.path / "train.py").read_text()
    assert "%" not in train_py.replace("%%", "") or "%matplotlib" not in train_py
    for text in ("%matplotlib", "!pip", "%pip", "%%time", "!ls", "!echo", "%load_ext"):
        assert text not in train_py
    compile(train_py, "train.py", "exec")


def test_a_tagged_cell_magic_that_is_not_python_is_refused(
    make_notebook: Callable[..., Path],
) -> None:
    cells = replace(function_cells(), 4, "%%bash\necho training", ["train"])
    with pytest.raises(NotebookError, match=r"cell 5 \[train\] is a %%bash cell"):
        read_notebook(make_notebook(cells))


# --- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("C=0.5", ("C", 0.5)),
        ("n=3", ("n", 3)),
        ("solver='lbfgs'", ("solver", "lbfgs")),
        ("solver=lbfgs", ("solver", "lbfgs")),  # a bare word is a string
        ("layers=[64, 32]", ("layers", [64, 32])),
        ("flag=True", ("flag", True)),
        ("value=None", ("value", None)),
        (" C = 2 ", ("C", 2)),
        ("expr=a=b", ("expr", "a=b")),
    ],
)
def test_parse_parameter(flag: str, expected: tuple[str, Any]) -> None:
    assert parse_parameter(flag) == expected


@pytest.mark.parametrize("flag", ["C", "=1", "1C=2", "a-b=1", ""])
def test_parse_parameter_refuses_what_is_not_name_equals_value(flag: str) -> None:
    with pytest.raises(ConfigError, match="is not name=value"):
        parse_parameter(flag)


def test_parameters_are_literals_and_overrides_are_recorded(
    make_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    cells = replace(
        function_cells(),
        1,
        "C = 1.0\nthreshold: float = 0.5\nname = 'm'\nlayers = (1, 2)",
        ["parameters"],
    )
    path = make_notebook(cells)
    spec = read_notebook(path)
    assert spec.parameters == {"C": 1.0, "threshold": 0.5, "name": "m", "layers": (1, 2)}
    assert spec.parameter_overrides == {}
    spec = read_notebook(path, {"C": 0.25})
    assert spec.parameters["C"] == 0.25
    assert spec.parameter_overrides == {"C": 0.25}
    result = run_cli("generate", str(path), "-o", str(tmp_path / "out"), "-p", "C=0.25")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "build.json").read_text())
    assert record["parameters"]["C"] == 0.25 and record["parameter_overrides"] == {"C": 0.25}
    train_py = (tmp_path / "out" / "train.py").read_text()
    assert "C = 0.25" in train_py.split("C = 1.0", 1)[1]  # the override comes after the default


def test_a_computed_parameter_is_refused(make_notebook: Callable[..., Path]) -> None:
    cells = replace(function_cells(), 1, "C = 1.0\ngamma = 1 / C", ["parameters"])
    with pytest.raises(NotebookError, match=r"cell 2 \[parameters\].*line 2.*literal"):
        read_notebook(make_notebook(cells))


def test_overriding_an_unknown_parameter_is_refused(
    make_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    path = make_notebook(function_cells())
    with pytest.raises(ConfigError, match=r"no parameter 'alpha'.*C, threshold"):
        read_notebook(path, {"alpha": 1})
    assert_refused(
        run_cli("build", str(path), "--no-docker", "-o", "tmp/out", "-p", "alpha=1", cwd=tmp_path),
        ConfigError.exit_code,
        "alpha",
        tmp_path / "tmp" / "out",
    )


# --- the two styles --------------------------------------------------------------------------


def test_function_style_is_detected(make_notebook: Callable[..., Path]) -> None:
    spec = read_notebook(make_notebook(function_cells()))
    assert (spec.preprocess_style, spec.predict_style) == ("function", "function")


def test_script_style_is_detected(make_notebook: Callable[..., Path]) -> None:
    spec = read_notebook(make_notebook(script_cells()))
    assert (spec.preprocess_style, spec.predict_style) == ("script", "script")
    assert "model" in spec.serving_reads
    assert spec.cells_with_role("predict")[0].result == "predictions"


def test_styles_can_be_mixed_and_preprocess_is_optional(
    make_notebook: Callable[..., Path],
) -> None:
    cells = script_cells()
    cells[4] = (PREDICT_FN, ["predict"])
    spec = read_notebook(make_notebook(cells))
    assert (spec.preprocess_style, spec.predict_style) == ("script", "function")
    del cells[2]
    cells[2] = ("model = LogisticRegression().fit(raw[['a', 'b']], raw['y'])", ["train"])
    spec = read_notebook(make_notebook(cells, name="nopre"))
    assert spec.preprocess_style == "none"


def test_a_script_predict_cell_ending_in_an_expression_is_its_prediction(
    make_notebook: Callable[..., Path],
) -> None:
    cells = replace(script_cells(), 4, "model.predict(features)", ["predict"])
    spec = read_notebook(make_notebook(cells))
    predict = spec.cells_with_role("predict")[0]
    assert predict.ends_with_expression and predict.result is None


# --- refusals ---------------------------------------------------------------------------------


@dataclass
class Refusal:
    """A notebook the contract refuses, with what the message must say."""

    write: Callable[[Path], Path]  # folder -> notebook path
    fragments: tuple[str, ...]
    exit_code: int = NotebookError.exit_code
    error: type[Exception] = NotebookError
    extra: dict[str, Any] = field(default_factory=dict)


def _notebook(cells: Cells, **kwargs: Any) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        kernelspec = kwargs.get("kernelspec", PYTHON_KERNELSPEC)
        return write_notebook(folder / "refused.ipynb", cells, kernelspec)

    return write


def _text(text: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "refused.ipynb"
        path.write_text(text)
        return path

    return write


def _without(role: str) -> Cells:
    return [cell for cell in function_cells() if cell[1] != [role]]


NBFORMAT_3 = (
    '{"metadata": {"name": "old"}, "nbformat": 3, "nbformat_minor": 0, '
    '"worksheets": [{"cells": [{"cell_type": "code", "input": "x = 1", "language": "python", '
    '"outputs": [], "metadata": {}}], "metadata": {}}]}'
)
R_KERNEL = {"name": "ir", "display_name": "R", "language": "R"}

REFUSALS: dict[str, Refusal] = {
    "no predict cell": Refusal(
        _notebook(_without("predict")), ("no cell is tagged `predict`", "predict")
    ),
    "no train cell": Refusal(
        _notebook([c for c in function_cells() if c[1] != ["train"]]),
        ("no cell is tagged `train`",),
    ),
    "syntax error": Refusal(
        _notebook(
            replace(
                function_cells(),
                4,
                "scale = 2.0\nmodel = LogisticRegression(C=C).fit(preprocess(X), y\nprint(model)",
                ["train"],
            )
        ),
        ("cell 5", "'scale = 2.0'", "line 2", "syntax error"),
    ),
    "serving reads an untagged cell's name": Refusal(
        _notebook(
            [
                *function_cells()[:3],
                # computed from the data, so not a definition nb2prod would include by itself
                ("offset = raw['a'].mean()", None),
                ("def preprocess(df):\n    return df[['a', 'b']] * scale + offset", ["preprocess"]),
                *function_cells()[4:],
            ]
        ),
        ("`offset`", "cell 4", "\"offset = raw['a'].mean()\"", "cell 5 [preprocess]"),
    ),
    "serving reads a skip cell's name": Refusal(
        _notebook(
            [
                *function_cells()[:5],
                ("labels = ['no', 'yes']", ["skip"]),
                (
                    "def predict(model, features):\n"
                    "    return [labels[i] for i in model.predict(features)]",
                    ["predict"],
                ),
            ]
        ),
        ("`labels`", "cell 6", "labels = ['no', 'yes']", "cell 7 [predict]"),
    ),
    "fit in preprocess": Refusal(
        _notebook(
            replace(
                function_cells(),
                3,
                "def preprocess(df):\n    scaler = StandardScaler()\n"
                "    return scaler.fit(df[['a', 'b']]).transform(df[['a', 'b']])\n"
                "# nb2prod: strict",
                ["preprocess"],
            )
        ),
        ("cell 4 [preprocess]", "'def preprocess(df):'", "line 3", "`.fit(`", "strict"),
    ),
    "fit_transform in script preprocess": Refusal(
        _notebook(
            replace(
                script_cells(),
                2,
                "scaler = StandardScaler()\nfeatures = scaler.fit_transform(raw)\n"
                "# nb2prod: strict",
                ["preprocess"],
            )
        ),
        ("cell 3 [preprocess]", "'scaler = StandardScaler()'", "line 2", "`.fit_transform(`"),
    ),
    "fit in predict": Refusal(
        _notebook(
            replace(
                function_cells(),
                5,
                "def predict(model, features):\n    model.fit(features, [0] * len(features))\n"
                "    return model.predict(features)\n# nb2prod: strict",
                ["predict"],
            )
        ),
        ("cell 6 [predict]", "line 2", "`.fit(`"),
    ),
    "R kernel": Refusal(_notebook(function_cells(), kernelspec=R_KERNEL), ("R", "Python")),
    "invalid JSON": Refusal(_text('{"cells": [,'), ("not valid JSON",)),
    "a python script": Refusal(_text("import pandas as pd\nprint(1)\n"), ("not valid JSON",)),
    "nbformat 3": Refusal(_text(NBFORMAT_3), ("nbformat 3", "4")),
}


def assert_refused(result: CliResult, code: int, fragment: str, out: Path) -> list[str]:
    """Exit ``code``, one ``Error:`` line naming ``fragment``, no traceback, no ``out``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Error" not in result.stdout  # errors go to stderr only
    assert not out.exists(), f"{out} left behind"
    if out.parent.exists():
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
        assert leftovers == [], f"staging left behind: {leftovers}"
    return errors


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_in_process(case: str, tmp_path: Path) -> None:
    refusal = REFUSALS[case]
    path = refusal.write(tmp_path)
    with pytest.raises(refusal.error) as caught:
        pipeline.check(path)
    message = str(caught.value)
    for fragment in refusal.fragments:
        assert fragment in message, (fragment, message)
    assert caught.value.exit_code == refusal.exit_code  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def cli_refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, CliResult]]:
    """``nb2prod build --no-docker -o tmp/out`` on every refused notebook, once per module.

    In process through ``nb2prod.cli.main`` (the real exit path), so one pass over every case
    takes well under a second; each case is still asserted in its own test. A module fixture
    starts before the autouse HOME isolation, hence the explicit HOME here.
    """
    home = tmp_path_factory.mktemp("cli-home")
    env = {"HOME": str(home), "DOCKER_CONFIG": str(home / ".docker")}

    def run(case: str) -> tuple[Path, CliResult]:
        folder = tmp_path_factory.mktemp("refusal")
        path = REFUSALS[case].write(folder)
        args = ("build", str(path), "--no-docker", "-o", "tmp/out")
        return folder, run_cli(*args, cwd=folder, env=env)

    return {case: run(case) for case in REFUSALS}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_through_the_cli(
    case: str, cli_refusals: dict[str, tuple[Path, CliResult]]
) -> None:
    refusal = REFUSALS[case]
    folder, result = cli_refusals[case]
    errors = assert_refused(result, refusal.exit_code, refusal.fragments[0], folder / "tmp" / "out")
    for fragment in refusal.fragments:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.mark.parametrize("case", ["syntax error", "invalid JSON"])
def test_check_and_generate_refuse_like_build(case: str, tmp_path: Path) -> None:
    refusal = REFUSALS[case]
    path = refusal.write(tmp_path)
    checked = run_cli("check", str(path), cwd=tmp_path)
    assert checked.returncode == refusal.exit_code, checked.stderr
    assert checked.stdout == ""
    assert [line for line in checked.stderr.splitlines() if line.startswith("Error:")] != []
    assert "Traceback" not in checked.stderr
    generated = run_cli("generate", str(path), "-o", "tmp/out", cwd=tmp_path)
    assert_refused(generated, refusal.exit_code, refusal.fragments[0], tmp_path / "tmp" / "out")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    path = REFUSALS["syntax error"].write(tmp_path)
    result = run_cli("--debug", "build", str(path), "--no-docker", "-o", "tmp/out", cwd=tmp_path)
    assert result.returncode == NotebookError.exit_code
    assert "Traceback" in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] != []
    assert not (tmp_path / "tmp" / "out").exists()


def test_a_missing_notebook_is_refused(tmp_path: Path) -> None:
    result = run_cli("build", "nope.ipynb", "--no-docker", "-o", "tmp/out", cwd=tmp_path)
    assert_refused(result, NotebookError.exit_code, "nope.ipynb", tmp_path / "tmp" / "out")


# The one refusal that needs training: the predict step fails on the sample rows. Here the
# predict function reads a column that only the training frame has (`y`), not the features.
FAILS_ON_SAMPLE_ROWS = [
    (IMPORTS, None),
    (LOAD, ["load"]),
    ("def preprocess(df):\n    return df[['a', 'b']]", ["preprocess"]),
    ("model = LogisticRegression().fit(preprocess(X), y)", ["train"]),
    (
        "def predict(model, features):\n"
        "    weights = features['y']\n"
        "    return model.predict(features[['a', 'b']]) * weights",
        ["predict"],
    ),
]


def test_a_predict_step_that_fails_on_the_sample_rows_is_refused(tmp_path: Path) -> None:
    path = _notebook(FAILS_ON_SAMPLE_ROWS)(tmp_path)
    result = run_cli("build", str(path), "--no-docker", "-o", "tmp/out", cwd=tmp_path)
    errors = assert_refused(result, NotebookError.exit_code, "predict", tmp_path / "tmp" / "out")
    message = errors[0]
    assert "sample rows" in message, message
    assert "KeyError" in message and "'y'" in message, message
    # The cell, by number and first line, as for every other refusal.
    assert "cell 5" in message, message
    assert "def predict(model, features):" in message, message
    # ...and the line that failed.
    assert "weights = features['y']" in message, message


@pytest.mark.parametrize("case", list(REFUSALS))
def test_check_json_reports_each_refusal_without_training(case: str, tmp_path: Path) -> None:
    """`check --json` finds what `build` refuses, without a training run: the same exit code,
    the error in JSON on stdout, and the cells as tagged."""
    refusal = REFUSALS[case]
    path = refusal.write(tmp_path)
    result = run_cli("check", str(path), "--json", cwd=tmp_path)
    assert result.returncode == refusal.exit_code, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["exit_code"] == refusal.exit_code
    assert refusal.fragments[0] in report["error"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model").exists() and not (tmp_path / "build").exists()
