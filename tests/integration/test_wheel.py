"""The wheel is complete: installed alone in a fresh venv, it renders a notebook.

The templates live in a top-level ``templates/`` folder that hatchling leaves out of a wheel
unless told otherwise; this is the test that catches it. Dependencies come from this
environment (a ``.pth`` naming its site-packages), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_DIR = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_DIR / "example_notebooks" / "wine_script.ipynb"
PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: the build backend (hatchling) comes from this environment.
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "--no-cache-dir", "-w", dist, REPO_DIR,
        cwd=dist,
    )  # fmt: skip
    wheels = list(dist.glob("nb2prod-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_ships_templates_and_runtime(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "nb2prod/templates/cookiecutter.json" in names
    assert "nb2prod/templates/{{cookiecutter.project_slug}}/train.py" in names
    assert "nb2prod/runtime/app.py" in names
    assert not any(name.startswith(("tests/", "example_notebooks/")) for name in names)


def test_the_installed_wheel_renders_a_notebook(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # The dependencies come from this environment. When it is itself a venv,
    # --system-site-packages would give the base interpreter's packages instead, so list this
    # environment's site-packages in a .pth: plain path lines, after the new venv's own
    # site-packages, and the editable install's finder (a .pth there) is not run.
    venv_site = Path(run(python, "-c", PURELIB, cwd=tmp_path).stdout.strip())
    (venv_site / "deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--no-cache-dir", wheel,
        cwd=tmp_path,
    )  # fmt: skip
    where = run(
        python,
        "-c",
        "import json, nb2prod, nb2prod.build.render as r;"
        "print(json.dumps([nb2prod.__file__, str(r.template_dir())]))",
        cwd=tmp_path,
    )
    package_file, templates = json.loads(where.stdout)
    # The venv's copy, not the editable install of the source tree.
    assert Path(package_file).resolve().is_relative_to(venv.resolve()), package_file
    assert Path(templates).resolve().is_relative_to(venv.resolve()), templates

    out = tmp_path / "out"
    run(venv / "bin" / "nb2prod", "generate", NOTEBOOK, "-o", out, cwd=tmp_path)
    for name in ("train.py", "model_code.py", "serving.py", "Dockerfile", "requirements.txt"):
        assert (out / name).is_file(), name
    assert (out / "nb2prod_runtime" / "app.py").is_file()
    compile((out / "train.py").read_text(), "train.py", "exec")
