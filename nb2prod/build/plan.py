"""NotebookSpec -> ServingPlan: how the service will call the notebook's serving cells.

Per serving role (preprocess, predict, monitor) the cells are either function style
(they define a function named after the role, and serving calls it) or script style
(serving runs the cells' code as a function of the names it reads). Training later
completes the plan with what only the finished namespace tells (see runtime/plan.py).
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import replace

from ..errors import NotebookError
from ..models import Cell, NotebookSpec
from ..runtime.plan import CellsStep, FunctionStep, NoStep, ServingPlan, Step
from .names import BUILTIN_NAMES, name_use
from .sites import ALIAS, instrument

SERVING_STEPS = ("preprocess", "predict", "monitor")
#: Roles whose fits and statistics are recorded at training and replayed at serving. Monitor
#: code is meant to compute statistics over recent rows, so it runs as written.
REPLAYED_ROLES = frozenset({"preprocess", "predict"})


def serving_code(spec: NotebookSpec) -> dict[int, str]:
    """Each cell's code as training and serving run it: serving cells with their sites rewritten."""
    rewritten = instrument(spec.cells, spec.imports, REPLAYED_ROLES).code
    return {cell.number: rewritten.get(cell.number, cell.code) for cell in spec.cells}


def serving_plan(spec: NotebookSpec) -> ServingPlan:
    """The serving plan for ``spec``; NotebookError when predict produces nothing to serve."""
    # Parameters and imports are module level in model_code.py, never serving state.
    module_level = set(spec.parameters) | {b.name for b in spec.imports} | BUILTIN_NAMES | {ALIAS}
    code = serving_code(spec)
    steps: dict[str, Step] = {}
    globals_read: list[str] = []
    defined: set[str] = set()
    for role in SERVING_STEPS:
        cells = spec.cells_with_role(role)
        if not cells:
            steps[role] = NoStep()
        elif role in {name for c in cells for name in c.defines}:
            steps[role], reads, defines = _function_step(cells, role, code)
            globals_read.extend(n for n in reads if n not in module_level)
            defined |= defines
        else:
            steps[role] = _cells_step(cells, module_level, code)
    # A helper one serving cell defines is code in model_code.py, not state to restore.
    for role, step in steps.items():
        if isinstance(step, CellsStep):
            steps[role] = replace(step, reads=tuple(n for n in step.reads if n not in defined))
    predict = steps["predict"]
    if isinstance(predict, NoStep):  # the notebook stage already requires a predict cell
        raise NotebookError("the notebook has no cell tagged `predict`")
    if isinstance(predict, CellsStep) and not (predict.result or predict.ends_with_expression):
        cell = spec.cells_with_role("predict")[-1]
        raise NotebookError(
            f"{cell.label} produces no prediction: it should end with the prediction as an "
            "expression or an assignment (e.g. `predictions = model.predict(features)`)",
            hint="Or define `def predict(model, features)` in the cell.",
        )
    return ServingPlan(
        preprocess=steps["preprocess"],
        predict=predict,
        monitor=steps["monitor"],
        globals=tuple(n for n in dict.fromkeys(globals_read) if n not in defined),
        calls=_calls(spec),
        evaluate_binds=tuple(n for c in spec.cells_with_role("evaluate") for n in c.binds),
        sites=instrument(spec.cells, spec.imports, REPLAYED_ROLES).sites,
        suspects=instrument(spec.cells, spec.imports, REPLAYED_ROLES).suspects,
    )


def _function_step(
    cells: tuple[Cell, ...], role: str, code: dict[int, str]
) -> tuple[FunctionStep, tuple[str, ...], set[str]]:
    """The step, the globals its functions read and the names they define."""
    definitions = _definitions("\n".join(tidy(code[c.number]) for c in cells))
    use = name_use(ast.parse(definitions))
    step = FunctionStep(
        cells=tuple(c.number for c in cells),
        params=_parameters(definitions, role),
        code=definitions,
        labels=tuple(c.label for c in cells),
    )
    return step, use.reads, set(use.defines)


def _cells_step(
    cells: tuple[Cell, ...], module_level: set[str], rewritten: dict[int, str]
) -> CellsStep:
    code = "\n".join(tidy(rewritten[c.number]) for c in cells)
    use = name_use(ast.parse(code))
    last = cells[-1]
    return CellsStep(
        cells=tuple(c.number for c in cells),
        reads=tuple(n for n in use.reads if n not in module_level),
        binds=use.binds,
        result=last.result,
        ends_with_expression=last.ends_with_expression,
        code=code,
        labels=tuple(c.label for c in cells),
    )


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


def _parameters(code: str, name: str) -> tuple[str, ...]:
    for stmt in ast.parse(code).body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            args = stmt.args
            return tuple(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
    return ()


def _calls(spec: NotebookSpec) -> dict[str, tuple[str, ...]]:
    """Function style: how the notebook itself calls preprocess()/predict() (argument sources)."""
    calls: dict[str, tuple[str, ...]] = {}
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
                calls[node.func.id] = tuple(
                    ast.get_source_segment(cell.code, a) or "" for a in node.args
                )
    return calls


def tidy(code: str) -> str:
    """Drop the blank lines left by removed imports and magics, keep the rest as written."""
    text = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", code.strip("\n"))
    return textwrap.dedent(text).rstrip()
