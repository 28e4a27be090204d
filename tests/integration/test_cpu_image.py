"""A notebook that trains with xgboost builds into a CPU image with no CUDA library in it.

PyPI's ``xgboost`` wheel pulls ``nvidia-nccl-cu12`` (469 MB); nb2prod pins the CPU-only
build, ``xgboost-cpu``, for the training and serving images. Built through the real CLI
and Docker; the image's own ``pip list`` is the evidence.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli_process, write_notebook

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CELLS = [
    (
        "import numpy as np\nimport pandas as pd\nimport xgboost\n"
        "from sklearn.datasets import load_iris",
        [],
    ),
    ("n_estimators = 20\nseed = 0", ["parameters"]),
    (
        "iris = load_iris(as_frame=True)\n"
        "X = iris.frame[list(iris.feature_names)]\ny = iris.frame['target']",
        ["load"],
    ),
    (
        "model = xgboost.XGBClassifier(n_estimators=n_estimators, max_depth=3, "
        "random_state=seed)\nmodel.fit(X, y)",
        ["train"],
    ),
    ("accuracy = float((model.predict(X) == y).mean())", ["evaluate"]),
    (
        "def predict(model: xgboost.XGBClassifier, features: pd.DataFrame) -> np.ndarray:\n"
        "    return model.predict(features)",
        ["predict"],
    ),
    ("predict(model, X.head())", []),  # shows nb2prod which frame is the raw input
]


def test_an_xgboost_notebook_builds_a_cpu_image_without_nvidia_packages(
    tmp_path: Path, docker_engine: object
) -> None:
    notebook = write_notebook(tmp_path / "notebooks" / "boosted_iris.ipynb", CELLS)
    out = tmp_path / "build" / "boosted_iris"

    result = run_cli_process("build", notebook, "-o", out, timeout=1800)

    assert result.returncode == 0, result.stderr
    pins = (out / "requirements-serving.txt").read_text()
    assert "xgboost-cpu==" in pins and "nvidia" not in pins, pins
    image = json.loads((out / ".nb2prod" / "image.json").read_text())["tags"][0]
    listed = subprocess.run(
        ["/usr/bin/docker", "run", "--rm", "--entrypoint", "pip", image, "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = [line.split()[0].lower() for line in listed.splitlines()[2:] if line.strip()]
    assert "xgboost-cpu" in names
    assert [name for name in names if name.startswith("nvidia")] == []
