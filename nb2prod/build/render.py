"""Stage 2: NotebookSpec -> BuildContext, a rendered build directory.

The notebook's code is turned into two modules (``train.py`` runs the training
cells at top level, as Jupyter would; ``model_code.py`` holds the serving
cells), which the cookiecutter template in ``templates/`` lays out with the
runtime, the requirements and the Dockerfile. Code generation lives here; the
templates only place the generated text.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os.path
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cookiecutter.exceptions import CookiecutterException
from cookiecutter.main import cookiecutter

from .. import __version__
from ..errors import ConfigError, NotebookError
from ..models import SERVING_ROLES, TRAINING_ROLES, BuildContext, Cell, NotebookSpec, Requirement
from .names import BUILTIN_NAMES, name_use

#: What every generated service imports, pinned from this environment.
SERVING_STACK = (
    "fastapi",
    "uvicorn",
    "pydantic",
    "prometheus-client",
    "numpy",
    "pandas",
    "scipy",
    "cloudpickle",
)
MARKER = ".nb2prod.json"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # nb2prod/


def template_dir() -> Path:
    """The cookiecutter template shipped with nb2prod (in the wheel, or the source tree)."""
    for candidate in (PACKAGE_DIR / "templates", PACKAGE_DIR.parent / "templates"):
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    raise ConfigError("nb2prod's templates are missing from this installation; reinstall nb2prod")


def render_context(
    spec: NotebookSpec, destination: Path, template: Path | None = None, final: Path | None = None
) -> BuildContext:
    """Render the build context for ``spec`` into ``destination`` (which must not exist yet).

    ``final`` is where the directory will live once renamed into place; paths
    recorded relative to it (the notebook's folder) stay right after the move.
    """
    requirements = resolve_requirements(spec)
    plan = serving_plan(spec)
    context = {
        "project_slug": (final or destination).name,
        "notebook_name": spec.path.name,
        "notebook_sha256": spec.sha256,
        "nb2prod_version": __version__,
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "base_image": f"python:{sys.version_info.major}.{sys.version_info.minor}-slim",
        "git_commit": _git_commit(spec.path.parent),
        "_train_header": _train_header(spec),
        "_train_imports": _import_block(spec, TRAINING_ROLES, extra=_display_import(spec)),
        "_train_body": _train_body(spec),
        "_serving_header": _serving_header(spec),
        "_serving_imports": _import_block(spec, SERVING_ROLES, extra=("from typing import Any",)),
        "_serving_body": _after_imports(_serving_body(spec, plan)),
        "_requirements": "\n".join(r.line for r in requirements),
        "_requirements_serving": "\n".join(r.line for r in requirements if r.serving),
        "_readme": "",
        **_local_module_lines(spec),
    }
    source = template or template_dir()
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
    shutil.copytree(
        PACKAGE_DIR / "runtime",
        destination / "nb2prod_runtime",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        dirs_exist_ok=True,
    )
    _copy_local_modules(spec, destination)
    notebook_dir = spec.path.parent
    record = {
        "notebook": str(spec.path),
        "notebook_dir": str(notebook_dir),
        "notebook_dir_relative": _relative(notebook_dir, final or destination),
        "sha256": spec.sha256,
        "name": spec.name,
        "nb2prod_version": __version__,
        "parameters": spec.parameters,
        "parameter_overrides": spec.parameter_overrides,
        "serving": plan,
        "cells": [
            {"number": c.number, "role": c.role, "first_line": c.first_line}
            for c in spec.cells
            if c.role
        ],
    }
    (destination / "spec.json").write_text(json.dumps(record, indent=2, default=repr) + "\n")
    (destination / "parameters.json").write_text(
        json.dumps(spec.parameters, indent=2, default=repr) + "\n"
    )
    (destination / MARKER).write_text(
        json.dumps({"nb2prod_version": __version__, "notebook": str(spec.path)}, indent=2) + "\n"
    )
    return BuildContext(path=destination, spec=spec, requirements=requirements)


# --- requirements -------------------------------------------------------------------------


def resolve_requirements(spec: NotebookSpec) -> tuple[Requirement, ...]:
    """Exact pins for what the included code imports, plus the serving stack."""
    installed = importlib.metadata.packages_distributions()
    training_modules = _modules_used(spec, TRAINING_ROLES)
    serving_modules = _modules_used(spec, SERVING_ROLES)
    local = _local_modules(spec)
    found: dict[str, Requirement] = {}

    def add(dist: str, reason: str, serving: bool) -> None:
        key = dist.lower().replace("_", "-")
        old = found.get(key)
        found[key] = Requirement(
            distribution=dist,
            version=_version(dist),
            reason=old.reason if old else reason,
            serving=serving or bool(old and old.serving),
        )

    for module in sorted(training_modules | serving_modules):
        if module in sys.stdlib_module_names or module in local or module == "__future__":
            continue
        dists = installed.get(module)
        if not dists:
            hint = next((h for h in spec.pip_hints if h.lower().startswith(module.lower())), None)
            raise ConfigError(
                f"the notebook imports `{module}`, which is not installed where nb2prod runs",
                hint=f"Install it (pip install {hint or module}) so nb2prod can pin its version.",
            )
        for dist in dict.fromkeys(dists):
            add(dist, f"import {module}", module in serving_modules)
    for dist in SERVING_STACK:
        add(dist, "serving stack", True)
    return tuple(sorted(found.values(), key=lambda r: r.distribution.lower()))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _modules_used(spec: NotebookSpec, roles: tuple[str, ...]) -> set[str]:
    used = _names_read(spec.cells_with_roles(roles))
    star = {b.module for b in spec.imports if b.name == "*"}
    return {b.module for b in spec.imports if b.name in used} | star


def _names_read(cells: Iterable[Cell]) -> set[str]:
    names: set[str] = set()
    for cell in cells:
        names |= set(cell.reads)
        # Names used only after the cell binds them locally still need their import
        # when the import was hoisted out of the cell.
        names |= {
            n.id
            for n in ast.walk(ast.parse(cell.code))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
    return names


def _local_modules(spec: NotebookSpec) -> set[str]:
    folder = spec.path.parent
    return {
        b.module
        for b in spec.imports
        if (folder / f"{b.module}.py").is_file() or (folder / b.module / "__init__.py").is_file()
    }


def _local_module_lines(spec: NotebookSpec) -> dict[str, str]:
    """Dockerfile COPY and .dockerignore lines for modules beside the notebook."""
    folder = spec.path.parent
    copy: list[str] = []
    allow: list[str] = []
    for module in sorted(_local_modules(spec)):
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
    for module in sorted(_local_modules(spec)):
        if (folder / f"{module}.py").is_file():
            shutil.copy2(folder / f"{module}.py", destination / f"{module}.py")
        else:
            shutil.copytree(
                folder / module,
                destination / module,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )


# --- generated code -----------------------------------------------------------------------


def _import_block(spec: NotebookSpec, roles: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    """The imports the cells of ``roles`` use, grouped, combined and sorted as isort does."""
    used = _names_read(spec.cells_with_roles(roles))
    lines = [b.statement for b in spec.imports if b.name in used or b.name == "*"]
    groups: dict[int, list[str]] = {0: [], 1: [], 2: [], 3: []}
    for line in dict.fromkeys([*extra, *lines]):
        module = line.split()[1].split(".")[0]
        if module == "__future__":
            groups[0].append(line)
        elif module in sys.stdlib_module_names:
            groups[1].append(line)
        elif module == "nb2prod_runtime":
            groups[3].append(line)
        else:
            groups[2].append(line)
    blocks = ["\n".join(_isort_section(group)) for group in groups.values() if group]
    return "\n\n".join(blocks)


def _isort_section(lines: list[str]) -> list[str]:
    """Straight imports first, then from-imports combined per module (names by type)."""
    straight = sorted((line for line in lines if line.startswith("import ")), key=str.lower)
    combined: dict[str, list[str]] = {}
    aliased: list[str] = []
    for line in lines:
        if not line.startswith("from "):
            continue
        module, _, name = line[len("from ") :].partition(" import ")
        if " as " in name:
            aliased.append(line)
        else:
            combined.setdefault(module, []).append(name)
    froms: list[tuple[str, str]] = []
    for module, names in combined.items():
        ordered = sorted(set(names), key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
        text = f"from {module} import {', '.join(ordered)}"
        if len(text) > 88:
            text = f"from {module} import (\n" + "".join(f"    {n},\n" for n in ordered) + ")"
        froms.append((module, text))
    froms.extend((line.split()[1], line) for line in aliased)
    return [*straight, *(text for _, text in sorted(froms, key=lambda p: (p[0].lower(), p[1])))]


def _display_import(spec: NotebookSpec) -> tuple[str, ...]:
    """Cells that call IPython's display() get a stand-in that prints."""
    if "display" in _names_read(spec.cells_with_roles(TRAINING_ROLES)):
        return (
            "from nb2prod_runtime import training as nb2prod_training",
            "from nb2prod_runtime.training import display",
        )
    return ("from nb2prod_runtime import training as nb2prod_training",)


def _train_header(spec: NotebookSpec) -> str:
    cells = ", ".join(f"{c.number} [{c.role}]" for c in spec.cells_with_roles(TRAINING_ROLES))
    cells = textwrap.fill(f"Cells, in notebook order: {cells}.", width=79)
    return (
        f'"""Training run for {spec.path.name}, generated by nb2prod {__version__}.\n\n'
        f"Notebook sha256: {spec.sha256}\n"
        f"{cells}\n\n"
        "Run it with `python train.py` from any folder. It runs those cells in this fresh\n"
        "process (relative paths resolve against the notebook's folder, as in Jupyter) and\n"
        "writes model/: the serving state, the model card and the golden predictions.\n"
        '"""\n'
    )


def _train_body(spec: NotebookSpec) -> str:
    blocks: list[str] = []
    for cell in spec.cells_with_roles(TRAINING_ROLES):
        code = _tidy(cell.code)
        if cell.role == "parameters" and spec.parameter_overrides:
            overrides = "\n".join(
                f"{name} = {value!r}"
                for name, value in spec.parameter_overrides.items()
                if name in cell.binds
            )
            if overrides:
                code += "\n# Overridden at build time (nb2prod build -p ...):\n" + overrides
        blocks.append(f"# %% cell {cell.number} [{cell.role}]\n{code}")
    return "\n\n".join(blocks)


def _serving_header(spec: NotebookSpec) -> str:
    cells = ", ".join(f"{c.number} [{c.role}]" for c in spec.cells_with_roles(SERVING_ROLES))
    cells = textwrap.fill(f"Cells: {cells}.", width=79)
    return (
        f'"""Serving code from {spec.path.name}, generated by nb2prod {__version__}.\n\n'
        f"{cells}\n"
        "The notebook's own preprocess and predict code: the same code the training run\n"
        "used, so the two cannot drift apart. nb2prod_runtime restores the serving state\n"
        "from model/state.pkl and calls these functions; nothing here fits.\n"
        '"""\n'
    )


def serving_plan(spec: NotebookSpec) -> dict[str, Any]:
    """How serving calls the notebook's code; training completes it with runtime facts."""
    module_level = set(spec.parameters) | {b.name for b in spec.imports} | BUILTIN_NAMES
    plan: dict[str, Any] = {
        "globals": [],
        "calls": _calls(spec),
        "evaluate_binds": [n for c in spec.cells_with_role("evaluate") for n in c.binds],
    }
    defined: set[str] = set()
    for role in ("preprocess", "predict", "monitor"):
        cells = spec.cells_with_role(role)
        if not cells:
            plan[role] = {"kind": "none"}
            continue
        code = "\n".join(_tidy(c.code) for c in cells)
        if role in {name for c in cells for name in c.defines}:
            definitions = _definitions(code)
            use = name_use(ast.parse(definitions))
            function = _function(definitions, role)
            plan[role] = {
                "kind": "function",
                "cells": [c.number for c in cells],
                "labels": [c.label for c in cells],
                "code": definitions,
                "params": function,
            }
            defined |= set(use.defines)
            plan["globals"].extend(n for n in use.reads if n not in module_level)
        else:
            use = name_use(ast.parse(code))
            last = cells[-1]
            plan[role] = {
                "kind": "cells",
                "cells": [c.number for c in cells],
                "labels": [c.label for c in cells],
                "code": code,
                "reads": [n for n in use.reads if n not in module_level],
                "binds": list(use.binds),
                "result": last.result,
                "ends_with_expression": last.ends_with_expression,
            }
    plan["globals"] = [n for n in dict.fromkeys(plan["globals"]) if n not in defined]
    for role in ("preprocess", "predict", "monitor"):
        if plan[role]["kind"] == "cells":
            plan[role]["reads"] = [n for n in plan[role]["reads"] if n not in defined]
    if plan["predict"]["kind"] == "cells" and not (
        plan["predict"]["result"] or plan["predict"]["ends_with_expression"]
    ):
        cell = spec.cells_with_role("predict")[-1]
        raise NotebookError(
            f"{cell.label} produces no prediction: it should end with the prediction as an "
            "expression or an assignment (e.g. `predictions = model.predict(features)`)",
            hint="Or define `def predict(model, features)` in the cell.",
        )
    return plan


def _definitions(code: str) -> str:
    """Function style: the cell's functions and classes; other statements ran in training."""
    tree = ast.parse(code)
    return "\n\n\n".join(_decorated(code, stmt) for stmt in tree.body if _is_def(stmt))


def _is_def(stmt: ast.stmt) -> bool:
    return isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def _decorated(code: str, stmt: ast.stmt) -> str:
    lines = code.splitlines()
    first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])
    return "\n".join(lines[first - 1 : stmt.end_lineno])


def _function(code: str, name: str) -> list[str]:
    for stmt in ast.parse(code).body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            args = stmt.args
            return [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    return []


def _calls(spec: NotebookSpec) -> dict[str, list[str]]:
    """Function style: how the notebook itself calls preprocess()/predict() (argument sources)."""
    calls: dict[str, list[str]] = {}
    for cell in spec.cells:
        if cell.role is None and not cell.code:
            continue
        try:
            tree = ast.parse(cell.code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("preprocess", "predict")
                and node.func.id not in calls
                and node.args
            ):
                calls[node.func.id] = [
                    ast.get_source_segment(cell.code, a) or "" for a in node.args
                ]
    return calls


def _after_imports(body: str) -> str:
    """isort's spacing: two blank lines before a def or class, one before anything else."""
    first = next((line for line in body.splitlines() if not line.startswith("#")), "")
    blank = "\n\n\n" if first.startswith(("def ", "class ", "@", "async def ")) else "\n\n"
    return blank + body


def _serving_body(spec: NotebookSpec, plan: dict[str, Any]) -> str:
    parts: list[str] = []
    serving_code = "\n".join(plan[r].get("code", "") for r in ("preprocess", "predict", "monitor"))
    read = {n.id for n in ast.walk(ast.parse(serving_code)) if isinstance(n, ast.Name)}
    constants = {
        name: value
        for name, value in spec.parameters.items()
        if name in read and name not in plan["globals"]
    }
    if constants:
        parts.append(
            "# Parameters (the `parameters` cell, with build-time overrides).\n"
            + "\n".join(f"{name} = {value!r}" for name, value in constants.items())
        )
    if plan["globals"]:
        parts.append(
            "# Serving state the functions below read: restored from model/state.pkl.\n"
            + "\n".join(f"{name}: Any = None" for name in plan["globals"])
        )
    for role in ("preprocess", "predict", "monitor"):
        step = plan[role]
        if step["kind"] == "function":
            cells = ", ".join(str(n) for n in step["cells"])
            parts.append(f"# %% cell {cells} [{role}]\n{step['code']}")
        elif step["kind"] == "cells":
            parts.append(_wrapped(role, step))
    return "\n\n\n".join(parts)


def _wrapped(role: str, step: dict[str, Any]) -> str:
    """Script style: the cells' code as a function of the names it reads from training."""
    cells = ", ".join(str(n) for n in step["cells"])
    code = step["code"]
    if role == "preprocess":
        binds = ", ".join(f'"{n}": {n}' for n in step["binds"])
        ending = f"return {{{binds}}}"
        doc = "Returns every name the cells bind; the runtime passes the features on."
        returns = "dict[str, Any]"
    else:
        tree = ast.parse(code)
        if step["ends_with_expression"]:
            last = tree.body[-1]
            lines = code.splitlines()
            expression = "\n".join(lines[last.lineno - 1 : last.end_lineno])
            code = "\n".join(lines[: last.lineno - 1])
            ending = f"return {expression.strip()}"
            doc = "Returns the value of the cell's last expression."
        else:
            ending = f"return {step['result']}"
            doc = f"Returns `{step['result']}`, the last name the cell assigns."
        returns = "Any"
    params = ", ".join(f"{name}: Any" for name in step["reads"])
    signature = (
        f"def run_{role}_cells(*, {params}) -> {returns}:"
        if params
        else (f"def run_{role}_cells() -> {returns}:")
    )
    body = textwrap.indent(_tidy(code + "\n" + ending), "    ")
    return (
        f"# %% cell {cells} [{role}]\n{signature}\n"
        f'    """Cell {cells} [{role}] of the notebook, run as a function.\n\n'
        f'    {doc}\n    """\n{body}'
    )


def _tidy(code: str) -> str:
    """Drop the blank lines left by removed imports and magics, keep the rest as written."""
    text = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", code.strip("\n"))
    return textwrap.dedent(text).rstrip()


def _relative(target: Path, start: Path) -> str:
    return os.path.relpath(target.resolve(), start.resolve())


def _git_commit(folder: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
