"""Run All notices: a cell nb2prod does not run moves a global generator before training.

Each case writes a real notebook, reads it with ``read_notebook`` and checks the notices
``run_all_notices`` gives for its cells and imports. The last test runs such a notebook in
real kernels, once as the user's Run All and once with only the cells nb2prod runs, and shows
that the two sessions train different models: the situation the notice describes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nbformat
import pytest
from helpers import write_notebook
from nbclient import NotebookClient

from nb2prod.build.notebook import read_notebook
from nb2prod.build.run_all import run_all_notices

Cells = list[tuple[str, "list[str] | None"]]

IMPORTS = (
    "import random\n"
    "import numpy as np\n"
    "import pandas as pd\n"
    "from sklearn.ensemble import RandomForestClassifier\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.model_selection import KFold, cross_val_score, train_test_split"
)
LOAD = (
    "raw = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],\n"
    "                    'b': [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],\n"
    "                    'y': [0, 0, 0, 0, 1, 1, 1, 1]})\n"
    "X = raw[['a', 'b']]\n"
    "y = raw['y']"
)
FOREST = "model = RandomForestClassifier()\nmodel.fit(X, y)"
SPLIT = (
    "X_train, X_test, y_train, y_test = train_test_split(X, y)\n"
    "model = LogisticRegression().fit(X_train, y_train)"
)
PREDICT = "predictions = model.predict(features)"


def notices(tmp_path: Path, explore: str, train: str, *, explore_tags: list[str] | None = None,
            after: Cells = ()) -> list[str]:  # fmt: skip
    """Notices for: imports (cell 1, untagged), load (2), ``explore`` (3, untagged unless
    ``explore_tags``), ``train`` (4), predict (5), then ``after`` (6, ...)."""
    cells: Cells = [
        (IMPORTS, None),
        (LOAD, ["load"]),
        (explore, explore_tags),
        (train, ["train"]),
        (PREDICT, ["predict"]),
        *after,
    ]
    spec = read_notebook(write_notebook(tmp_path / "nb.ipynb", cells))
    return run_all_notices(spec.cells, spec.imports)


def test_untagged_numpy_draw_before_an_unseeded_forest(tmp_path: Path) -> None:
    found = notices(tmp_path, "noise = np.random.rand(3)\nnoise", FOREST)
    assert len(found) == 1
    notice = found[0]
    assert notice.startswith(
        "cell 3 (not run by nb2prod) draws from numpy's global random generator before training"
    )
    assert "cell 4 [train] (line 1) fits `RandomForestClassifier()` without random_state" in notice
    assert "the model nb2prod trains will differ from your own Run All" in notice
    assert "`random_state=42`" in notice and "`np.random.seed(42)`" in notice
    assert "\n" not in notice


def test_seeded_everywhere_gives_no_notice(tmp_path: Path) -> None:
    train = (
        "X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)\n"
        "model = RandomForestClassifier(random_state=0).fit(X_train, y_train)"
    )
    assert notices(tmp_path, "noise = np.random.rand(3)", train) == []


def test_untagged_sample_before_an_unseeded_split(tmp_path: Path) -> None:
    found = notices(tmp_path, "raw.sample(5)", SPLIT)
    assert len(found) == 1
    assert "cell 3 (not run by nb2prod) draws from numpy's global random generator" in found[0]
    assert (
        "cell 4 [train] (line 1) splits with `train_test_split(...)` without random_state"
        in (found[0])
    )


def test_several_drawing_cells_are_named_together(tmp_path: Path) -> None:
    after_load: Cells = [("order = np.random.permutation(8)", None)]
    cells: Cells = [
        (IMPORTS, None),
        (LOAD, ["load"]),
        ("raw.sample(frac=0.5)", None),
        *after_load,
        (FOREST, ["train"]),
        (PREDICT, ["predict"]),
    ]
    spec = read_notebook(write_notebook(tmp_path / "nb.ipynb", cells))
    [notice] = run_all_notices(spec.cells, spec.imports)
    assert notice.startswith("cells 3, 4 (not run by nb2prod) draw from numpy's global random")
    assert "cell 5 [train] (line 1)" in notice


@pytest.mark.parametrize(
    ("seeding", "expected"),
    [
        pytest.param("np.random.seed(0)", 0, id="numpy-seed"),
        pytest.param("random.seed(0)", 1, id="stdlib-seed-leaves-numpy-as-it-was"),
    ],
)
def test_seeding_in_a_run_cell_after_the_draw(tmp_path: Path, seeding: str, expected: int) -> None:
    cells: Cells = [
        (IMPORTS, None),
        (LOAD, ["load"]),
        ("noise = np.random.rand(3)", None),
        (seeding + "\nX = X * 1.0", ["preprocess"]),
        (FOREST, ["train"]),
        (PREDICT, ["predict"]),
    ]
    spec = read_notebook(write_notebook(tmp_path / "nb.ipynb", cells))
    assert len(run_all_notices(spec.cells, spec.imports)) == expected


def test_seeding_at_the_top_of_the_train_cell(tmp_path: Path) -> None:
    assert notices(tmp_path, "noise = np.random.rand(3)", "np.random.seed(0)\n" + FOREST) == []


def test_seeding_before_the_draw_does_not_help(tmp_path: Path) -> None:
    cells: Cells = [
        (IMPORTS, None),
        ("np.random.seed(0)\n" + LOAD, ["load"]),
        ("noise = np.random.rand(3)", None),
        (FOREST, ["train"]),
        (PREDICT, ["predict"]),
    ]
    spec = read_notebook(write_notebook(tmp_path / "nb.ipynb", cells))
    assert len(run_all_notices(spec.cells, spec.imports)) == 1


def test_draw_in_a_skip_cell(tmp_path: Path) -> None:
    found = notices(tmp_path, "idx = np.random.choice(8, 3)", FOREST, explore_tags=["skip"])
    assert len(found) == 1
    assert found[0].startswith("cell 3 (not run by nb2prod) draws from numpy's")


def test_draw_after_training_gives_no_notice(tmp_path: Path) -> None:
    after: Cells = [("np.random.shuffle(X.values)\nX.sample(3)", None)]
    assert notices(tmp_path, "summary = raw.describe()", FOREST, after=after) == []


def test_stdlib_shuffle_does_not_move_numpys_generator(tmp_path: Path) -> None:
    # scikit-learn draws from numpy's generator only: a stdlib shuffle cannot change the split.
    assert notices(tmp_path, "lst = [1, 2, 3]\nrandom.shuffle(lst)", SPLIT) == []


def test_stdlib_shuffle_before_a_stdlib_draw_in_training(tmp_path: Path) -> None:
    train = "rows = random.sample(range(8), 6)\n" + FOREST.replace("()", "(random_state=0)")
    found = notices(tmp_path, "lst = [1, 2, 3]\nrandom.shuffle(lst)", train)
    assert len(found) == 1
    assert "draws from the `random` module's global generator" in found[0]
    assert "cell 4 [train] (line 1) draws with `random.sample(...)`" in found[0]
    assert "`random.seed(42)`" in found[0]


def test_sample_with_random_state_draws_nothing_global(tmp_path: Path) -> None:
    assert notices(tmp_path, "raw.sample(5, random_state=1)", SPLIT) == []


def test_a_seed_in_a_skip_cell_is_a_change_too(tmp_path: Path) -> None:
    found = notices(tmp_path, "np.random.seed(7)", FOREST, explore_tags=["skip"])
    assert len(found) == 1
    assert found[0].startswith("cell 3 (not run by nb2prod) seeds numpy's global random")


def test_an_untagged_seed_cell_runs_in_nb2prod_too(tmp_path: Path) -> None:
    # read_notebook runs untagged cells that only seed (role `definitions`): both sessions
    # seed, so they agree.
    assert notices(tmp_path, "np.random.seed(7)", FOREST) == []


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        pytest.param("model = LogisticRegression().fit(X, y)", 0, id="lbfgs-is-deterministic"),
        pytest.param("model = LogisticRegression(solver='saga').fit(X, y)", 1, id="saga-shuffles"),
        pytest.param(
            "scores = cross_val_score(LogisticRegression(), X, y, cv=KFold(4))\n"
            "model = LogisticRegression().fit(X, y)",
            0,
            id="unshuffled-kfold",
        ),
        pytest.param(
            "scores = cross_val_score(LogisticRegression(), X, y, cv=KFold(4, shuffle=True))\n"
            "model = LogisticRegression().fit(X, y)",
            1,
            id="shuffled-kfold",
        ),
        pytest.param(
            "params = {'n_estimators': 5, 'random_state': 0}\n"
            "model = RandomForestClassifier(**params).fit(X, y)",
            0,
            id="options-may-hold-the-seed",
        ),
    ],
)
def test_which_training_calls_depend_on_the_generator(
    tmp_path: Path, train: str, expected: int
) -> None:
    assert len(notices(tmp_path, "noise = np.random.rand(3)", train)) == expected


def test_a_function_defined_in_an_untagged_cell_draws_only_when_called(tmp_path: Path) -> None:
    explore = "def jitter(df):\n    return df + np.random.normal(size=df.shape)"
    assert notices(tmp_path, explore, FOREST) == []


# --- the situation is real: Run All and nb2prod's cells train different models -------------

KERNEL_LOAD = (
    "import numpy as np\n"
    "from sklearn.datasets import make_classification\n"
    "from sklearn.ensemble import RandomForestClassifier\n"
    "from sklearn.model_selection import train_test_split\n"
    "np.random.seed(0)\n"
    "X, y = make_classification(n_samples=200, n_features=6, random_state=0)"
)
#: The unseeded split and forest, and beside them the same calls as the notice's fix seeds
#: them (`fixed_`): both sessions run both, so one pair of kernels shows the two outcomes.
KERNEL_TRAIN = (
    "idx_train, idx_test = train_test_split(np.arange(len(y)))\n"
    "model = RandomForestClassifier(n_estimators=5).fit(X[idx_train], y[idx_train])\n"
    "fixed_train, fixed_test = train_test_split(np.arange(len(y)), random_state=42)\n"
    "fixed_model = RandomForestClassifier(n_estimators=5, random_state=42)\n"
    "fixed_model.fit(X[fixed_train], y[fixed_train])"
)
KERNEL_EVALUATE = (
    "import json\n"
    "print(json.dumps({\n"
    "    'test_rows': sorted(idx_test.tolist()),\n"
    "    'proba': model.predict_proba(X[:40])[:, 1].round(3).tolist(),\n"
    "    'fixed_test_rows': sorted(fixed_test.tolist()),\n"
    "    'fixed_proba': fixed_model.predict_proba(X[:40])[:, 1].round(3).tolist(),\n"
    "}))"
)


def _execute(*notebooks: nbformat.NotebookNode, where: Path) -> list[dict[str, list[float]]]:
    """Run every cell of each notebook, each in its own fresh kernel (side by side, to halve
    the wait); return what each one's evaluate cell printed."""

    async def run_all() -> None:
        resources = {"metadata": {"path": str(where)}}
        clients = [
            NotebookClient(nb, timeout=60, kernel_name="python3", resources=resources)
            for nb in notebooks
        ]
        await asyncio.gather(*(client.async_execute() for client in clients))

    asyncio.run(run_all())
    printed = []
    for nb in notebooks:
        [evaluate] = [c for c in nb.cells if "evaluate" in c.metadata.get("tags", [])]
        printed.append(json.loads(evaluate.outputs[0]["text"]))
    return printed


def test_run_all_and_nb2prods_cells_train_different_models(tmp_path: Path) -> None:
    cells: Cells = [
        (KERNEL_LOAD, ["load"]),
        ("preview = np.random.rand(5)\npreview", None),
        (KERNEL_TRAIN, ["train"]),
        (KERNEL_EVALUATE, ["evaluate"]),
        ("predictions = model.predict(X)", ["predict"]),
    ]
    path = write_notebook(tmp_path / "nb.ipynb", cells)
    spec = read_notebook(path)
    [notice] = run_all_notices(spec.cells, spec.imports)
    assert notice.startswith("cell 2 (not run by nb2prod) draws from numpy's")
    assert "cell 3 [train] (line 1) splits with `train_test_split(...)`" in notice

    run_all = nbformat.read(path, as_version=4)
    tagged_only = nbformat.read(path, as_version=4)
    tagged_only.cells = [c for c in tagged_only.cells if c.metadata.get("tags")]
    assert len(tagged_only.cells) == 4  # the untagged draw is the one cell left out
    users, nb2prods = _execute(run_all, tagged_only, where=tmp_path)

    assert len(users["test_rows"]) == len(nb2prods["test_rows"]) == 50
    assert users["test_rows"] != nb2prods["test_rows"]
    assert users["proba"] != nb2prods["proba"]
    # The fix the notice suggests: the seeded calls agree whatever ran before them.
    assert users["fixed_test_rows"] == nb2prods["fixed_test_rows"]
    assert users["fixed_proba"] == nb2prods["fixed_proba"]
