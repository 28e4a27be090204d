"""The build's rewrite of fits and row statistics in serving cells (nb2prod/build/sites.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import run_cli, write_notebook

from nb2prod.build.sites import ALIAS, instrument
from nb2prod.models import Cell, ImportBinding

IMPORTS = (
    ImportBinding("np", "import numpy as np", "numpy", 1),
    ImportBinding("pd", "import pandas as pd", "pandas", 1),
)
ROLES = frozenset({"preprocess", "predict"})


def rewrite(code: str, role: str = "preprocess", strict: bool = False):  # type: ignore[no-untyped-def]
    cell = Cell(number=4, role=role, source=code, code=code, strict=strict)
    return instrument((cell,), IMPORTS, ROLES)


def test_statistics_fits_dummies_and_bins_become_numbered_sites_on_their_own_lines() -> None:
    code = (
        "for dataset in combine:\n"
        "    dataset['Age'] = dataset['Age'].fillna(dataset['Age'].median())\n"
        "for col in cols:\n"
        "    df[col] = LabelEncoder().fit_transform(df[col])  # encode\n"
        "X = pd.get_dummies(df, drop_first=True)\n"
        "df['band'] = pd.qcut(df['Fare'], 4)\n"
        "m = np.mean(df['a'])\n"
    )
    result = rewrite(code)
    rewritten = result.code[4]
    ast.parse(rewritten)
    assert len(rewritten.splitlines()) == len(code.splitlines())  # line numbers kept
    assert "# encode" in rewritten  # comments kept
    assert [(s.line, s.kind) for s in result.sites] == [
        (2, "statistic"),
        (4, "fit"),
        (5, "dummy columns"),
        (6, "bins"),
        (7, "statistic"),
    ]
    assert result.sites[0].describe() == "cell 4, line 2: dataset['Age'].median()"
    assert f"{ALIAS}.stat(1, lambda: dataset['Age'], \"median\")" in rewritten


def test_row_wise_code_runs_as_written() -> None:
    code = (
        "df['n'] = df[cols].sum(axis=1) + df['name'].str.count(' ')\n"
        "df['m'] = df[cols].max(1)\n"
        "df['t'] = df['name'].map(lambda n: n.count('a') + df['age'].max())\n"
        "df['r'] = df.apply(lambda row: row['a'] + row['b'], axis=1)\n"
        "df['c'] = pd.cut(df['age'], bins=[0, 18, 99])\n"
        "class Adder:\n"
        "    def fit(self, X):\n"
        "        self.mean_ = X.mean()\n"
        "        return self\n"
    )
    result = rewrite(code)
    assert result.sites == ()
    assert result.code[4] == code


def test_a_column_wise_apply_is_a_site_the_runtime_keeps_only_if_it_reduces() -> None:
    result = rewrite("skewed = train[numeric].apply(lambda x: skew(x.dropna()))\n")
    assert [(s.kind, s.line) for s in result.sites] == [("column-wise apply", 1)]
    assert f'{ALIAS}.stat(1, lambda: train[numeric], "apply", lambda x:' in result.code[4]


def test_a_named_group_transform_is_a_group_statistic() -> None:
    code = (
        "df['Age'] = df['Age'].fillna(df.groupby(['Sex', 'Pclass'])['Age'].transform('median'))\n"
    )
    result = rewrite(code)
    assert [s.kind for s in result.sites] == ["statistic per group"]
    assert (
        f"{ALIAS}.group_stat(1, df.groupby(['Sex', 'Pclass'])['Age'], 'median')" in (result.code[4])
    )
    assert rewrite("df['a'] = df.groupby('k')['a'].transform(lambda x: x - x.mean())\n").sites == ()


def test_strict_cells_and_other_roles_are_left_alone() -> None:
    code = "df['a'] = df['a'].fillna(df['a'].mean())\n"
    assert rewrite(code, strict=True).sites == ()
    assert rewrite(code, role="train").sites == ()
    assert len(rewrite(code, role="predict").sites) == 1


def test_a_label_argument_is_the_target() -> None:
    result = rewrite("dtest = xgb.DMatrix(X_test, label=y_test)\n")
    assert [(s.kind, s.expression) for s in result.sites] == [("target", "y_test")]
    assert f"label={ALIAS}.target(1, lambda: y_test)" in result.code[4]


def _titanic_like(tmp_path: Path, preprocess: str) -> Path:
    (tmp_path / "nb").mkdir()
    return write_notebook(
        tmp_path / "nb" / "nb.ipynb",
        [
            ("import pandas as pd\nfrom sklearn.linear_model import LogisticRegression", []),
            ("df = pd.DataFrame({'age': [1.0, None, 3.0], 'y': [0, 1, 0]})", ["load"]),
            (preprocess, ["preprocess"]),
            ("model = LogisticRegression().fit(X, df['y'])", ["train"]),
            ("predictions = model.predict(X)", ["predict"]),
        ],
    )


def test_check_lists_what_training_records_with_cell_and_line(tmp_path: Path) -> None:
    path = _titanic_like(
        tmp_path, "X = df[['age']].copy()\nX['age'] = X['age'].fillna(X['age'].mean())"
    )
    result = run_cli("check", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "recorded at training, replayed at serving (1):" in result.stdout
    assert "cell 3, line 2: X['age'].mean()  [statistic]" in result.stdout
    strict = run_cli("check", "--strict", path, cwd=tmp_path)
    assert strict.returncode == 0, strict.stderr
    assert "replayed at serving: nothing" in strict.stdout


def test_strict_restores_the_refusal_of_a_fit_on_the_serving_path(tmp_path: Path) -> None:
    path = _titanic_like(
        tmp_path,
        "from sklearn.impute import SimpleImputer\nX = SimpleImputer().fit_transform(df[['age']])",
    )
    assert run_cli("check", path, cwd=tmp_path).returncode == 0
    for args in (("check", "--strict", path), ("build", "--strict", "--no-docker", path)):
        result = (
            run_cli(*args, "-o", "out", cwd=tmp_path)
            if args[0] == "build"
            else run_cli(*args, cwd=tmp_path)
        )
        assert result.returncode == 3, result.stderr
        errors = result.error_lines
        assert len(errors) == 1 and "cell 3 [preprocess]" in errors[0] and "line 2" in errors[0]
        assert "`.fit_transform(`" in errors[0] and "strict" in errors[0]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
