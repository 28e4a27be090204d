"""What a build directory becomes in an MLflow run, and the tracking options' refusals.

No tracking server here: tests/integration/test_mlflow.py logs real builds to a real one.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fake_build import make_card, write_model_dir
from helpers import error_lines, run_cli

from nb2prod.naming import mlflow_model_name
from nb2prod.track.contents import redact, run_contents, staged_build_copy

CARD = make_card(
    name="churn model",
    model_version="0a1b2c3d4e5f",
    notebook={"path": "notebooks/churn model.ipynb", "sha256": "ab" * 32},
    parameters={"alpha": 0.5, "features": ["a", "b"], "label": "churned", "seed": 7},
    metrics={"accuracy": 0.9, "n_test": 120, "auc": math.nan, "gap": math.inf, "flag": True},
)


def test_params_metrics_and_tags_come_from_the_card(tmp_path: Path) -> None:
    write_model_dir(tmp_path, CARD)
    contents = run_contents(tmp_path)
    # str(value), as mlflow.log_params stores them.
    assert contents.params == {
        "alpha": "0.5",
        "features": "['a', 'b']",
        "label": "churned",
        "seed": "7",
    }
    # Only finite numbers: NaN, infinity and booleans are no metric MLflow can plot.
    assert contents.metrics == {"accuracy": 0.9, "n_test": 120.0}
    assert contents.tags["nb2prod.notebook_sha256"] == "ab" * 32
    assert contents.tags["nb2prod.model_version"] == "0a1b2c3d4e5f"
    assert contents.tags["mlflow.source.name"] == "notebooks/churn model.ipynb"
    assert contents.registered_model == "churn-model"


def test_registered_model_names_have_no_slash_or_colon() -> None:
    assert mlflow_model_name("iris_function") == "iris_function"
    assert mlflow_model_name("team/model:v2") == "team-model-v2"
    assert mlflow_model_name("..") == "model"


def test_a_password_in_the_uri_is_never_shown() -> None:
    assert redact("https://me:s3cret@mlflow.example.com/") == "https://me:***@mlflow.example.com/"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def files_in(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_the_logged_copy_leaves_out_caches(tmp_path: Path) -> None:
    write_model_dir(tmp_path, CARD)
    (tmp_path / "serving.py").write_text("app = None\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "serving.cpython-311.pyc").write_bytes(b"\0")
    with staged_build_copy(run_contents(tmp_path)) as copy:
        assert files_in(copy) == {"serving.py", "model/model_card.json", "model/golden.json"}


def test_golden_rows_are_left_out_when_columns_are_sensitive(tmp_path: Path) -> None:
    """The golden set holds raw training rows: with sensitive columns they stay home."""
    write_model_dir(tmp_path, make_card(sensitive_columns=["a"]))
    contents = run_contents(tmp_path)
    assert contents.left_out == ("model/golden.json",)
    with staged_build_copy(contents) as copy:
        assert files_in(copy) == {"model/model_card.json"}


def test_an_experiment_without_a_server_is_a_usage_error(tmp_path: Path) -> None:
    write_model_dir(tmp_path, CARD)
    result = run_cli("track", tmp_path, "--mlflow-experiment", "x", env={"MLFLOW_TRACKING_URI": ""})
    assert result.returncode == 2
    assert "--mlflow-experiment names where a run goes" in result.error_lines[0]
    result = run_cli("track", tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert result.returncode == 2
    assert result.error_lines == ["Error: no MLflow tracking server to log to"]


def test_no_mlflow_overrides_the_environment_but_not_the_flag(tmp_path: Path) -> None:
    notebook = tmp_path / "absent.ipynb"  # refused before the notebook is read
    both = run_cli("build", notebook, "--mlflow", "http://127.0.0.1:9", "--no-mlflow")
    assert both.returncode == 2
    assert both.error_lines == ["Error: --mlflow and --no-mlflow contradict each other"]
    # From the environment, --no-mlflow wins: the build goes on (and fails on the notebook).
    env_only = run_cli(
        "build", notebook, "--no-mlflow", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    )
    assert env_only.returncode == 3, env_only.stderr


def test_without_the_extra_build_stops_before_training(
    tmp_path: Path, make_notebook: Callable[..., Path]
) -> None:
    """exit 14 naming the extra, and no build directory: nothing was trained in vain."""
    notebook = make_notebook(
        [
            ("x = [[0.0], [1.0]]\ny = [0, 1]", ["load"]),
            ("model = sum(y)", ["train"]),
            ("def predict(model, features):\n    return [model] * len(features)", ["predict"]),
        ]
    )
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['mlflow'] = None\n"  # as if nb2prod[mlflow] were not installed
        "from nb2prod.cli import main\n"
        f"main(['build', {str(notebook)!r}, '--no-docker', '-o', {str(out)!r}, "
        "'--mlflow', 'http://127.0.0.1:9'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 14, result.stderr
    assert error_lines(result.stderr)[0].startswith("Error: Experiment tracking")
    assert "Hint: pip install 'nb2prod[mlflow]'" in result.stderr
    assert "training" not in result.stderr
    assert not out.exists()
