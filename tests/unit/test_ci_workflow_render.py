"""``nb2prod ci init``: what it refuses, what it never overwrites, and the workflow's scripts.

The scripts of the workflow's ``run:`` steps are run here with bash against a stand-in
``nb2prod`` (and ``python``) that records its arguments and exits as told, so the gate's
exit-code handling, its retries within GitHub's 6-hour limit and the install step are checked
without Docker. tests/integration/test_ci_init.py runs the real commands in order.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from helpers import assert_valid_github_workflow, run_cli

from nb2prod.ci import workflow

WORKFLOW = Path(".github/workflows/nb2prod-retrain.yml")


def make_repo(root: Path, notebook: str = "model.ipynb") -> Path:
    (root / notebook).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(), root / notebook)
    return root


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def steps(path: Path) -> dict[str, dict[str, Any]]:
    return {step.get("name", step.get("id", "")): step for step in job(path)["steps"]}


def job(path: Path) -> dict[str, Any]:
    return dict(load(path)["jobs"]["retrain"])


def test_a_notebook_name_with_a_quote_and_a_hash_makes_a_valid_workflow(tmp_path: Path) -> None:
    """A single quote would end the GitHub expression's literal, and ` #` start a YAML comment."""
    make_repo(tmp_path, "notebooks/Mike's model #2.ipynb")
    result = run_cli("ci", "init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    env = job(tmp_path / WORKFLOW)["env"]
    assert env["NOTEBOOK"] == "${{ vars.NB2PROD_NOTEBOOK || 'notebooks/Mike''s model #2.ipynb' }}"
    assert env["CHAMPION_DIR"] == "${{ vars.NB2PROD_CHAMPION_DIR || 'builds/champion' }}"
    assert_valid_github_workflow(tmp_path / WORKFLOW)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--notebook", "/etc/hosts"], "is outside the repository root"),
        (["--notebook", "missing.ipynb"], "no such notebook"),
        (["--champion-dir", "../elsewhere"], "is not a path inside the repository"),
        (["--schedule", "every monday"], "is not a cron schedule of five fields"),
        (["--schedule", '0 6 * * "1"'], "is not a cron schedule of five fields"),
    ],
)
def test_values_a_workflow_cannot_use_are_refused_and_nothing_written(
    tmp_path: Path, args: list[str], says: str
) -> None:
    make_repo(tmp_path)
    result = run_cli("ci", "init", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert says in result.error_lines[0]
    assert not (tmp_path / ".github").exists()


def test_an_absolute_notebook_path_in_the_repository_is_written_relative(tmp_path: Path) -> None:
    make_repo(tmp_path, "nb/churn.ipynb")
    result = run_cli("ci", "init", "--notebook", tmp_path / "nb" / "churn.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "'nb/churn.ipynb'" in job(tmp_path / WORKFLOW)["env"]["NOTEBOOK"]
    assert str(tmp_path) not in (tmp_path / WORKFLOW).read_text()


def test_run_in_a_subfolder_it_writes_at_the_repositorys_root(tmp_path: Path) -> None:
    """GitHub reads .github/ at the repository's root only: a workflow in a subfolder never runs."""
    make_repo(tmp_path, "notebooks/churn.ipynb")
    (tmp_path / ".git").mkdir()
    result = run_cli("ci", "init", "--notebook", "churn.ipynb", cwd=tmp_path / "notebooks")
    assert result.returncode == 0, result.stderr
    assert f"writing for the repository at {tmp_path}" in result.stderr
    assert not (tmp_path / "notebooks" / ".github").exists()
    assert "'notebooks/churn.ipynb'" in job(tmp_path / WORKFLOW)["env"]["NOTEBOOK"]


def test_an_unwritable_output_is_one_error_line(tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "a-file").write_text("mine\n")
    result = run_cli("ci", "init", "-o", tmp_path / "a-file" / "wf.yml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.error_lines[0].startswith("Error: cannot write")
    assert (tmp_path / "a-file").read_text() == "mine\n"


def test_a_windows_checkout_of_an_unedited_workflow_is_not_an_edit(tmp_path: Path) -> None:
    make_repo(tmp_path)
    assert run_cli("ci", "init", cwd=tmp_path).returncode == 0
    path = tmp_path / WORKFLOW
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))  # git's core.autocrlf
    result = run_cli("ci", "init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not list(path.parent.glob("*.edited-*"))


def test_force_never_overwrites_an_earlier_edited_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two --force runs in the same second each keep their own copy of the user's edits."""
    make_repo(tmp_path)
    monkeypatch.setattr(workflow.time, "strftime", lambda _: "20260601-120000")
    path = tmp_path / WORKFLOW
    assert run_cli("ci", "init", cwd=tmp_path).returncode == 0
    kept = []
    for edit in ("first edit", "second edit"):
        path.write_text(path.read_text() + f"# {edit}\n")
        result = run_cli("ci", "init", "--force", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        kept.append(sorted(path.parent.glob("*.edited-*")))
    names = [p.name for p in kept[-1]]
    assert names == [
        "nb2prod-retrain.yml.edited-20260601-120000",
        "nb2prod-retrain.yml.edited-20260601-120000-1",
    ]
    assert "# first edit" in kept[-1][0].read_text()
    assert "# second edit" in kept[-1][1].read_text()


def test_a_users_workflow_is_refused_even_with_force(tmp_path: Path) -> None:
    make_repo(tmp_path)
    path = tmp_path / WORKFLOW
    path.parent.mkdir(parents=True)
    path.write_text("name: mine\non: push\njobs: {}\n")
    result = run_cli("ci", "init", "--force", cwd=tmp_path)
    assert result.returncode == 4 and "did not write it" in result.stderr
    assert path.read_text() == "name: mine\non: push\njobs: {}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["nb2prod-retrain.yml"]


# -- the workflow's scripts ----------------------------------------------------------------


@pytest.fixture
def written(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo")
    assert run_cli("ci", "init", cwd=repo).returncode == 0
    return repo / WORKFLOW


def fake_command(bin_dir: Path, name: str) -> None:
    """``name`` on PATH: appends its arguments to CALLS, exits with STATUS_<name> (0)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    script.write_text(
        "#!/bin/bash\n"
        f'echo "{name} $*" >> "$CALLS"\n'
        f'exit "${{STATUS_{name}:-0}}"\n'
    )  # fmt: skip
    script.chmod(0o755)


def run_step(
    path: Path, name: str, tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str], str]:
    """The step's script as the runner runs it, with the job's settings as plain values."""
    bin_dir = tmp_path / "bin"
    for command in ("nb2prod", "python", "sleep"):  # sleep: recorded, not waited for
        fake_command(bin_dir, command)
    calls, outputs = tmp_path / "calls", tmp_path / "github_output"
    for file in (calls, outputs, tmp_path / "summary"):
        file.write_text("")
    settings = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(calls),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "GITHUB_RUN_ID": "4242",
        "BUILD_DIR": "build-new",
        "NOTEBOOK": "model.ipynb",
        "CHAMPION_DIR": "builds/champion",
        "REQUIREMENTS": "requirements.txt",
        "REGISTRY": "us-docker.pkg.dev/proj/repo",
        "PROJECT": "proj",
        "REGION": "europe-west1",
        "PREDICTIONS": "gs://bucket/log/",
        "LABELS": "gs://bucket/labels.csv",
        "WAIT_MINUTES": "60",
        "GATE_ATTEMPTS": "6",
        "GATE_OPTIONS": "",
        "GATE_RUN_ID": "",
        "NB2PROD_PACKAGE": "",
        "STARTED": "",
        **env,
    }
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", steps(path)[name]["run"]],
        cwd=tmp_path, env=settings, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return result, calls.read_text().splitlines(), outputs.read_text()


GATE = "Gate the canary on live quality"


def test_the_gate_retries_a_wait_then_leaves_the_canary_waiting(
    written: Path, tmp_path: Path
) -> None:
    result, calls, outputs = run_step(written, GATE, tmp_path, STATUS_nb2prod="18",
                                      GATE_ATTEMPTS="3")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [c.split()[0:2] for c in calls] == [["nb2prod", "promote"], ["sleep", "3600"]] * 2 + [
        ["nb2prod", "promote"]
    ]
    assert "decision=wait" in outputs
    assert "gate_run_id=4242" in result.stdout


def test_a_gate_rerun_that_still_waits_names_the_run_holding_the_build(
    written: Path, tmp_path: Path
) -> None:
    """The re-run has no artifact of its own: the next re-run needs the original run's id."""
    result, _, _ = run_step(written, GATE, tmp_path, STATUS_nb2prod="18", GATE_ATTEMPTS="1",
                            GATE_RUN_ID="1111")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "gate_run_id=1111" in result.stdout and "4242" not in result.stdout


def test_the_gate_stops_retrying_before_githubs_six_hour_limit(
    written: Path, tmp_path: Path
) -> None:
    """The defaults (60 minutes, 6 attempts) sleep 6 hours: the job would be killed before
    saying anything. The retries stop when the next wait would not fit."""
    started = int(time.time()) - 5 * 3600  # the job started 5 hours ago
    result, calls, outputs = run_step(written, GATE, tmp_path, STATUS_nb2prod="18",
                                      STARTED=str(started))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert calls == [calls[0]] and calls[0].startswith("nb2prod promote build-new --gate")
    assert "decision=wait" in outputs
    assert job(written)["timeout-minutes"] <= 360


@pytest.mark.parametrize(("status", "decision"), [("0", "promote"), ("19", "rollback")])
def test_the_gate_promotes_on_0_and_fails_the_job_on_19(
    written: Path, tmp_path: Path, status: str, decision: str
) -> None:
    result, calls, outputs = run_step(written, GATE, tmp_path, STATUS_nb2prod=status,
                                      GATE_ATTEMPTS="0")  # fmt: skip
    assert result.returncode == int(status)
    assert len(calls) == 1  # at least one attempt, whatever NB2PROD_GATE_ATTEMPTS says
    assert f"decision={decision}" in outputs


def test_any_other_gate_failure_fails_the_job_with_its_code(written: Path, tmp_path: Path) -> None:
    result, calls, outputs = run_step(written, GATE, tmp_path, STATUS_nb2prod="14")
    assert result.returncode == 14 and len(calls) == 1 and "decision" not in outputs


def test_the_install_step_brings_the_extras_and_the_notebooks_packages(
    written: Path, tmp_path: Path
) -> None:
    """build pins the notebook's imports from the runner's environment, and the gate reads
    gs:// (gcsfs), Parquet (pyarrow) and bq:// (pandas-gbq): all must be installed."""
    install = "Install nb2prod"
    champion = tmp_path / "builds" / "champion"
    champion.mkdir(parents=True)
    (champion / "requirements.txt").write_text("scikit-learn==1.5.0\n")
    version = workflow.__version__

    _, calls, _ = run_step(written, install, tmp_path)
    assert calls == [
        f"python -m pip install nb2prod[cloudrun,gcs,batch]=={version}",
        "python -m pip install -r builds/champion/requirements.txt",
    ]
    (tmp_path / "requirements.txt").write_text("scikit-learn\n")
    _, calls, _ = run_step(written, install, tmp_path, PREDICTIONS="bq://p.logs.predictions")
    assert calls == [
        f"python -m pip install nb2prod[cloudrun,gcs,batch,bigquery]=={version}",
        "python -m pip install -r requirements.txt",
    ]
    _, calls, _ = run_step(
        written, install, tmp_path, NB2PROD_PACKAGE="nb2prod==9", GATE_RUN_ID="7"
    )
    assert calls == ["python -m pip install nb2prod==9"]  # a gate re-run builds nothing


def test_docker_logs_in_to_the_registrys_own_host(written: Path, tmp_path: Path) -> None:
    """A multi-region repository (us-docker.pkg.dev) is not in NB2PROD_REGION's host."""
    champion = tmp_path / "builds" / "champion" / "model"
    champion.mkdir(parents=True)
    (champion / "model_card.json").write_text("{}")
    result, _, outputs = run_step(written, "Check the settings", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "registry_host=us-docker.pkg.dev\n" in outputs
    login = next(s for s in job(written)["steps"] if s.get("uses", "").startswith("docker/login"))
    assert login["with"]["registry"] == "${{ steps.settings.outputs.registry_host }}"


def test_uploaded_build_directories_leave_raw_training_rows_out(written: Path) -> None:
    """Artifacts are readable by everyone who can read the repository, and the champion's is
    committed: the golden rows and the training log stay on the runner."""
    uploads = [s for s in job(written)["steps"] if s.get("uses", "").startswith("actions/upload")]
    assert len(uploads) == 2
    for step in uploads:
        paths = step["with"]["path"].split()
        assert paths == [
            "build-new",
            "!build-new/model/golden.json",
            "!build-new/.nb2prod/train.log",
        ]
        assert step["with"]["include-hidden-files"] is True


def test_the_rendered_workflow_matches_a_fresh_render(written: Path) -> None:
    """ci init is deterministic: the checksum header of a rewrite is the same."""
    text = written.read_text()
    assert workflow.written_by_nb2prod(text) == (True, True)
    assert run_cli("ci", "init", cwd=written.parents[2]).returncode == 0
    assert written.read_text() == text
