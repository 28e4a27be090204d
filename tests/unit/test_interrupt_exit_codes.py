"""How the CLI ends when it is stopped or given a directory it cannot use.

SIGTERM unwinds like Ctrl-C (every ``finally`` runs) and exits 143; Ctrl-C exits 130.
A DIRECTORY that is not a usable build directory is one ``Error:`` line and exit 2, for
every command that takes one. The real process and real containers are in
tests/integration/test_interrupts.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import example_notebook, run_cli

from nb2prod import pipeline


def test_sigterm_runs_every_finally_and_exits_143(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cleaned = []

    def terminated(*_: object, **__: object) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler interrupts this at once
        finally:
            cleaned.append("finally ran")

    monkeypatch.setattr(pipeline, "check_plan", terminated)
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    result = run_cli("check", example_notebook("iris_function"), cwd=tmp_path)

    assert (result.returncode, result.stdout, result.stderr.strip()) == (143, "", "Terminated.")
    assert cleaned == ["finally ran"]
    assert time.monotonic() - started < 10
    # The handler is nb2prod's only while it runs: the caller's comes back.
    assert signal.getsignal(signal.SIGTERM) == before


def test_exit_codes_130_and_143_are_in_the_help() -> None:
    table = run_cli("--help").stdout.split("Exit codes:", 1)[1]
    codes = {int(line.split()[0]): line for line in table.splitlines() if line.strip()}
    assert "SIGINT" in codes[130] and "SIGTERM" in codes[143]


def _not_a_build_dir(root: Path) -> None:
    (root / "notes.txt").write_text("my notes\n")


def _old_card(root: Path) -> None:
    # A card from before the schema was versioned: the fields an early nb2prod wrote.
    (root / "model").mkdir()
    (root / "model" / "model_card.json").write_text(
        json.dumps({"name": "iris", "model_version": "0a1b2c3d4e5f", "metrics": {}})
    )
    (root / "build.json").write_text("{}\n")


def _broken_card(root: Path) -> None:
    (root / "model").mkdir()
    (root / "model" / "model_card.json").write_text('{"name": "iris", "model_vers')


def _broken_image_record(root: Path) -> None:
    _old_card(root)
    (root / ".nb2prod").mkdir()
    (root / ".nb2prod" / "image.json").write_text('{"image_id": 3}')


DIRECTORIES = {
    "not a build dir": _not_a_build_dir,
    "an old model card": _old_card,
    "a broken model card": _broken_card,
    "a broken image record": _broken_image_record,
}
COMMANDS = {
    "serve": ["serve"],
    "push": ["push", "--registry", "127.0.0.1:5000"],
    "deploy kubernetes": ["deploy", "--target", "kubernetes"],
    "deploy cloudrun": ["deploy", "--dry-run", "--project", "p", "--region", "europe-west1"],
    "promote": ["promote"],
    "rollback": ["rollback"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("directory", DIRECTORIES)
def test_a_directory_that_is_no_usable_build_is_one_error_line_and_exit_2(
    tmp_path: Path, command: str, directory: str
) -> None:
    build_dir = tmp_path / "dir"
    build_dir.mkdir()
    DIRECTORIES[directory](build_dir)

    result = run_cli(*COMMANDS[command], build_dir, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    assert str(build_dir) in result.error_lines[0]
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
