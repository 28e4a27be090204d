"""Record and replay through the whole build: a skewed notebook is refused before a build
directory appears, and a notebook whose statistics nb2prod records serves one row as it serves
the batch, both equal to the notebook's own predictions."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from helpers import ServeProcess, run_cli, write_notebook
from sklearn.linear_model import LogisticRegression

pytestmark = pytest.mark.slow

ROWS = 80


def _data(folder: Path) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "age": rng.normal(35, 10, ROWS).round(),
            "sex": rng.choice(["male", "female"], ROWS),
            "fare": rng.gamma(2.0, 15.0, ROWS).round(2),
        }
    )
    frame.loc[::5, "age"] = np.nan
    frame["y"] = ((frame["sex"] == "female") ^ (frame["fare"] > 40)).astype(int)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "people.csv", index=False)
    return frame


def _notebook(folder: Path, impute: str) -> Path:
    return write_notebook(
        folder / "people.ipynb",
        [
            ("import pandas as pd\nfrom sklearn.linear_model import LogisticRegression", []),
            ("df = pd.read_csv('people.csv')", ["load"]),
            (
                f"df['age'] = {impute}\n"
                "df['sex'] = df['sex'].map({'male': 0, 'female': 1})\n"
                "X = df[['age', 'sex', 'fare']]",
                ["preprocess"],
            ),
            ("model = LogisticRegression(max_iter=500).fit(X, df['y'])", ["train"]),
            ("predictions = model.predict(X)", ["predict"]),
        ],
    )


def test_a_row_statistic_is_recorded_and_one_row_serves_as_the_batch(tmp_path: Path) -> None:
    raw = _data(tmp_path / "nb")
    path = _notebook(tmp_path / "nb", "df['age'].fillna(df['age'].mean())")
    built = run_cli("build", "--no-docker", path, "-o", tmp_path / "out", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert f"recorded: cell 3, line 1: df['age'].mean() -> {raw['age'].mean():.4g}" in built.stderr
    card = json.loads((tmp_path / "out" / "model" / "model_card.json").read_text())
    assert [site["expression"] for site in card["recorded"]] == ["df['age'].mean()"]

    # Independent expectation: the notebook's code run by hand on all the training rows.
    features = raw.assign(
        age=raw["age"].fillna(raw["age"].mean()),
        sex=raw["sex"].map({"male": 0, "female": 1}),
    )[["age", "sex", "fare"]]
    expected = LogisticRegression(max_iter=500).fit(features, raw["y"]).predict(features).tolist()

    rows = json.loads(raw.drop(columns="y").to_json(orient="records"))
    service = ServeProcess(tmp_path / "out", tmp_path / "serve.log")
    try:
        batch = httpx.post(f"{service.url}/predict", json={"instances": rows}, timeout=30)
        assert batch.status_code == 200, batch.text
        assert batch.json()["predictions"] == expected
        for row, want in list(zip(rows, expected, strict=True))[::4]:
            single = httpx.post(f"{service.url}/predict", json={"instances": [row]}, timeout=30)
            assert single.status_code == 200, single.text
            assert single.json()["predictions"] == [want]
    finally:
        service.close()


def test_a_batch_dependent_line_is_refused_with_exit_6_and_nothing_left(tmp_path: Path) -> None:
    _data(tmp_path / "nb")
    path = _notebook(tmp_path / "nb", "df['age'].fillna(df['fare'].rank())")
    result = run_cli("build", "--no-docker", path, "-o", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 6, result.stderr
    errors = result.error_lines
    assert len(errors) == 1, result.stderr
    assert "alone" in errors[0] and "batch" in errors[0]
    assert "cell 3, line 1: df['fare'].rank()" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_preprocessing_that_drops_null_rows_makes_those_columns_required(tmp_path: Path) -> None:
    raw = _data(tmp_path / "nb")
    path = write_notebook(
        tmp_path / "nb" / "dropna.ipynb",
        [
            ("import pandas as pd\nfrom sklearn.linear_model import LogisticRegression", []),
            ("df = pd.read_csv('people.csv')", ["load"]),
            (
                "df = df.dropna()\ndf['sex'] = df['sex'].map({'male': 0, 'female': 1})\n"
                "X = df[['age', 'sex', 'fare']]",
                ["preprocess"],
            ),
            ("model = LogisticRegression(max_iter=500).fit(X, df['y'])", ["train"]),
            ("predictions = model.predict(X)", ["predict"]),
        ],
    )
    built = run_cli("build", "--no-docker", path, "-o", tmp_path / "out", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    card = json.loads((tmp_path / "out" / "model" / "model_card.json").read_text())
    assert {c["name"]: c["nullable"] for c in card["input_schema"]["columns"]}["age"] is False
    assert card["input_schema"]["ignored_columns"] == ["y"]  # filled, so dropna keeps the rows
    complete = raw.dropna()
    row = json.loads(complete.drop(columns="y").iloc[[0]].to_json(orient="records"))[0]
    service = ServeProcess(tmp_path / "out", tmp_path / "serve.log")
    try:
        kept = httpx.post(f"{service.url}/predict", json={"instances": [row]}, timeout=30)
        assert kept.status_code == 200, kept.text
        refused = httpx.post(
            f"{service.url}/predict", json={"instances": [row, {**row, "age": None}]}, timeout=30
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["loc"] == ["body", "instances", 1, "age"]
    finally:
        service.close()


def test_function_style_replays_the_call_whose_features_the_notebook_predicted(
    tmp_path: Path,
) -> None:
    raw = _data(tmp_path / "nb")
    path = write_notebook(
        tmp_path / "nb" / "functions.ipynb",
        [
            ("import pandas as pd\nfrom sklearn.linear_model import LogisticRegression", []),
            (
                "df = pd.read_csv('people.csv')\ntrain, test = df.iloc[:60], df.iloc[60:]",
                ["load"],
            ),
            (
                "def preprocess(frame):\n"
                "    frame = frame.copy()\n"
                "    frame['age'] = frame['age'].fillna(frame['age'].median())\n"
                "    frame['sex'] = frame['sex'].map({'male': 0, 'female': 1})\n"
                "    return frame[['age', 'sex', 'fare']]",
                ["preprocess"],
            ),
            (
                "model = LogisticRegression(max_iter=500).fit(preprocess(train), train['y'])",
                ["train"],
            ),
            (
                "def predict(model, features):\n    return model.predict_proba(features)[:, 1]\n\n"
                "held_out = predict(model, preprocess(test))",
                ["predict"],
            ),
        ],
    )
    built = run_cli("build", "--no-docker", path, "-o", tmp_path / "out", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    train, test = raw.iloc[:60], raw.iloc[60:]
    assert f"-> {test['age'].median():.4g}" in built.stderr  # the call predict() was given
    # The raw input, its fingerprint and drift reference: the rows the model was fitted on (the
    # first call), not the held-out rows the notebook transformed last.
    card = json.loads((tmp_path / "out" / "model" / "model_card.json").read_text())
    assert card["data_fingerprint"]["rows"] == len(train) == 60

    def features(frame: pd.DataFrame, median: float) -> pd.DataFrame:
        out = frame.assign(age=frame["age"].fillna(median))
        return out.assign(sex=out["sex"].map({"male": 0, "female": 1}))[["age", "sex", "fare"]]

    model = LogisticRegression(max_iter=500).fit(features(train, train["age"].median()), train["y"])
    expected = model.predict_proba(features(test, test["age"].median()))[:, 1].tolist()
    rows = json.loads(test.drop(columns="y").to_json(orient="records"))
    service = ServeProcess(tmp_path / "out", tmp_path / "serve.log")
    try:
        for row, want in zip(rows, expected, strict=True):
            got = httpx.post(f"{service.url}/predict", json={"instances": [row]}, timeout=30)
            assert got.status_code == 200, got.text
            assert abs(got.json()["predictions"][0] - want) <= 1e-9 * max(1.0, abs(want))
    finally:
        service.close()
