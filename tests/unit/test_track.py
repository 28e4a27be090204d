"""What a build directory becomes in an MLflow run, and the tracking options' refusals.

No tracking server here: tests/integration/test_mlflow.py logs real builds to a real one.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fake_build import make_card, write_model_dir
from helpers import error_lines, run_cli

from nb2prod.errors import ConfigError
from nb2prod.naming import mlflow_model_name
from nb2prod.track import check_tracking_uri
from nb2prod.track.contents import redact, run_contents, scrub, staged_build_copy

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
    # Unencoded '@' and '/' in a password, as people type them: masked whole.
    assert redact("http://me:p@ss@host:5000/x") == "http://me:***@host:5000/x"
    assert redact("http://me:pa/ss@host:5000") == "http://me:***@host:5000"
    # A token alone as the user info (https://TOKEN@host) is the secret itself.
    assert redact("https://ghp_token123@host/") == "https://***@host/"
    assert redact("databricks://profile") == "databricks://profile"


def test_error_messages_are_scrubbed_of_the_password() -> None:
    uri = "http://alice:hunter2@x@127.0.0.1:5000"
    message = (
        f"API request to {uri}/api/2.0/mlflow/runs/create failed; "
        "auth alice:hunter2%40x; password hunter2@x"
    )
    scrubbed = scrub(message, uri)
    assert "hunter2" not in scrubbed
    assert "http://alice:***@127.0.0.1:5000/api/2.0/mlflow/runs/create" in scrubbed


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("mlflow.internal:5000", "has no scheme"),
        ("http://", "names no host"),
        ("http://127.0.0.1:notaport", "is not a valid URL (Invalid port: 'notaport')"),
        ("http://me:pa/ss@127.0.0.1:5000", "--mlflow http://me:***@127.0.0.1:5000 is not a valid"),
    ],
)
def test_a_malformed_uri_is_a_usage_error_that_hides_the_password(uri: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_tracking_uri(uri)
    assert says in raised.value.message
    assert "pa/ss" not in raised.value.message and "'pa'" not in raised.value.message


def test_well_formed_uris_pass_the_check() -> None:
    for uri in ("http://127.0.0.1:5000", "https://u:p@mlflow.example.com/x/", "databricks",
                "sqlite:///mlflow.db", "file:///tmp/mlruns", "mlruns"):  # fmt: skip
        check_tracking_uri(uri)


def test_build_refuses_a_malformed_uri_before_reading_the_notebook(tmp_path: Path) -> None:
    result = run_cli("build", tmp_path / "absent.ipynb", "--no-docker",
                     "--mlflow", "http://me:pa/ss@127.0.0.1:9")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "pa/ss" not in result.stderr and "not a valid URL" in result.stderr


@contextmanager
def answering(status: int) -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A local server answering every request with ``status`` and an MLflow error body;
    yields its address and the (path, Authorization header) of each request."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            body = json.dumps({"error_code": "INTERNAL_ERROR", "message": "down"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer  # noqa: N815 - http.server's names

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_failing_server_is_exit_20_and_the_password_never_printed(tmp_path: Path) -> None:
    """MLflow's own message quotes the whole URI, password included: it is scrubbed. The
    reachability probe sends no credentials at all."""
    write_model_dir(tmp_path, CARD)
    with answering(500) as (address, seen):
        uri = f"http://alice:hunter2secret@{address}"
        result = run_cli("track", tmp_path, "--mlflow", uri,
                         env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})  # fmt: skip
    assert result.returncode == 20, result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
    assert f"http://alice:***@{address}" in result.error_lines[0]
    assert "is complete and kept" in result.error_lines[0]
    assert seen[0] == ("/health", None)
    assert any(path.startswith("/api/") and auth for path, auth in seen[1:])  # MLflow's calls
    assert (tmp_path / "model" / "model_card.json").is_file()


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
    """The golden set holds raw training rows, and the training log what the notebook printed
    (often df.head()): with sensitive columns they stay home."""
    write_model_dir(tmp_path, make_card(sensitive_columns=["a"]))
    (tmp_path / ".nb2prod").mkdir()
    (tmp_path / ".nb2prod" / "train.log").write_text("   ssn  a\n0  123-45-6789  1.0\n")
    (tmp_path / ".nb2prod" / "build.log").write_text("Step 1/9 : FROM python:3.11-slim\n")
    contents = run_contents(tmp_path)
    assert contents.left_out == ("model/golden.json", ".nb2prod/train.log")
    with staged_build_copy(contents) as copy:
        assert files_in(copy) == {"model/model_card.json", ".nb2prod/build.log"}


def test_without_sensitive_columns_the_training_log_is_logged(tmp_path: Path) -> None:
    write_model_dir(tmp_path, CARD)
    (tmp_path / ".nb2prod").mkdir()
    (tmp_path / ".nb2prod" / "train.log").write_text("accuracy 0.9\n")
    with staged_build_copy(run_contents(tmp_path)) as copy:
        assert ".nb2prod/train.log" in files_in(copy)


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
