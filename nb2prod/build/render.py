"""Stage 2: lay out the build directory with cookiecutter.

Fills the template in ``templates/`` with the generated code (codegen.py), the pins
(requirements.py) and the notebook's facts, copies the serving runtime and the
notebook's local modules beside it, and writes the build records. Deciding what the
code says happens elsewhere; this module only places it.
"""

from __future__ import annotations

import json
import os.path
import shutil
import subprocess
import sys
from pathlib import Path

from cookiecutter.exceptions import CookiecutterException
from cookiecutter.main import cookiecutter

from .. import __version__
from ..builddir import BuildDir, write_text_atomically
from ..errors import ConfigError
from ..models import BuildContext, NotebookSpec, Requirement
from ..runtime.plan import ServingPlan
from .codegen import check_script, generate_code
from .requirements import local_modules

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # nb2prod/
CHECK_PROBE = "preprocess_probe.py"  # nb2prod_runtime's module for check --run only


def template_dir() -> Path:
    """The cookiecutter template shipped with nb2prod (in the wheel, or the source tree)."""
    for candidate in (PACKAGE_DIR / "templates", PACKAGE_DIR.parent / "templates"):
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    raise ConfigError("nb2prod's templates are missing from this installation; reinstall nb2prod")


def render_context(
    spec: NotebookSpec,
    plan: ServingPlan,
    requirements: tuple[Requirement, ...],
    destination: Path,
    template: Path | None = None,
    final: Path | None = None,
) -> BuildContext:
    """Render the build context for ``spec`` into ``destination`` (which must not exist yet).

    ``final`` is where the directory will live once renamed into place; paths
    recorded relative to it (the notebook's folder) stay right after the move.
    """
    code = generate_code(spec, plan)
    context = {
        "project_slug": (final or destination).name,
        "notebook_name": spec.path.name,
        "notebook_sha256": spec.sha256,
        "nb2prod_version": __version__,
        "base_image": f"python:{sys.version_info.major}.{sys.version_info.minor}-slim",
        "git_commit": _git_commit(spec.path.parent),
        "_train_header": code.train_header,
        "_train_imports": code.train_imports,
        "_train_body": code.train_body,
        "_serving_header": code.serving_header,
        "_serving_imports": code.serving_imports,
        "_serving_body": code.serving_body,
        "_requirements": "\n".join(r.line for r in requirements),
        "_requirements_serving": "\n".join(r.line for r in requirements if r.serving),
        **_local_module_lines(spec),
    }
    _run_cookiecutter(template or template_dir(), context, destination)
    shutil.copytree(
        PACKAGE_DIR / "runtime",
        destination / "nb2prod_runtime",
        # The check --run probe serves nothing: it stays out of build directories and images.
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", CHECK_PROBE),
        dirs_exist_ok=True,
    )
    _copy_local_modules(spec, destination)
    _write_build_record(spec, plan, destination, final or destination)
    return BuildContext(path=destination, spec=spec, requirements=requirements)


def render_check_context(
    spec: NotebookSpec,
    plan: ServingPlan,
    requirements: tuple[Requirement, ...],
    destination: Path,
    stop: int | None,
) -> BuildContext:
    """A throwaway context for ``nb2prod check --run``: train.py is the check script
    (codegen.check_script), which stops before cell ``stop``."""
    context = render_context(spec, plan, requirements, destination)
    shutil.copy2(PACKAGE_DIR / "runtime" / CHECK_PROBE, destination / "nb2prod_runtime")
    write_text_atomically(destination / "train.py", check_script(spec, plan, stop))
    return context


def _run_cookiecutter(source: Path, context: dict[str, str], destination: Path) -> None:
    staging = destination.parent / f".{destination.name}.render"  # cookiecutter's output
    shutil.rmtree(staging, ignore_errors=True)
    try:
        rendered = Path(
            cookiecutter(
                str(source),
                no_input=True,
                extra_context=context,
                output_dir=str(staging),
                accept_hooks=False,
                default_config=True,
            )
        )
        rendered.rename(destination)
    except CookiecutterException as err:
        raise ConfigError(f"template {source} failed to render: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_build_record(
    spec: NotebookSpec, plan: ServingPlan, destination: Path, final: Path
) -> None:
    """Write build.json: what the directory was rendered from, which train.py reads.

    Its presence also marks a directory nb2prod wrote, so regenerating needs no --force.
    """
    notebook_dir = spec.path.parent
    record = {
        "notebook": _repository_path(spec.path),
        "notebook_dir": str(notebook_dir),
        "notebook_dir_relative": os.path.relpath(notebook_dir.resolve(), final.resolve()),
        "sha256": spec.sha256,
        "name": spec.name,
        "nb2prod_version": __version__,
        "parameters": spec.parameters,
        "parameter_overrides": spec.parameter_overrides,
        "batch_dependent": spec.batch_dependent,
        "serving": plan.to_json(),
        "cells": [
            {"number": c.number, "role": c.role, "first_line": c.first_line}
            for c in spec.cells
            if c.role
        ],
    }
    if spec.sensitive_columns:
        # Only when there are some: every other build's record stays as it was.
        record["sensitive_columns"] = [
            {"name": column.name, "source": column.source} for column in spec.sensitive_columns
        ]
    # repr for the odd literal JSON has no type for (a set, bytes), as the notebook wrote it.
    text = json.dumps(record, indent=2, default=repr) + "\n"
    write_text_atomically(BuildDir(destination).build_record_path, text)


def _local_module_lines(spec: NotebookSpec) -> dict[str, str]:
    """Dockerfile COPY and .dockerignore lines for modules beside the notebook."""
    folder = spec.path.parent
    copy: list[str] = []
    allow: list[str] = []
    for module in sorted(local_modules(spec)):
        name = f"{module}.py" if (folder / f"{module}.py").is_file() else f"{module}/"
        copy.append(f"COPY {name} ./{name}")
        allow.append(f"!{name.rstrip('/')}")
    return {
        "_local_copy": "".join(f"{line}\n" for line in copy),
        "_local_allow": "".join(f"{line}\n" for line in allow),
    }


def _copy_local_modules(spec: NotebookSpec, destination: Path) -> None:
    """Modules beside the notebook (``import utils``) travel with the build context."""
    folder = spec.path.parent
    for module in sorted(local_modules(spec)):
        if (folder / f"{module}.py").is_file():
            shutil.copy2(folder / f"{module}.py", destination / f"{module}.py")
        else:
            shutil.copytree(
                folder / module,
                destination / module,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )


def _repository_path(notebook: Path) -> str:
    """The notebook's path inside its git repository, or its file name outside one.

    The model card carries it, and is served and shipped: no absolute host paths.
    """
    top = _git(notebook.parent, "--show-toplevel")
    if top:
        return Path(os.path.relpath(notebook.resolve(), Path(top).resolve())).as_posix()
    return notebook.name


def _git_commit(folder: Path) -> str:
    return _git(folder, "HEAD")


def _git(folder: Path, what: str) -> str:
    """``git rev-parse WHAT`` in ``folder``; empty when git or a repository is missing."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", what],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
