"""Write the notebooks the serving benchmark builds: a costly model and a cheap one.

    python benchmarks/notebooks/make_bench_notebooks.py

- ``forest.ipynb``: a 100-tree random forest on scikit-learn's breast cancer data (30
  numeric columns). One ``predict`` costs about as much for 1 row as for 64, so joining
  concurrent requests into one batch pays most here.
- ``linear.ipynb``: a scaled logistic regression on the same data: a cheap model, where
  the service's own per-request work weighs most.

Both are written as a data scientist would, with tags only (no nb2prod-specific code).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "example_notebooks"))

import nbformat  # noqa: E402
from make_examples import code, md, notebook  # noqa: E402

LOAD = """\
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

data = load_breast_cancer(as_frame=True)
df = data.frame
X_train, X_test, y_train, y_test = train_test_split(
    df.drop(columns=["target"]), df["target"], test_size=0.25, random_state=0
)"""

FOREST = notebook(
    [
        md("# Breast cancer: a random forest"),
        code(LOAD, "load"),
        code(
            """\
            from sklearn.ensemble import RandomForestClassifier

            model = RandomForestClassifier(n_estimators=100, random_state=0)
            model.fit(X_train, y_train)""",
            "train",
        ),
        code(
            """\
            from sklearn.metrics import accuracy_score

            accuracy = accuracy_score(y_test, model.predict(X_test))
            accuracy""",
            "evaluate",
        ),
        code("predictions = model.predict(X_test)", "predict"),
    ]
)

LINEAR = notebook(
    [
        md("# Breast cancer: a scaled logistic regression"),
        code(LOAD, "load"),
        code(
            """\
            from sklearn.preprocessing import StandardScaler

            scaler = StandardScaler().fit(X_train)
            X_train_scaled = scaler.transform(X_train)""",
            "train",
        ),
        code(
            """\
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(max_iter=1000)
            model.fit(X_train_scaled, y_train)""",
            "train",
        ),
        code("X_test_scaled = scaler.transform(X_test)", "preprocess"),
        code("predictions = model.predict(X_test_scaled)", "predict"),
    ]
)


def main() -> None:
    for name, nb in (("forest", FOREST), ("linear", LINEAR)):
        (HERE / f"{name}.ipynb").write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
