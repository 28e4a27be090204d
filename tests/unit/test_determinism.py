"""Serving is deterministic: random draws on the serving path are refused at `nb2prod check`.

Each kind of draw goes through the CLI (``nb2prod check NB``, in process): exit code of a
contract refusal, exactly one ``Error:`` line naming the cell and the line, a hint with the fix,
no traceback and nothing written. Seeded code, draws in training cells and look-alikes that are
not draws pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import EXAMPLES, example_notebook, run_cli, write_notebook

from nb2prod.build.notebook import read_notebook
from nb2prod.errors import NotebookError

Cells = list[tuple[str, "list[str] | None"]]

NUMPY = (
    "import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
)
LOAD = (
    "raw = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],\n"
    "                    'b': [1.0, 0.0, 1.0, 0.0, 1.0, 0.0],\n"
    "                    'y': [0, 0, 0, 1, 1, 1]})\n"
    "X = raw[['a', 'b']]\n"
    "y = raw['y']"
)
PREPROCESS = "def preprocess(df):\n    return df[['a', 'b']] * 2.0"
TRAIN = "model = LogisticRegression().fit(preprocess(X), y)"
PREDICT = "def predict(model, features):\n    return model.predict(features)"


def notebook(
    *,
    imports: str = NUMPY,
    load: str = LOAD,
    preprocess: str = PREPROCESS,
    train: str = TRAIN,
    predict: str = PREDICT,
    extra: Cells | None = None,
) -> Cells:
    """A function-style notebook: imports (cell 1), parameters (2), load (3), preprocess (4),
    train (5), predict (6), then ``extra`` cells (7, ...)."""
    return [
        (imports, None),
        ("SEED = 42", ["parameters"]),
        (load, ["load"]),
        (preprocess, ["preprocess"]),
        (train, ["train"]),
        (predict, ["predict"]),
        *(extra or []),
    ]


def script_notebook(
    preprocess: str, predict: str = "predictions = model.predict(features)", imports: str = NUMPY
) -> Cells:
    """A script-style notebook: imports (1), load (2), preprocess (3), train (4), predict (5)."""
    return [
        (imports, None),
        (LOAD, ["load"]),
        (preprocess, ["preprocess"]),
        ("model = LogisticRegression().fit(features, raw['y'])", ["train"]),
        (predict, ["predict"]),
    ]


@dataclass(frozen=True)
class Draw:
    """A notebook with a draw on the serving path, and what its one Error line must name."""

    cells: Cells
    where: str  # the cell, as "cell N [role]"
    line: int
    call: str  # the call as written, e.g. "`np.random.rand(...)`"
    why: str = "draws random numbers on each request"
    hint: str = "Impute with a recorded statistic"


DRAWS: dict[str, Draw] = {
    "numpy global, script style": Draw(
        script_notebook(
            "features = raw[['a', 'b']].copy()\n"
            "features['a'] = features['a'].fillna(np.random.randint(0, 5))"
        ),
        "cell 3 [preprocess] (\"features = raw[['a', 'b']].copy()\")",
        2,
        "`np.random.randint(...)`",
        "so the same rows can get different predictions",
    ),
    "from numpy import random": Draw(
        notebook(
            imports=NUMPY + "\nfrom numpy import random",
            preprocess="def preprocess(df):\n    out = df[['a', 'b']]\n"
            "    return out + random.normal(0, 0.1, size=out.shape)",
        ),
        "cell 4 [preprocess] ('def preprocess(df):')",
        3,
        "`random.normal(...)`",
    ),
    "from numpy.random import choice": Draw(
        notebook(
            imports=NUMPY + "\nfrom numpy.random import choice",
            predict="def predict(model, features):\n    labels = model.predict(features)\n"
            "    return choice(labels, size=len(labels))",
        ),
        "cell 6 [predict]",
        3,
        "`choice(...)`",
    ),
    "import numpy.random as npr": Draw(
        notebook(
            imports=NUMPY + "\nimport numpy.random as npr",
            preprocess="def preprocess(df):\n    return df.iloc[npr.permutation(len(df))]",
        ),
        "cell 4 [preprocess]",
        2,
        "`npr.permutation(...)`",
    ),
    "stdlib random": Draw(
        notebook(
            imports=NUMPY + "\nimport random",
            predict="def predict(model, features):\n    # break ties at random\n"
            "    return [p if random.random() < 0.9 else 1 - p for p in model.predict(features)]",
        ),
        "cell 6 [predict]",
        3,
        "`random.random(...)`",
        hint="random.Random(42)",
    ),
    "from random import gauss as noise": Draw(
        notebook(
            imports=NUMPY + "\nfrom random import gauss as noise",
            preprocess="def preprocess(df):\n    return df[['a', 'b']] + noise(0, 1)",
        ),
        "cell 4 [preprocess]",
        2,
        "`noise(...)`",
    ),
    "an import inside the serving function": Draw(
        notebook(
            preprocess="def preprocess(df):\n    import random as r\n\n    return df * r.random()"
        ),
        "cell 4 [preprocess]",
        4,
        "`r.random(...)`",
    ),
    "a generator seeded in training": Draw(
        notebook(
            train="rng = np.random.default_rng(SEED)\n" + TRAIN,
            preprocess="def preprocess(df):\n    return df[['a', 'b']] + rng.normal(0, 0.1, 2)",
        ),
        "cell 4 [preprocess]",
        2,
        "`rng.normal(...)`",
        "from `rng`, a generator created once, in training (cell 5 [train], line 1): its seed "
        "fixes the sequence",
        "or seed it in the serving code itself",
    ),
    "a generator beside a serving function runs in training": Draw(
        notebook(
            preprocess="rng = np.random.RandomState(0)\n\n\ndef preprocess(df):\n"
            "    return df[['a', 'b']] + rng.rand(2)",
        ),
        "cell 4 [preprocess] ('rng = np.random.RandomState(0)')",
        5,
        "`rng.rand(...)`",
        "created once, in training (cell 4 [preprocess], line 1)",
    ),
    "an unseeded generator in serving code": Draw(
        notebook(
            preprocess="def preprocess(df):\n    rng = np.random.default_rng()\n"
            "    return df[['a', 'b']] + rng.normal(0, 0.01, size=2)",
        ),
        "cell 4 [preprocess]",
        3,
        "`rng.normal(...)`",
        "from a generator created without a seed",
    ),
    "an unseeded generator made inline": Draw(
        script_notebook(
            "features = raw[['a', 'b']].copy()\n"
            "features['b'] = np.random.default_rng(None).integers(0, 2, len(features))"
        ),
        "cell 3 [preprocess]",
        2,
        "`np.random.default_rng(None).integers(...)`",
        "created without a seed",
    ),
    "a stdlib generator seeded from the clock": Draw(
        notebook(
            imports=NUMPY + "\nimport random\nimport time",
            preprocess="def preprocess(df):\n    r = random.Random(int(time.time()))\n"
            "    return df[['a', 'b']] * r.uniform(0.9, 1.1)",
        ),
        "cell 4 [preprocess]",
        3,
        "`r.uniform(...)`",
        "created without a seed",
    ),
    "global draws after seeding in serving code": Draw(
        notebook(
            preprocess="def preprocess(df):\n    np.random.seed(0)\n"
            "    return df[['a', 'b']] + np.random.rand(2)",
        ),
        "cell 4 [preprocess]",
        3,
        "`np.random.rand(...)`",
        "concurrent requests share that state",
    ),
    ".sample without random_state": Draw(
        notebook(preprocess="def preprocess(df):\n    return df[['a', 'b']].sample(frac=1.0)"),
        "cell 4 [preprocess]",
        2,
        "`df[['a', 'b']].sample(...)`",
        "without `random_state=` it samples differently each time",
        "sample rows in a `load` or `train` cell instead",
    ),
    ".sample with random_state": Draw(
        script_notebook("features = raw[['a', 'b']].sample(n=4, random_state=0)"),
        "cell 3 [preprocess]",
        1,
        "`raw[['a', 'b']].sample(...)`",
        "the predictions no longer line up with the rows sent",
        "Serving predicts every row it is sent",
    ),
    "a helper the serving function calls": Draw(
        notebook(
            preprocess="def noise(n):\n    return np.random.rand(n)\n\n\n"
            "def preprocess(df):\n    return df[['a', 'b']] * (1 + noise(2))",
        ),
        "cell 4 [preprocess] ('def noise(n):')",
        2,
        "`np.random.rand(...)`",
        "serving reaches it from cell 4 [preprocess]: `preprocess` → `noise`",
    ),
    "a training cell's function that serving passes to .map": Draw(
        notebook(
            imports=NUMPY + "\nimport random",
            train="def jitter(x):\n    return x + random.uniform(-0.01, 0.01)\n\n\n" + TRAIN,
            predict="def predict(model, features):\n    return model.predict(features.map(jitter))",
        ),
        "cell 5 [train] ('def jitter(x):')",
        2,
        "`random.uniform(...)`",
        "serving reaches it from cell 6 [predict]: `predict` → `jitter`",
    ),
    "a lambda in a script predict cell": Draw(
        script_notebook(
            "features = raw[['a', 'b']]",
            "predictions = model.predict(\n"
            "    features.apply(lambda col: col + np.random.normal(0, 0.01, len(col)))\n)",
        ),
        "cell 5 [predict]",
        2,
        "`np.random.normal(...)`",
    ),
    "monitor": Draw(
        notebook(
            extra=[
                (
                    "def monitor(inputs, predictions):\n"
                    "    return {'probe': float(np.random.uniform())}",
                    ["monitor"],
                )
            ]
        ),
        "cell 7 [monitor]",
        2,
        "`np.random.uniform(...)`",
    ),
    "scipy .rvs": Draw(
        notebook(
            imports=NUMPY + "\nfrom scipy import stats",
            preprocess="def preprocess(df):\n    return df[['a', 'b']] + stats.norm(0, 1).rvs(2)",
        ),
        "cell 4 [preprocess]",
        2,
        "`stats.norm(0, 1).rvs(...)`",
        hint="random_state=42",
    ),
    "torch": Draw(
        notebook(
            imports=NUMPY + "\nimport torch",
            preprocess="def preprocess(df):\n    x = torch.tensor(df[['a', 'b']].values)\n"
            "    return x + 0.01 * torch.randn_like(x)",
        ),
        "cell 4 [preprocess]",
        3,
        "`torch.randn_like(...)`",
        hint="torch.Generator().manual_seed(42)",
    ),
    "tensorflow, even with an op seed": Draw(
        notebook(
            imports=NUMPY + "\nimport tensorflow as tf",
            preprocess="def preprocess(df):\n"
            "    return df[['a', 'b']].to_numpy() + tf.random.uniform((2,), seed=1).numpy()",
        ),
        "cell 4 [preprocess]",
        2,
        "`tf.random.uniform(...)`",
        hint="stateless_uniform",
    ),
}


@pytest.mark.parametrize("case", list(DRAWS))
def test_a_draw_on_the_serving_path_is_refused_by_check(case: str, tmp_path: Path) -> None:
    draw = DRAWS[case]
    path = write_notebook(tmp_path / "nb.ipynb", draw.cells)
    result = run_cli("check", path, cwd=tmp_path)
    assert result.returncode == NotebookError.exit_code, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    error = result.error_lines[0]
    assert error.startswith(f"Error: {draw.where}"), error
    for fragment in (f"line {draw.line}:", draw.call, draw.why):
        assert fragment in error, (fragment, error)
    # Only a draw after a seeding call in serving code is told about the shared global state.
    assert ("concurrent requests" in error) == ("concurrent requests" in draw.why), error
    hints = [line for line in result.stderr.splitlines() if line.startswith("Hint: ")]
    assert len(hints) == 1 and draw.hint in hints[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == [path]  # check writes nothing


def test_build_refuses_a_draw_and_leaves_nothing_behind(tmp_path: Path) -> None:
    draw = DRAWS["a generator seeded in training"]
    path = write_notebook(tmp_path / "nb.ipynb", draw.cells)
    result = run_cli("build", path, "--no-docker", "-o", "tmp/out", cwd=tmp_path)
    assert result.returncode == NotebookError.exit_code, result.stderr
    assert len(result.error_lines) == 1 and draw.call in result.error_lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # Refused before anything is written: no output, no staging folder, not even tmp/.
    assert list(tmp_path.iterdir()) == [path]


#: Notebooks that draw only where it is allowed, or only look like they draw.
PASSES: dict[str, Cells] = {
    "a generator serving code seeds itself": notebook(
        preprocess="def preprocess(df):\n    rng = np.random.default_rng(SEED)\n"
        "    return df[['a', 'b']] + rng.normal(0, 0.01, size=2)",
    ),
    "a seeded generator made inline, and a seeded bit generator": notebook(
        preprocess="def preprocess(df):\n    rng = np.random.Generator(np.random.PCG64(7))\n"
        "    return df[['a', 'b']] + np.random.default_rng(0).normal(size=2) + rng.random(2)",
    ),
    "a seeded stdlib generator in a script cell": script_notebook(
        "r = random.Random(7)\ncolumns = ['a', 'b']\nr.shuffle(columns)\nfeatures = raw[columns]",
        imports=NUMPY + "\nimport random",
    ),
    "draws in load, train and evaluate cells": notebook(
        imports=NUMPY + "\nimport random",
        load=LOAD + "\nraw = raw.sample(frac=1.0, random_state=SEED)\nrandom.shuffle([1, 2])",
        train="np.random.seed(SEED)\nrandom.seed(SEED)\nnoise = np.random.normal(size=len(X))\n"
        "rng = np.random.default_rng(SEED)\nrows = rng.permutation(len(X))\n"
        "model = LogisticRegression().fit(preprocess(X).iloc[rows], y.iloc[rows])",
        extra=[("held_out = X.sample(3)\nscore = float(np.random.rand())", ["evaluate"])],
    ),
    "values drawn once beside a serving function are recorded": notebook(
        preprocess="offsets = np.random.default_rng().normal(size=2)\n\n\n"
        "def preprocess(df):\n    return df[['a', 'b']] + offsets",
    ),
    "a drawing helper serving never calls": notebook(
        preprocess="def debug_noise(df):\n    return df + np.random.rand()\n\n\n" + PREPROCESS,
    ),
    "seeding alone in serving code": notebook(
        preprocess="def preprocess(df):\n    np.random.seed(0)\n    return df[['a', 'b']]",
    ),
    "draws in skipped and untagged cells": notebook(
        extra=[("np.random.rand(3)", ["skip"]), ("predict(model, X.sample(2))", None)]
    ),
    "methods named like draws on objects that are not generators": notebook(
        train="class Dice:\n    def random(self):\n        return 1.0\n\n\n"
        "dice = Dice()\nnp_like = dice\n" + TRAIN,
        predict="def predict(model, features):\n"
        "    return model.predict(features) * dice.random() * np_like.random()",
    ),
    "np.random in a comment and a string": notebook(
        predict="def predict(model, features):\n"
        "    # np.random.rand() was here; now the median is recorded in training\n"
        "    note = 'np.random.choice(labels) is not called'\n"
        "    return model.predict(features)",
    ),
    "a parameter that shadows the random module": notebook(
        imports=NUMPY + "\nimport random",
        predict="def predict(model, features, random=None):\n"
        "    return model.predict(features) if random is None else random.choice(features)",
    ),
    "scipy .rvs with a fixed random_state": notebook(
        imports=NUMPY + "\nfrom scipy import stats",
        preprocess="def preprocess(df):\n"
        "    return df[['a', 'b']] + stats.norm.rvs(size=2, random_state=SEED)",
    ),
}


@pytest.mark.parametrize("case", list(PASSES))
def test_seeded_code_and_training_draws_pass_check(case: str, tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "nb.ipynb", PASSES[case])
    result = run_cli("check", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.error_lines == []


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_notebooks_pass(name: str, tmp_path: Path) -> None:
    result = run_cli("check", example_notebook(name), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_torch_generator_seeded_in_serving_code_passes(tmp_path: Path) -> None:
    # In process: `check` would also ask for torch to be installed, which it is not here.
    cells = notebook(
        imports=NUMPY + "\nimport torch",
        preprocess="def preprocess(df):\n    g = torch.Generator().manual_seed(SEED)\n"
        "    x = torch.tensor(df[['a', 'b']].values)\n"
        "    return x + torch.randn(x.shape, generator=g)",
    )
    spec = read_notebook(write_notebook(tmp_path / "nb.ipynb", cells))
    assert spec.preprocess_style == "function"
    unseeded = notebook(
        imports=NUMPY + "\nimport torch",
        preprocess="def preprocess(df):\n    g = torch.Generator()\n"
        "    return torch.randn((2,), generator=g)",
    )
    with pytest.raises(NotebookError, match=r"line 3: `torch.randn\(\.\.\.\)`.*without a seed"):
        read_notebook(write_notebook(tmp_path / "unseeded.ipynb", unseeded))
