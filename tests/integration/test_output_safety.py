"""No build may destroy the user's files: the notebook, its data, or files added to a build dir.

Every case runs the real CLI (in process, through ``nb2prod.cli.main``) on a small notebook
that reads a CSV beside it, and checks the exit code, the one ``Error:`` line and the files
left afterwards. Builds train for real (a few seconds each), so this lives in integration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli, write_notebook

pytestmark = pytest.mark.slow

CELLS = [
    ("import pandas as pd\nfrom sklearn.linear_model import LogisticRegression", ()),
    ('df = pd.read_csv("data.csv")', ("load",)),
    ('X, y = df[["a", "b"]], df["y"]', ("preprocess",)),
    ("model = LogisticRegression().fit(X, y)", ("train",)),
    ("predictions = model.predict(X)", ("predict",)),
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A notebook folder: the notebook and the CSV it reads."""
    folder = tmp_path / "project"
    write_notebook(folder / "nb.ipynb", CELLS)
    rows = ["a,b,y"] + [f"{i % 7},{(i * 3) % 5},{int(i % 7 > 3)}" for i in range(60)]
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("output", [".", ".."])
def test_force_never_builds_over_the_notebook_or_its_data(project: Path, output: str) -> None:
    """`cd nbdir && nb2prod build nb.ipynb -o . --force --no-docker` used to delete both."""
    before = _snapshot(project.parent)
    result = run_cli("build", "nb.ipynb", "-o", output, "--force", "--no-docker", cwd=project)
    assert result.returncode == 4, result.stderr
    assert len(result.error_lines) == 1 and "nb.ipynb" in result.error_lines[0]
    assert "Traceback" not in result.stderr
    assert _snapshot(project.parent) == before


def test_output_holding_a_data_file_is_refused(project: Path, tmp_path: Path) -> None:
    """-o pointing at a folder that holds data the notebook reads through a path."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "extra.csv").write_text("a\n1\n")
    notebook = write_notebook(
        project / "nb2.ipynb",
        [*CELLS[:2], (f'extra = pd.read_csv("{shared}/extra.csv")', ("load",)), *CELLS[2:]],
    )
    result = run_cli("generate", notebook, "-o", shared, "--force")
    assert result.returncode == 4
    assert "extra.csv" in result.error_lines[0]
    assert (shared / "extra.csv").read_text() == "a\n1\n"


def test_rebuild_keeps_files_a_user_added_even_with_force(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("build", project / "nb.ipynb", "-o", out, "--no-docker").returncode == 0
    record = json.loads((out / "build.json").read_text())
    assert "train.py" in record["files"] and "model/state.pkl" in record["files"]

    # A rebuild of an untouched build dir needs no --force.
    assert run_cli("build", project / "nb.ipynb", "-o", out, "--no-docker").returncode == 0

    (out / "notes.txt").write_text("mine")
    result = run_cli("build", project / "nb.ipynb", "-o", out, "--no-docker", "--force")
    assert result.returncode == 4
    assert "notes.txt" in result.error_lines[0] and "--force" in result.error_lines[0]
    assert (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_edited_generated_files_are_kept_aside_with_force(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("generate", project / "nb.ipynb", "-o", out).returncode == 0
    edited = (out / "model_code.py").read_text() + "# my tweak\n"
    (out / "model_code.py").write_text(edited)

    refused = run_cli("generate", project / "nb.ipynb", "-o", out)
    assert refused.returncode == 4 and "model_code.py" in refused.error_lines[0]
    assert (out / "model_code.py").read_text() == edited

    forced = run_cli("generate", project / "nb.ipynb", "-o", out, "--force")
    assert forced.returncode == 0, forced.stderr
    backups = list(tmp_path.glob("out.edited-*"))
    assert len(backups) == 1 and (backups[0] / "model_code.py").read_text() == edited
    assert "# my tweak" not in (out / "model_code.py").read_text()


def test_a_directory_nb2prod_did_not_write_is_refused_even_with_force(
    project: Path, tmp_path: Path
) -> None:
    target = tmp_path / "theirs"
    target.mkdir()
    (target / "build.json").write_text("{}")  # a marker alone proves nothing
    (target / "report.pdf").write_bytes(b"%PDF")
    result = run_cli("generate", project / "nb.ipynb", "-o", target, "--force")
    assert result.returncode == 4 and len(result.error_lines) == 1
    assert sorted(p.name for p in target.iterdir()) == ["build.json", "report.pdf"]


def test_an_unwritable_output_location_is_one_clear_error(project: Path, tmp_path: Path) -> None:
    """The folder for -o cannot be made (here: its parent is a file; as root, permission bits
    do not stop writes, so this is how the test reaches the same refusal in CI)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = run_cli("generate", project / "nb.ipynb", "-o", blocker / "out")
    assert result.returncode == 2 and len(result.error_lines) == 1, result.stderr
    assert "cannot write the build directory" in result.error_lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.docker
def test_a_failed_image_build_leaves_the_last_good_build_untouched(
    project: Path, tmp_path: Path, docker_engine: object
) -> None:
    """Exit 8 from the image step used to leave an untested model under the old name."""
    out = tmp_path / "out"
    first = run_cli("build", project / "nb.ipynb", "-o", out, "--train-on-host")
    assert first.returncode == 0, first.stderr
    assert (out / ".nb2prod" / "image.json").is_file()
    assert (out / ".nb2prod" / "smoke.json").is_file()
    before = _snapshot(out)

    # Change the model, then fail the image step: the base image does not exist locally.
    data = project / "data.csv"
    data.write_text(data.read_text().replace("\n0,", "\n6,", 3))
    failed = run_cli(
        "build",
        project / "nb.ipynb",
        "-o",
        out,
        "--train-on-host",
        "--base-image",
        "nb2prod-test/no-such-base:1",
    )
    assert failed.returncode == 8, failed.stderr
    assert len(failed.error_lines) == 1 and "Traceback" not in failed.stderr
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    logs = [word for word in failed.stderr.split() if "nb2prod-out-failed-" in word]
    assert logs and Path(logs[0].rstrip(".")).exists(), failed.stderr
