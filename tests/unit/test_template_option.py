"""`--template DIR`: a team's own variant of the build-context layout."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import REPO_DIR, CliResult, example_notebook, run_cli

NOTEBOOK = example_notebook("iris_function")


def copy_of_our_template(tmp_path: Path, name: str) -> Path:
    """nb2prod's own template, copied for a test to edit."""
    template = tmp_path / name
    shutil.copytree(REPO_DIR / "templates", template)
    return template


def generate_with(template: Path, out: Path) -> CliResult:
    return run_cli("generate", NOTEBOOK, "-o", out, "--template", template)


def test_generate_renders_a_teams_own_template(tmp_path: Path) -> None:
    template = copy_of_our_template(tmp_path, "our-layout")
    project = template / "{{cookiecutter.project_slug}}"
    (project / "OWNERS").write_text(
        "ml-platform@example.com for {{ cookiecutter.notebook_name }}\n"
    )
    (project / "README.md").unlink()
    out = tmp_path / "ctx"
    result = generate_with(template, out)
    assert result.returncode == 0, result.stderr
    assert (out / "OWNERS").read_text() == "ml-platform@example.com for iris_function.ipynb\n"
    assert not (out / "README.md").exists()
    assert (out / "train.py").is_file() and (out / "nb2prod_runtime" / "app.py").is_file()


def test_a_template_that_fails_to_render_is_one_clear_error(tmp_path: Path) -> None:
    template = copy_of_our_template(tmp_path, "broken")
    (template / "{{cookiecutter.project_slug}}" / "BROKEN").write_text("{{ cookiecutter.nope }}\n")
    out = tmp_path / "ctx"
    result = generate_with(template, out)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: template ")
    assert "Traceback" not in result.stderr
    assert not out.exists()
