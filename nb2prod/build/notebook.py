"""Stage 1: read a notebook into a NotebookSpec, refusing what breaks the contract.

A cell's role is its Jupyter tag (or a ``# nb2prod: <role>`` first line). This
module decides roles, strips what is not Python (magics, shell lines), pools
imports from every cell, and works out by static analysis which names serving
code needs from training. Every refusal names the cell, the line where there is
one, and what to do.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nbformat

from ..errors import ConfigError, NotebookError
from ..models import SERVING_ROLES, Cell, ImportBinding, KaleBlock, NotebookSpec
from ..naming import repository_name
from . import assign
from .assign import ROLE_COMMENT, STRICT_DIRECTIVE
from .determinism import refuse_random_draws
from .names import name_use, parameter_assignments
from .pip_hints import pip_install_hints
from .roles import propose_roles
from .run_all import run_all_notices
from .secrets import refuse_secret_parameters
from .sensitive import sensitive_columns

#: Calls that fit state; on the serving path they would re-fit on each request.
FIT_METHODS = frozenset({"fit", "fit_transform", "fit_predict", "partial_fit", "fit_resample"})
#: Cell magics whose body is still Python (the magic only times or captures it).
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})

_SHELL_ASSIGN = re.compile(r"^\s*[\w.]+\s*=\s*[!%]")
_PIP = re.compile(r"^\s*[!%]\s*(?:python -m\s+)?pip3?\s+install\s+(.*)$")


def read_notebook(
    path: Path,
    overrides: dict[str, Any] | None = None,
    *,
    strict: bool = False,
    role_map: dict[str, str] | None = None,
    sensitive: Sequence[str] = (),
) -> NotebookSpec:
    """Read ``path`` and return its spec; raise NotebookError when it breaks the contract.

    ``strict`` (``--strict``) treats every serving cell as if it carried ``# nb2prod: strict``:
    nothing is recorded and replayed there, and a fit on the serving path is refused.
    ``role_map`` (``--role-map``) gives Kubeflow Kale blocks their roles. ``sensitive``
    (``--sensitive``) adds to the parameters cell's ``# nb2prod: sensitive=...`` columns.
    """
    raw = _load(path)
    _check_kernel(raw)
    notices: list[str] = []
    assigned, kale_blocks, _ = _assign_roles(raw, role_map or {})
    cells: list[Cell] = []
    imports: dict[str, ImportBinding] = {}
    pip_hints: list[str] = []
    for number, nb_cell in _code_cells(raw):
        role, origin = assigned.get(number, (None, None))
        cell, cell_imports, pip_lines = _read_cell(number, nb_cell, role, notices)
        cell = replace(cell, origin=origin, strict=cell.strict or strict)
        for arguments in pip_lines:
            pip_hints.extend(pip_install_hints(arguments, path.resolve().parent, notices))
        for binding in cell_imports:
            # An import in a tagged cell wins over the same name imported elsewhere.
            if binding.name not in imports or cell.role is not None:
                imports[binding.name] = binding
        cells.append(cell)
    _require_roles(cells, path, kale_blocks)
    cells = assign.include_definitions(cells, notices)
    # Cells holding only imports are where notebooks keep them, not skipped work.
    untagged = [c for c in cells if c.role is None and c.code.strip()]
    if untagged:
        listed = ", ".join(str(c.number) for c in untagged)
        notices.append(f"untagged cells are not run: {listed}")
    assign.refuse_untagged_bindings(cells, imports, path)
    parameters = _parameters(cells)
    applied = _apply_overrides(parameters, overrides or {}, cells)
    refuse_secret_parameters(cells, applied)
    _refuse_fitting_on_serving_path(cells)
    refuse_random_draws(cells, imports.values())
    notices.extend(run_all_notices(cells, tuple(imports.values())))
    preprocess_style = _style(cells, "preprocess")
    predict_style = _style(cells, "predict")
    serving_reads = _resolve_serving_reads(cells, imports, notices)
    return NotebookSpec(
        path=path.resolve(),
        name=repository_name(path.stem),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        cells=tuple(cells),
        imports=tuple(imports.values()),
        parameters={**parameters, **applied},
        parameter_overrides=applied,
        pip_hints=tuple(dict.fromkeys(pip_hints)),
        preprocess_style=preprocess_style,
        predict_style=predict_style,
        serving_reads=serving_reads,
        notices=tuple(notices),
        kale_blocks=kale_blocks,
        sensitive_columns=sensitive_columns(cells, sensitive),
    )


@dataclass(frozen=True)
class CellRoles:
    """Every code cell read without roles, its tags, and the roles its tags give it: what
    ``nb2prod tag`` and ``check --json`` list. Reading it never refuses a cell."""

    cells: list[Cell]  # imports and magics taken out; role None
    tags: dict[int, list[str]]
    assigned: dict[int, tuple[str | None, str | None]]  # (role, origin) from tags and Kale
    kale_blocks: tuple[KaleBlock, ...]


def cell_roles(path: Path, role_map: dict[str, str] | None = None) -> CellRoles:
    """Read ``path`` once for :class:`CellRoles`."""
    raw = _load(path)
    assigned, blocks, baseline = _assign_roles(raw, role_map or {})
    return CellRoles(baseline, {n: _tags(c) for n, c in _code_cells(raw)}, assigned, blocks)


def _code_cells(raw: nbformat.NotebookNode) -> list[tuple[int, nbformat.NotebookNode]]:
    return [(n, c) for n, c in enumerate(raw.cells, start=1) if c.cell_type == "code"]


def _source(nb_cell: nbformat.NotebookNode) -> str:
    return nb_cell.source if isinstance(nb_cell.source, str) else "".join(nb_cell.source)


def _tags(nb_cell: nbformat.NotebookNode) -> list[str]:
    tags = nb_cell.get("metadata", {}).get("tags", []) or []
    return [t for t in tags if isinstance(t, str)]


def _assign_roles(
    raw: nbformat.NotebookNode, role_map: dict[str, str]
) -> tuple[dict[int, tuple[str | None, str | None]], tuple[KaleBlock, ...], list[Cell]]:
    """Roles from nb2prod's tags and directives, then from Kale's tags for the other cells;
    and every code cell read without a role (what the Kale mapping analyses)."""
    code_cells = _code_cells(raw)
    assigned = {n: assign.own_role(n, _source(c), _tags(c)) for n, c in code_cells}
    tags = {n: _tags(c) for n, c in code_cells}
    # `skip` is a role of both: a Kale `skip` must not end the block above it (Kale's rule).
    own = {n for n, (role, _) in assigned.items() if role is not None and "skip" not in tags[n]}
    baseline = [_read_cell(n, c, None, [])[0] for n, c in code_cells]
    kale_roles, blocks = assign.kale_roles(tags, own, baseline, role_map)
    empty = {c.number for c in baseline if not c.code.strip()}  # imports only: nothing to run
    for number, role in kale_roles.items():
        if number not in own and number not in empty:
            assigned[number] = (role, "kale")
    return assigned, blocks, baseline


def parse_parameter(assignment: str) -> tuple[str, Any]:
    """Parse one ``-p name=value`` flag; the value is a Python literal (or a bare string)."""
    name, sep, text = assignment.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ConfigError(
            f"parameter override {assignment!r} is not name=value",
            hint="Write it as -p name=value, e.g. -p C=0.5 or -p solver='lbfgs'.",
        )
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = text.strip()  # a bare word, e.g. -p solver=lbfgs, is a string
    return name, value


def _load(path: Path) -> nbformat.NotebookNode:
    if not path.is_file():
        raise NotebookError(f"{path}: no such notebook", hint="Check the path.")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise NotebookError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}), "
            "so it is not a Jupyter notebook",
            hint="Pass the .ipynb file saved by Jupyter; a .py script needs to be a notebook first "
            "(e.g. `jupytext --to ipynb`).",
        ) from err
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise NotebookError(f"{path} is JSON but not a Jupyter notebook (no 'cells')")
    major = data.get("nbformat")
    if not isinstance(major, int) or major < 4:
        raise NotebookError(
            f"{path} is nbformat {major}; nb2prod reads nbformat 4 or later",
            hint="Open and save it in a current Jupyter, or run "
            "`jupyter nbconvert --to notebook --inplace` on it.",
        )
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as err:  # nbformat raises several unrelated types here
        raise NotebookError(f"{path} is not a readable notebook: {err}") from err


def _check_kernel(raw: nbformat.NotebookNode) -> None:
    meta = raw.get("metadata", {})
    language = (meta.get("kernelspec", {}) or {}).get("language") or (
        meta.get("language_info", {}) or {}
    ).get("name")
    if language and str(language).lower() != "python":
        kernel = (meta.get("kernelspec", {}) or {}).get("display_name", language)
        raise NotebookError(
            f"the notebook's kernel is {kernel} ({language}); nb2prod builds Python notebooks only",
            hint="Use a Python kernel (ipykernel) for the cells nb2prod should build.",
        )


def _read_cell(
    number: int, nb_cell: nbformat.NotebookNode, role: str | None, notices: list[str]
) -> tuple[Cell, list[ImportBinding], list[str]]:
    source = _source(nb_cell)
    lines = source.splitlines()
    strict = any(
        (m := ROLE_COMMENT.match(line)) and m.group(1) == STRICT_DIRECTIVE for line in lines
    )
    first_code = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first_code is not None and lines[first_code].lstrip().startswith("%%"):
        magic = lines[first_code].lstrip()[2:].split()[0] if lines[first_code].strip("% ") else ""
        if magic not in PYTHON_CELL_MAGICS:
            if role is not None and role != "skip":
                raise NotebookError(
                    f"cell {number} [{role}] is a %%{magic} cell, not Python",
                    hint="Move the Python code of this step into a plain code cell, "
                    "or tag this cell `skip`.",
                )
            notices.append(f"cell {number} (%%{magic}) is not Python and is ignored")
            return Cell(number=number, role=role, source=source, code=""), [], []
        lines[first_code] = ""
    pip_lines = _blank_magics(lines, first_code)
    code = "\n".join(lines)
    try:
        tree = ast.parse(code, filename=f"<cell {number}>")
    except SyntaxError as err:
        if role is None or role == "skip":
            notices.append(f"cell {number} is not valid Python and is ignored")
            return Cell(number=number, role=role, source=source, code=""), [], pip_lines
        bad = (err.text or "").strip()
        raise NotebookError(
            f"cell {number} [{role}] ({_first_line(source)!r}), line {err.lineno}: "
            f"syntax error: {err.msg}" + (f": {bad!r}" if bad else ""),
            hint="Fix the line in the notebook and run the cell once in Jupyter to check it.",
        ) from err
    bindings, code = _take_imports(number, tree, code)
    body = ast.parse(code, filename=f"<cell {number}>")
    use = name_use(body)
    result, ends_with_expression = _result(body)
    cell = Cell(
        number=number,
        role=role,
        source=source,
        code=code,
        reads=use.reads,
        binds=use.binds,
        defines=use.defines,
        result=result,
        ends_with_expression=ends_with_expression,
        strict=strict,
    )
    return cell, bindings, pip_lines


def _blank_magics(lines: list[str], first_code: int | None) -> list[str]:
    """Blank out magics, shell lines and the role comment in place; return the arguments of
    each ``pip install`` line among them.

    Lines are blanked, not removed, so that messages point at the notebook's line numbers.
    """
    pip_lines: list[str] = []
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("%", "!")) or _SHELL_ASSIGN.match(line):
            pip = _PIP.match(line)
            if pip:
                pip_lines.append(pip.group(1))
            lines[index] = ""
        elif ROLE_COMMENT.match(line) and index == first_code:
            lines[index] = ""
    return pip_lines


def _take_imports(number: int, tree: ast.Module, code: str) -> tuple[list[ImportBinding], str]:
    """Pool the cell's top-level imports and blank them out of its code."""
    lines = code.splitlines()
    bindings: list[ImportBinding] = []
    for stmt in tree.body:
        if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.level:
            continue  # relative imports have no meaning outside a package
        for alias in stmt.names:
            if isinstance(stmt, ast.Import):
                bound = alias.asname or alias.name.split(".")[0]
                text = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                module = alias.name.split(".")[0]
            else:
                bound = alias.asname or alias.name
                text = f"from {stmt.module} import {alias.name}" + (
                    f" as {alias.asname}" if alias.asname else ""
                )
                module = (stmt.module or "").split(".")[0]
            bindings.append(ImportBinding(name=bound, statement=text, module=module, cell=number))
        for line in range(stmt.lineno - 1, (stmt.end_lineno or stmt.lineno)):
            lines[line] = ""
    return bindings, "\n".join(lines)


def _result(tree: ast.Module) -> tuple[str | None, bool]:
    """Script style: the cell's result, its last expression or its last assigned name.

    A trailing expression that only shows the last assigned variable
    (``preds[:5]``, ``preds.head()``) is display, so the variable is the result.
    """
    if not tree.body:
        return None, False
    assigned: str | None = None
    for stmt in reversed(tree.body[:-1] if isinstance(tree.body[-1], ast.Expr) else tree.body):
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if names:
            assigned = names[-1]
            break
    last = tree.body[-1]
    if isinstance(last, ast.Expr):
        shown = {n.id for n in ast.walk(last) if isinstance(n, ast.Name)}
        if assigned is not None and assigned in shown:
            return assigned, False
        return None, True
    return assigned, False


def _require_roles(cells: list[Cell], path: Path, kale_blocks: tuple[KaleBlock, ...]) -> None:
    """A train and a predict cell must exist; say which cells look like them, and how to tag."""
    present = {cell.role for cell in cells}
    missing = [role for role in ("train", "predict") if role not in present]
    if not missing:
        return
    role = missing[0]
    proposals, hint = propose_roles(cells)
    proposed = [p.cell for p in proposals if p.role == role]
    fits = [c.number for c in cells if re.search(r"\.fit\(|\b(?:xgb|lgb)\.train\(", c.code)]
    what = "fits the model" if role == "train" else "makes predictions"
    message = f"no cell is tagged `{role}`: nb2prod needs the cell that {what}"
    if role == "train" and fits:
        message += f"; cells calling `.fit(`: {', '.join(map(str, fits))}"
    elif proposed:
        message += f"; it looks like cell {proposed[-1]}"
    if kale_blocks:
        mapped = ", ".join(f"{b.name} -> {b.role}" for b in kale_blocks)
        message += f". nb2prod read the Kubeflow Kale tags as: {mapped}"
        advice = (
            f"Map the block that {what} with --role-map BLOCK={role}, or tag the cell `{role}` "
            "(nb2prod's own tags win over Kale's)."
        )
    else:
        advice = (
            f"Run `nb2prod tag {path.name}` to see a proposed role for every cell, and "
            f"`nb2prod tag {path.name} --write` to add them; or tag the cell `{role}` yourself "
            f"(Jupyter's cell tags, or a first line `# nb2prod: {role}`)."
        )
    if role == "predict" and hint is not None and not proposed:
        advice += f" No cell predicts on its own: add a cell after cell {hint.after_cell} with\n"
        advice += "\n".join(f"    {line}" for line in hint.source.splitlines())
    raise NotebookError(message, hint=advice)


def _parameters(cells: list[Cell]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for cell, stmt, name, value in parameter_assignments(cells):
        try:
            if name is None or value is None:
                raise ValueError
            values[name.id] = ast.literal_eval(value)
        except ValueError as err:
            raise NotebookError(
                f"{cell.label}, line {stmt.lineno}: parameters must be literal assignments "
                f"like `C = 1.0`, not {ast.get_source_segment(cell.code, stmt)!r}",
                hint="Keep computed values in a `load` or `train` cell.",
            ) from err
    return values


def _apply_overrides(
    parameters: dict[str, Any], overrides: dict[str, Any], cells: list[Cell]
) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(parameters))
    if unknown:
        where = ", ".join(sorted(parameters)) or "none (there is no `parameters` cell)"
        raise ConfigError(
            f"-p {unknown[0]}: the notebook has no parameter {unknown[0]!r}; "
            f"its parameters: {where}",
            hint="Override only names that the `parameters` cell assigns.",
        )
    return dict(overrides)


def _refuse_fitting_on_serving_path(cells: list[Cell]) -> None:
    """Strict cells keep the old rule: no fit on the serving path (others record and replay)."""
    for cell in cells:
        if cell.role not in ("preprocess", "predict") or not cell.strict:
            continue
        for node in ast.walk(ast.parse(cell.code)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in FIT_METHODS
            ):
                raise NotebookError(
                    f"{cell.label}, line {node.lineno}: `.{node.func.attr}(` on the serving path "
                    f"would fit state on each request's rows (strict mode)",
                    hint="Fitted state belongs in a `train` cell: fit there and call "
                    "`.transform(`/`.predict(` here. Without --strict (or `# nb2prod: strict` "
                    "in the cell), nb2prod records the fit at training and replays it.",
                )


def _style(cells: list[Cell], role: str) -> str:
    tagged = [cell for cell in cells if cell.role == role]
    if not tagged:
        return "none"
    return "function" if any(role in cell.defines for cell in tagged) else "script"


def _resolve_serving_reads(
    cells: list[Cell], imports: dict[str, ImportBinding], notices: list[str]
) -> tuple[str, ...]:
    """Names serving code needs from training (parameters are constants in the serving code)."""
    needed: list[str] = []
    for cell in cells:
        if cell.role not in SERVING_ROLES:
            continue
        for name in cell.reads:
            if name in imports or name in needed:
                continue
            binders = [c for c in cells if name in c.binds and c is not cell]
            run = [c for c in binders if c.role is not None and c.role != "skip"]
            if run:
                if not all(c.role == "parameters" for c in run):
                    needed.append(name)  # parameters are constants in the serving code
                continue
            if not binders:  # (a name only cells nb2prod never runs bind is refused earlier)
                notices.append(f"{cell.label} reads `{name}`, which no cell defines")
    return tuple(needed)


def _first_line(source: str) -> str:
    return next((line.strip()[:80] for line in source.splitlines() if line.strip()), "")
