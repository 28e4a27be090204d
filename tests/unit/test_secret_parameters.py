"""`nb2prod check` refuses to bake a secret-looking parameter, through the real CLI.

A literal password in the parameters cell would be written into build.json, the model card
and the image. Reading it from the environment at run time is accepted.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nb2prod.build.secrets import looks_like_secret

IMPORTS = "import os\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
LOAD = (
    "raw = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0], 'y': [0, 0, 1, 1]})\n"
    "X = raw[['a']]\n"
    "y = raw['y']"
)
TRAIN = "model = LogisticRegression(C=C).fit(X, y)"
PREDICT = "def predict(model, features):\n    return model.predict(features)"


def notebook(make_notebook: Callable[..., Path], parameters: str, load: str = LOAD) -> Path:
    return make_notebook(
        [
            (IMPORTS, None),
            (parameters, ["parameters"]),
            (load, ["load"]),
            (TRAIN, ["train"]),
            (PREDICT, ["predict"]),
        ]
    )


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2prod", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_literal_password_parameter_is_refused_naming_cell_line_and_name(
    make_notebook: Callable[..., Path],
) -> None:
    path = notebook(make_notebook, 'C = 1.0\ndb_host = "db.internal"\ndb_password = "hunter2"')
    result = check(str(path))
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "cell 2 [parameters]" in errors[0] and "line 3" in errors[0]
    assert "`db_password`" in errors[0]
    assert 'os.environ["DB_PASSWORD"]' in result.stderr  # the hint says what to do instead
    assert "Traceback" not in result.stderr + result.stdout
    assert "hunter2" not in result.stderr + result.stdout  # nor is the secret echoed


def test_an_environment_read_outside_the_parameters_cell_is_accepted(
    make_notebook: Callable[..., Path],
) -> None:
    load = 'db_password = os.environ.get("DB_PASSWORD", "")\n' + LOAD
    path = notebook(make_notebook, 'C = 1.0\napi_token = ""\nmax_tokens = 256', load)
    result = check(str(path))
    assert result.returncode == 0, result.stderr


def test_a_secret_passed_as_an_override_is_refused(make_notebook: Callable[..., Path]) -> None:
    path = notebook(make_notebook, 'C = 1.0\napi_token = ""')
    result = check(str(path), "-p", "api_token=abc123")
    assert result.returncode == 2, result.stderr
    assert "-p api_token" in result.stderr and "abc123" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("db_password", True),
        ("DB_PASSWD", True),
        ("apiKey", True),
        ("openai_api_key", True),
        ("HF_TOKEN", True),
        ("client_secret", True),
        ("aws_secret_access_key", True),
        ("max_tokens", False),
        ("tokenizer_name", False),
        ("keyword", False),
        ("learning_rate", False),
    ],
)
def test_secret_names_are_whole_words(name: str, secret: bool) -> None:
    assert looks_like_secret(name) is secret
