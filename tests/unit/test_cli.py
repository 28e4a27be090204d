"""The command line in process: help, version, usage errors and the one exit path.

Each test goes through ``nb2prod.cli.main`` (helpers.run_cli), as the console script does, so
the mapping from exceptions to ``Error:``/``Hint:`` lines and exit codes is the real one. What
only a separate process shows (the installed script, signals, the real stderr) is in
test_cli_process.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import example_notebook, run_cli

import nb2prod
from nb2prod import errors, pipeline

#: The commands the README documents.
COMMANDS = {
    "build",
    "check",
    "compare",
    "deploy",
    "generate",
    "monitor",
    "promote",
    "push",
    "rollback",
    "serve",
}


def _error_classes() -> list[type[errors.Nb2ProdError]]:
    """Every concrete error class users can meet (all subclasses of the base, recursively)."""
    found: list[type[errors.Nb2ProdError]] = []
    pending = list(errors.Nb2ProdError.__subclasses__())
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command_and_exit_code(flag: str) -> None:
    result = run_cli(flag)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: nb2prod [OPTIONS] COMMAND [ARGS]...")
    listed = result.stdout.split("Commands:", 1)[1]
    assert {line.split()[0] for line in listed.splitlines() if line.startswith("  ")} >= COMMANDS
    table = result.stdout.split("Exit codes:", 1)[1]
    codes = {int(line.split()[0]) for line in table.splitlines() if line.strip()}
    # Each error class's code is documented, so a user reading $? can tell what happened.
    assert {kind.exit_code for kind in _error_classes()} <= codes


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: nb2prod {command} [OPTIONS]")
    assert result.stderr == ""


def test_version_is_the_package_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"nb2prod, version {nb2prod.__version__}\n",
        "",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "Error: No such command 'bogus'."),
        (["build"], "Error: Missing argument 'NOTEBOOK'."),
        (["check", "nb.ipynb", "--bogus"], "Error: No such option '--bogus'."),
        (
            ["serve", "dir", "--port", "x"],
            "Error: Invalid value for '--port': 'x' is not a valid integer.",
        ),
    ],
)
def test_usage_errors_exit_2_with_usage_and_one_error_line(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("Usage: nb2prod ")
    assert result.error_lines == [message]


def test_a_bad_parameter_is_one_error_line_and_a_hint_exit_2(tmp_path: Path) -> None:
    result = run_cli("check", example_notebook("iris_function"), "-p", "C", cwd=tmp_path)
    assert result.returncode == errors.ConfigError.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "Error: parameter override 'C' is not name=value"
    assert lines[1].startswith("Hint: ") and "-p" in lines[1]
    assert len(lines) == 2


def test_check_of_a_good_notebook_exits_0_and_writes_only_stdout(tmp_path: Path) -> None:
    result = run_cli("check", example_notebook("iris_function"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "predict" in result.stdout
    assert result.error_lines == []
    assert list(tmp_path.iterdir()) == []  # check writes nothing


def test_a_bug_is_one_line_and_a_report_hint_unless_debug(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("something nb2prod did not expect")

    monkeypatch.setattr(pipeline, "check_plan", broken)
    result = run_cli("check", example_notebook("iris_function"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.error_lines == [
        "Error: unexpected RuntimeError: something nb2prod did not expect"
    ]
    assert "--debug" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(RuntimeError, match="did not expect"):
        run_cli("--debug", "check", example_notebook("iris_function"), cwd=tmp_path)


def test_keyboard_interrupt_is_exit_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "check_plan", interrupted)
    result = run_cli("check", example_notebook("iris_function"), cwd=tmp_path)
    # click ends the interrupted line with a newline of its own before nb2prod's message.
    assert (result.returncode, result.stdout, result.stderr.strip()) == (130, "", "Interrupted.")
