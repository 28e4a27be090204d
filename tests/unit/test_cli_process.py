"""The command line as a separate process: only what an in-process run cannot show.

The installed console script, what reaches the real stderr (no traceback, no stray warnings or
log lines) and Ctrl-C while a child process trains. Everything else about the CLI is tested in
process in test_cli.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import error_lines, write_notebook

from nb2prod.errors import NotebookError

SCRIPT = Path(sys.executable).parent / "nb2prod"


def test_the_console_script_is_installed_and_runs_main() -> None:
    assert SCRIPT.is_file(), f"no console script beside {sys.executable}"
    assert shutil.which("nb2prod") is not None, "nb2prod is not on PATH"
    result = subprocess.run(
        [SCRIPT, "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("nb2prod, version ")


def test_a_refusal_leaves_only_error_and_hint_on_the_real_stderr(tmp_path: Path) -> None:
    """The real stderr, where pytest's warning filters and capture do not reach."""
    notebook = tmp_path / "broken.ipynb"
    notebook.write_text('{"cells": [,')
    result = subprocess.run(
        [SCRIPT, "build", notebook, "--no-docker", "-o", tmp_path / "out"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == NotebookError.exit_code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert error_lines(result.stderr) == [lines[0]], result.stderr
    assert all(line.startswith(("Error: ", "Hint: ")) for line in lines), result.stderr
    assert not (tmp_path / "out").exists()


#: Training that announces itself, then takes long enough to be interrupted.
SLOW_TRAINING = [
    ("import time\nimport pandas as pd", None),
    ("X = pd.DataFrame({'a': [1.0, 2.0, 3.0]})", ["load"]),
    ("print('training started', flush=True)\ntime.sleep(120)\nmodel = 2.0", ["train"]),
    ("def predict(model, features):\n    return list(features['a'] * model)", ["predict"]),
]


def test_ctrl_c_during_training_exits_130_and_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole foreground process group: nb2prod and its training child."""
    notebook = write_notebook(tmp_path / "slow.ipynb", SLOW_TRAINING)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [SCRIPT, "build", notebook, "--no-docker", "--train-on-host", "-o", out],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        assert process.stdout is not None
        seen = []
        deadline = time.monotonic() + 120
        for line in process.stdout:
            seen.append(line)
            if "training started" in line:
                break
            assert time.monotonic() < deadline, "".join(seen)
        else:
            pytest.fail(f"training never started:\n{''.join(seen)}")
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = "".join(seen) + rest
    assert process.returncode == 130, output
    assert "Interrupted." in rest, output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert "Traceback" not in output
