"""Write the example notebooks that nb2prod's README, tests and benchmarks build.

The notebooks are generated rather than hand-edited so that their cells, tags and ids stay
deterministic and reviewable in a diff. Run from anywhere:

    python example_notebooks/make_examples.py          # (re)write the .ipynb files
    python example_notebooks/make_examples.py --check  # exit 1 if a committed file is stale

Each notebook is what a data scientist would write: markdown explaining the steps, untagged
exploration cells, and cell tags (``parameters``, ``load``, ``preprocess``, ``train``,
``evaluate``, ``predict``, ``skip``) marking what nb2prod should take to production.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat import NotebookNode

HERE = Path(__file__).resolve().parent

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {
    "name": "python",
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "codemirror_mode": {"name": "ipython", "version": 3},
}


def _source(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def md(text: str) -> NotebookNode:
    """A markdown cell."""
    return nbformat.v4.new_markdown_cell(_source(text))


def code(text: str, *tags: str) -> NotebookNode:
    """A code cell carrying the given Jupyter cell tags (none: an exploration cell)."""
    metadata = {"tags": list(tags)} if tags else {}
    return nbformat.v4.new_code_cell(_source(text), metadata=metadata)


def notebook(cells: list[NotebookNode]) -> NotebookNode:
    """A v4 notebook with a Python kernel and stable cell ids (random ids would churn diffs)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index:02d}"
    nb.cells = cells
    nbformat.validate(nb)
    return nb


def iris_function() -> NotebookNode:
    """Function style: ``def preprocess(df)`` reads a scaler fitted in train; labels are names."""
    return notebook(
        [
            md(
                """
                # Iris species classifier

                Predict the species of an iris flower (setosa, versicolor, virginica) from four
                measurements in centimetres. A standardised logistic regression on the raw
                measurements plus two shape ratios is accurate and easy to explain.

                Cells that nb2prod takes to production carry a cell tag (View > Cell Toolbar >
                Tags): `parameters`, `load`, `preprocess`, `train`, `evaluate`, `predict`.
                Untagged cells are exploration and are never run by nb2prod.
                """
            ),
            code(
                """
                import numpy as np
                import pandas as pd
                from sklearn.datasets import load_iris
                from sklearn.linear_model import LogisticRegression
                from sklearn.metrics import accuracy_score, f1_score
                from sklearn.model_selection import train_test_split
                from sklearn.preprocessing import StandardScaler
                """
            ),
            md(
                """
                ## Parameters

                Literal values only (papermill's convention), so they can be overridden at build
                time, e.g. `nb2prod build iris_function.ipynb -p C=0.5`.
                """
            ),
            code(
                """
                C = 1.0  # inverse regularisation strength
                test_size = 0.25
                seed = 0
                """,
                "parameters",
            ),
            md(
                """
                ## Load the data

                scikit-learn ships the dataset, so there is nothing to download. We hold out a
                stratified quarter of the flowers for evaluation.
                """
            ),
            code(
                """
                iris = load_iris(as_frame=True)
                df = iris.frame
                target_names = iris.target_names  # class index -> species name
                FEATURE_COLUMNS = list(iris.feature_names)

                X = df[FEATURE_COLUMNS]
                y = df["target"]
                X_train, X_test, y_train, y_test = train_test_split(
                    X, y, test_size=test_size, random_state=seed, stratify=y
                )
                """,
                "load",
            ),
            md("## A first look"),
            code("df.head()"),
            code('df.groupby("target").mean().round(2)'),
            code("np.bincount(y), X.shape"),
            md(
                """
                ## Features

                Petal and sepal length-to-width ratios separate the species well. `preprocess`
                derives them and standardises everything with the scaler fitted in **train**.
                It must not fit anything itself: the same function runs in the service.
                """
            ),
            code(
                """
                RATIOS = {
                    "petal_ratio": ("petal length (cm)", "petal width (cm)"),
                    "sepal_ratio": ("sepal length (cm)", "sepal width (cm)"),
                }


                def add_ratios(df: pd.DataFrame) -> pd.DataFrame:
                    \"\"\"The raw measurements plus length/width ratios of petals and sepals.\"\"\"
                    features = df[FEATURE_COLUMNS].copy()
                    for name, (length, width) in RATIOS.items():
                        features[name] = features[length] / features[width]
                    return features


                def preprocess(df: pd.DataFrame) -> pd.DataFrame:
                    \"\"\"Raw flower measurements -> standardised model features.\"\"\"
                    features = add_ratios(df)
                    scaled = scaler.transform(features)
                    return pd.DataFrame(scaled, columns=features.columns, index=features.index)
                """,
                "preprocess",
            ),
            md("## Train"),
            code(
                """
                scaler = StandardScaler().fit(add_ratios(X_train))
                model = LogisticRegression(C=C, max_iter=1000, random_state=seed)
                model.fit(preprocess(X_train), y_train)
                """,
                "train",
            ),
            md("## Evaluate on the held-out flowers"),
            code(
                """
                test_predictions = model.predict(preprocess(X_test))
                accuracy = accuracy_score(y_test, test_predictions)
                f1_macro = f1_score(y_test, test_predictions, average="macro")
                print(f"accuracy={accuracy:.3f}  f1_macro={f1_macro:.3f}")
                """,
                "evaluate",
            ),
            md(
                """
                ## Predict

                The service calls `predict(model, preprocess(rows))` and returns species names,
                not class indices.
                """
            ),
            code(
                """
                def predict(model: LogisticRegression, features: pd.DataFrame) -> np.ndarray:
                    \"\"\"The predicted species name for each row of features.\"\"\"
                    return target_names[model.predict(features)]
                """,
                "predict",
            ),
            code("predict(model, preprocess(X_test.head()))"),
        ]
    )


def wine_script() -> NotebookNode:
    """Script style with magics, shell lines, exploration cells, a skip cell and a dead import."""
    return notebook(
        [
            md(
                """
                # Wine cultivar classifier

                Which of three cultivars does a wine come from, given 13 results of a chemical
                analysis? A random forest on the raw analysis plus two derived ratios.

                This notebook is written top to bottom as plain code (no functions). The cell
                tagged `preprocess` turns `raw` into `features`; the cell tagged `predict` turns
                `features` into `predictions`.
                """
            ),
            code("!pip install --quiet --disable-pip-version-check scikit-learn pandas"),
            code(
                """
                %load_ext autoreload
                %autoreload 2

                import json  # noqa: F401  (was used by an old export cell)

                import pandas as pd
                from sklearn.datasets import load_wine
                from sklearn.ensemble import RandomForestClassifier
                from sklearn.metrics import accuracy_score, balanced_accuracy_score
                from sklearn.model_selection import cross_val_score, train_test_split

                pd.set_option("display.max_columns", 20)
                """
            ),
            code(
                """
                n_estimators = 200
                max_depth = 6
                test_size = 0.25
                seed = 42
                """,
                "parameters",
            ),
            md("## Data"),
            code(
                """
                wine = load_wine(as_frame=True)
                raw = wine.frame
                FEATURE_COLUMNS = list(wine.feature_names)
                """,
                "load",
            ),
            md("Exploration: nb2prod never runs untagged cells."),
            code("raw.head()"),
            code("raw.describe().T"),
            code('raw["target"].value_counts().sort_index()'),
            md(
                """
                ## Features

                Flavanoids relative to total phenols, and colour intensity weighted by hue, are
                the two combinations the chemists suggested.
                """
            ),
            code(
                """
                features = raw[FEATURE_COLUMNS].copy()
                features["flavanoid_ratio"] = features["flavanoids"] / features["total_phenols"]
                features["color_hue"] = features["color_intensity"] * features["hue"]
                """,
                "preprocess",
            ),
            code("features.shape"),
            md("## Train"),
            code(
                """
                %%time
                X_train, X_test, y_train, y_test = train_test_split(
                    features,
                    raw["target"],
                    test_size=test_size,
                    random_state=seed,
                    stratify=raw["target"],
                )
                model = RandomForestClassifier(
                    n_estimators=n_estimators,
                    max_depth=max_depth,
                    random_state=seed,
                )
                model.fit(X_train, y_train)
                """,
                "train",
            ),
            md("Depth sweep from last week, kept for reference but not part of the build."),
            code(
                """
                for depth in (2, 4, None):
                    sweep = RandomForestClassifier(50, max_depth=depth, random_state=seed)
                    scores = cross_val_score(sweep, features, raw["target"], cv=3)
                    print(depth, round(scores.mean(), 3))
                """,
                "skip",
            ),
            md("## Evaluate"),
            code(
                """
                test_predictions = model.predict(X_test)
                accuracy = accuracy_score(y_test, test_predictions)
                balanced_accuracy = balanced_accuracy_score(y_test, test_predictions)
                print(f"accuracy={accuracy:.3f}  balanced_accuracy={balanced_accuracy:.3f}")
                """,
                "evaluate",
            ),
            code(
                """
                importances = pd.Series(model.feature_importances_, index=features.columns)
                importances.sort_values(ascending=False).head(5)
                """
            ),
            md("## Predict: the cultivar (0, 1 or 2) for every row of `features`"),
            code(
                """
                predictions = model.predict(features)
                """,
                "predict",
            ),
            code("predictions[:10]"),
        ]
    )


def diabetes_regression() -> NotebookNode:
    """Function style regression with a string column one-hot encoded inside a Pipeline."""
    return notebook(
        [
            md(
                """
                # Diabetes progression

                Predict a quantitative measure of disease progression one year after baseline
                from age, sex, body mass index, blood pressure and six blood serum measurements
                (442 patients). Sex is a string column; the fitted pipeline one-hot encodes it
                together with an age band derived in `preprocess`.

                The notebook is also used with Kubeflow Kale, hence its `imports` and
                `pipeline-parameters` tags, which nb2prod ignores.
                """
            ),
            code(
                """
                import numpy as np
                import pandas as pd
                from sklearn.compose import ColumnTransformer
                from sklearn.datasets import load_diabetes
                from sklearn.ensemble import GradientBoostingRegressor
                from sklearn.metrics import mean_absolute_error, r2_score
                from sklearn.model_selection import train_test_split
                from sklearn.pipeline import Pipeline
                from sklearn.preprocessing import OneHotEncoder, StandardScaler
                """,
                "imports",
            ),
            code(
                """
                n_estimators = 300
                learning_rate = 0.05
                max_depth = 2
                subsample = 0.8
                seed = 7
                # Predictions are clipped to the range of the target seen in the study.
                min_score = 25.0
                max_score = 346.0
                """,
                "parameters",
                "pipeline-parameters",
            ),
            md(
                """
                ## Load

                We use the unscaled measurements, give the serum columns their clinical names and
                turn the 1/2 sex code into a readable category (the label mapping here is
                illustrative: the source does not document it).
                """
            ),
            code(
                """
                diabetes = load_diabetes(as_frame=True, scaled=False)
                serum = {  # s1..s6 are blood serum measurements
                    "s1": "tc",  # total cholesterol
                    "s2": "ldl",  # low-density lipoproteins
                    "s3": "hdl",  # high-density lipoproteins
                    "s4": "tch",  # total cholesterol / HDL
                    "s5": "ltg",  # log of serum triglycerides
                    "s6": "glu",  # blood sugar
                }
                patients = diabetes.frame.rename(columns=serum)
                patients["sex"] = patients["sex"].map({1.0: "female", 2.0: "male"})

                X = patients.drop(columns="target")
                y = patients["target"]
                split = train_test_split(X, y, test_size=0.2, random_state=seed)
                X_train, X_test, y_train, y_test = split
                """,
                "load",
            ),
            code("patients.head()"),
            code('patients.groupby("sex")["target"].describe()'),
            md(
                """
                ## Features

                `preprocess` is stateless: it adds an age band and a BMI x blood-pressure term.
                All fitted state (scaling, one-hot categories) lives in the pipeline built in
                **train**, so unseen categories at serving time are ignored, not errors.
                """
            ),
            code(
                """
                AGE_BINS = [0, 40, 50, 60, 120]
                AGE_BANDS = ["under_40", "40s", "50s", "60_plus"]
                NUMERIC = ["age", "bmi", "bp", "tc", "ldl", "hdl", "tch", "ltg", "glu", "bmi_x_bp"]
                CATEGORICAL = ["sex", "age_band"]


                def preprocess(df: pd.DataFrame) -> pd.DataFrame:
                    \"\"\"Raw patient rows -> the columns the pipeline expects.\"\"\"
                    features = df.copy()
                    age_band = pd.cut(features["age"], bins=AGE_BINS, labels=AGE_BANDS, right=False)
                    features["age_band"] = age_band.astype(str)
                    features["bmi_x_bp"] = features["bmi"] * features["bp"] / 100.0
                    return features[NUMERIC + CATEGORICAL]
                """,
                "preprocess",
            ),
            code("preprocess(X_train).head()"),
            md("## Train"),
            code(
                """
                columns = ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), NUMERIC),
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                    ]
                )
                regressor = GradientBoostingRegressor(
                    n_estimators=n_estimators,
                    learning_rate=learning_rate,
                    max_depth=max_depth,
                    subsample=subsample,
                    random_state=seed,
                )
                model = Pipeline([("columns", columns), ("regressor", regressor)])
                model.fit(preprocess(X_train), y_train)
                """,
                "train",
            ),
            md("## Evaluate"),
            code(
                """
                test_predictions = model.predict(preprocess(X_test))
                mae = mean_absolute_error(y_test, test_predictions)
                r2 = r2_score(y_test, test_predictions)
                print(f"MAE={mae:.1f}  R2={r2:.3f}")
                """,
                "evaluate",
            ),
            md("## Predict"),
            code(
                """
                def predict(model: Pipeline, features: pd.DataFrame) -> np.ndarray:
                    \"\"\"Progression score per patient, clipped to the study's range.\"\"\"
                    return np.clip(model.predict(features), min_score, max_score)
                """,
                "predict",
            ),
            code("predict(model, preprocess(X_test.head()))"),
        ]
    )


EXAMPLES: dict[str, Callable[[], NotebookNode]] = {
    "iris_function": iris_function,
    "wine_script": wine_script,
    "diabetes_regression": diabetes_regression,
}


def render(name: str) -> str:
    """The exact text of example ``name`` as it is committed."""
    return nbformat.writes(EXAMPLES[name]())


def main(argv: list[str] | None = None) -> int:
    """Write the notebooks next to this script, or with ``--check`` report stale ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a notebook is stale")
    args = parser.parse_args(argv)
    files = {Path(f"{name}.ipynb"): render(name) for name in EXAMPLES}
    return sync(HERE, files, check=args.check, script=Path(__file__).name)


def sync(root: Path, files: dict[Path, str], *, check: bool, script: str) -> int:
    """Write ``files`` (paths relative to ``root``) where they differ, or with ``check`` list
    the stale ones and return 1."""
    stale = []
    for relative, text in files.items():
        path = root / relative
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        if check:
            stale.append(str(relative))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run {script}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
