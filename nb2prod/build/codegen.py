"""NotebookSpec + ServingPlan -> the Python text of train.py and model_code.py.

The generated files are read by the engineers who inherit the service, so every name
that comes from somewhere else says where: the request, model/state.pkl (and the
training cell that bound it), or the notebook's parameters. The templates only place
this text; formatting follows isort and ruff so the output passes ruff unchanged.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from dataclasses import dataclass

from .. import __version__
from ..models import SERVING_ROLES, TRAINING_ROLES, Cell, NotebookSpec
from ..runtime.plan import CellsStep, FunctionStep, NoStep, ServingPlan
from .names import names_read
from .plan import serving_code, tidy
from .sites import ALIAS, IMPORT

STATE = "model/state.pkl"
REQUEST = "the request rows (a DataFrame)"


@dataclass(frozen=True)
class GeneratedCode:
    """The generated parts of train.py and model_code.py, as the templates place them."""

    train_header: str
    train_imports: str
    train_body: str
    serving_header: str
    serving_imports: str
    serving_body: str


def generate_code(spec: NotebookSpec, plan: ServingPlan) -> GeneratedCode:
    """The text of train.py and model_code.py for ``spec`` served as ``plan`` says."""
    code = serving_code(spec)
    frozen = _replay_import(spec, code)
    return GeneratedCode(
        train_header=_train_header(spec),
        train_imports=_import_block(
            spec, TRAINING_ROLES, extra=(*_training_imports(spec), *frozen)
        ),
        train_body=_train_body(spec, code, _first_serving_cell(plan)),
        serving_header=_serving_header(spec),
        serving_imports=_import_block(
            spec, SERVING_ROLES, extra=("from typing import Any", *frozen)
        ),
        serving_body=_after_imports(_serving_body(spec, plan)),
    )


def _replay_import(spec: NotebookSpec, code: dict[int, str]) -> tuple[str, ...]:
    """The runtime's replay module, when a serving cell's code records or replays a site."""
    replays = any(ALIAS in code[c.number] for c in spec.cells_with_roles(SERVING_ROLES))
    return (IMPORT,) if replays else ()


# --- imports --------------------------------------------------------------------------------


def _import_block(spec: NotebookSpec, roles: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    """The imports the cells of ``roles`` use, grouped, combined and sorted as isort does."""
    used = names_read(spec.cells_with_roles(roles))
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


def _training_imports(spec: NotebookSpec) -> tuple[str, ...]:
    """The runtime's training helpers; cells that call IPython's display() get a stand-in."""
    if "display" in names_read(spec.cells_with_roles(TRAINING_ROLES)):
        return (
            "from nb2prod_runtime import training as nb2prod_training",
            "from nb2prod_runtime.training import display",
        )
    return ("from nb2prod_runtime import training as nb2prod_training",)


# --- train.py -------------------------------------------------------------------------------


def _docstring(title: str, *lines: str) -> str:
    """A generated module's docstring: what it is and who made it, then ``lines``."""
    return f'"""{title}, generated by nb2prod {__version__}.\n\n' + "".join(lines) + '"""\n'


def _cells_line(prefix: str, spec: NotebookSpec, roles: tuple[str, ...]) -> str:
    """``prefix`` and the cells of ``roles`` (``3 [load], 4 [train]``), wrapped at 79."""
    cells = ", ".join(f"{c.number} [{c.role}]" for c in spec.cells_with_roles(roles))
    return textwrap.fill(f"{prefix} {cells}.", width=79) + "\n"


def _train_header(spec: NotebookSpec) -> str:
    return _docstring(
        f"Training run for {spec.path.name}",
        f"Notebook sha256: {spec.sha256}\n",
        _cells_line("Cells, in notebook order:", spec, TRAINING_ROLES),
        "\nRun it with `python train.py` from any folder. It runs those cells in this fresh\n"
        "process (relative paths resolve against the notebook's folder, as in Jupyter) and\n"
        "writes model/: the serving state, the model card and the golden predictions.\n",
    )


def _first_serving_cell(plan: ServingPlan) -> int | None:
    """The cell before which training snapshots the raw input (script style only)."""
    for step in (plan.preprocess, plan.predict):
        if isinstance(step, CellsStep):
            return step.cells[0]
        if isinstance(step, FunctionStep):
            return None
    return None


def _train_body(
    spec: NotebookSpec,
    rewritten: dict[int, str],
    snapshot_at: int | None,
    stop_before: int | None = None,
) -> str:
    blocks: list[str] = []
    for cell in spec.cells_with_roles(TRAINING_ROLES):
        if cell.number == stop_before:
            break
        if cell.number == snapshot_at:
            blocks.append(
                "# The raw input as the serving cells first read it (schema, golden rows, and\n"
                "# the shape each request's rows are given).\n"
                "nb2prod_training.serving_starts(globals())"
            )
        code = tidy(rewritten[cell.number])
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


def check_stop(spec: NotebookSpec, plan: ServingPlan) -> tuple[int | None, dict[str, int]]:
    """Where ``check --run`` stops: before the first train cell after the preprocess cells and
    after every cell binding a name they read that nothing before them binds.

    Returns that cell (None: no train cell follows, so every training cell runs) and the names
    bound only by train cells it had to run, with the cell binding each.
    """
    pre = plan.preprocess
    pre_cells = pre.cells if isinstance(pre, (CellsStep, FunctionStep)) else ()
    last = max(pre_cells, default=0)
    cells = spec.cells_with_roles(TRAINING_ROLES)
    imported = {b.name for b in spec.imports}
    reads = {n for c in cells if c.number in pre_cells for n in c.reads} - imported
    bound = {n for c in cells if c.number <= last for n in (*c.binds, *c.defines)}
    later: dict[str, int] = {}
    for name in sorted(reads - bound):
        binder = next((c for c in cells if c.number > last and name in c.binds), None)
        if binder is not None:
            later[name] = binder.number
    last = max([last, *later.values()])
    after = [c.number for c in spec.cells_with_roles(("train",)) if c.number > last]
    roles = {c.number: c.role for c in cells}
    return (after[0] if after else None), {n: c for n, c in later.items() if roles[c] == "train"}


def check_script(spec: NotebookSpec, plan: ServingPlan, stop: int | None) -> str:
    """The text of the script ``nb2prod check --run`` runs in place of train.py.

    train.py's cells up to ``stop`` (:func:`check_stop`), then the preprocess probe instead of
    the model.
    """
    code = serving_code(spec)
    imports = _import_block(
        spec, TRAINING_ROLES, extra=(*_training_imports(spec), *_replay_import(spec, code))
    )
    body = _train_body(spec, code, _first_serving_cell(plan), stop)
    return (
        _docstring(
            f"nb2prod check --run for {spec.path.name}",
            "train.py's cells up to the model's train cells, then the preprocess step on\n"
            "sample rows (nb2prod_runtime/preprocess_probe.py).\n",
        )
        + f"{imports}\n\nnb2prod_training.start(__file__)\n\n{body}\n\n"
        + "nb2prod_training.check_preprocess(globals())\n"
    )


# --- model_code.py --------------------------------------------------------------------------


def _serving_header(spec: NotebookSpec) -> str:
    return _docstring(
        f"Serving code from {spec.path.name}",
        _cells_line("Cells:", spec, SERVING_ROLES),
        "The notebook's own preprocess and predict code: the same code the training run\n"
        "used, so the two cannot drift apart. nb2prod_runtime restores the serving state\n"
        f"from {STATE} and calls these functions; nothing here fits.\n",
    )


def _after_imports(body: str) -> str:
    """isort's spacing: two blank lines before a def or class, one before anything else."""
    first = next((line for line in body.splitlines() if not line.startswith("#")), "")
    blank = "\n\n\n" if first.startswith(("def ", "class ", "@", "async def ")) else "\n\n"
    return blank + body


def _serving_body(spec: NotebookSpec, plan: ServingPlan) -> str:
    parts: list[str] = []
    steps = {"preprocess": plan.preprocess, "predict": plan.predict, "monitor": plan.monitor}
    serving_code = "\n".join(s.code for s in steps.values() if not isinstance(s, NoStep))
    read = {n.id for n in ast.walk(ast.parse(serving_code)) if isinstance(n, ast.Name)}
    constants = {
        name: value
        for name, value in spec.parameters.items()
        if name in read and name not in plan.globals
    }
    if constants:
        parts.append(
            "# Parameters (the `parameters` cell, with build-time overrides).\n"
            + "\n".join(f"{name} = {value!r}" for name, value in constants.items())
        )
    if plan.globals:
        parts.append(
            "# Serving state the functions below read as module globals. They are placeholders\n"
            f"# here: nb2prod_runtime.loader sets each one from {STATE} when the service\n"
            "# starts, to the value the training run left (bound by the cell named after it).\n"
            + "\n".join(f"{name}: Any = None  # {_bound_at(spec, name)}" for name in plan.globals)
        )
    for role, step in steps.items():
        if isinstance(step, FunctionStep):
            cells = ", ".join(str(n) for n in step.cells)
            parts.append(f"# %% cell {cells} [{role}]\n{_how_called(role, step, plan)}{step.code}")
        elif isinstance(step, CellsStep):
            parts.append(_wrapped(role, step, _describe_reads(spec, plan, role, step)))
    return "\n\n\n".join(parts)


def _how_called(role: str, step: FunctionStep, plan: ServingPlan) -> str:
    """A comment saying what the service passes to a function-style step."""
    if role == "preprocess":
        text = f"The service calls preprocess() on {REQUEST}."
    elif role == "monitor":
        text = "nb2prod_runtime.monitoring calls monitor() with recent request rows and their "
        text += "predictions."
    elif not step.params:
        return ""  # training refuses a predict() without a features parameter
    else:
        *others, features = step.params
        source = "the preprocess output for the request rows"
        text = f"The service calls predict() with `{features}` = "
        text += f"{REQUEST if isinstance(plan.preprocess, NoStep) else source}."
        if others:
            names = ", ".join(f"`{p}`" for p in others)
            text += f" {names}: what the notebook passed to predict(), restored from {STATE}."
    return textwrap.fill(text, width=88, initial_indent="# ", subsequent_indent="# ") + "\n"


def _wrapped(role: str, step: CellsStep, described: dict[str, str]) -> str:
    """Script style: the cells' code as a function of the names it reads from training."""
    cells = ", ".join(str(n) for n in step.cells)
    code = step.code
    if role == "preprocess":
        # The inputs too: cells that change the raw frame in place (df.drop(..., inplace=True))
        # hand that frame on to predict.
        names = dict.fromkeys([*step.binds, *step.reads])
        binds = ", ".join(f'"{n}": {n}' for n in names)
        ending = f"return {{{binds}}}"
        doc = (
            "Returns every name the cells bind or read; the runtime passes the features on to "
            "predict."
        )
        returns = "dict[str, Any]"
    else:
        tree = ast.parse(code)
        if step.ends_with_expression:
            last = tree.body[-1]
            lines = code.splitlines()
            expression = "\n".join(lines[last.lineno - 1 : last.end_lineno])
            code = "\n".join(lines[: last.lineno - 1])
            ending = f"return {expression.strip()}"
            doc = "Returns the value of the cell's last expression."
        else:
            ending = f"return {step.result}"
            doc = f"Returns `{step.result}`, the last name the cell assigns."
        returns = "Any"
    params = ", ".join(f"{name}: Any" for name in step.reads)
    signature = (
        f"def run_{role}_cells(*, {params}) -> {returns}:"
        if params
        else f"def run_{role}_cells() -> {returns}:"
    )
    body = textwrap.indent(tidy(code + "\n" + ending), "    ")
    arguments = "".join(
        textwrap.fill(
            f"{name}: {text}", width=96, initial_indent=" " * 8, subsequent_indent=" " * 12
        )
        + "\n"
        for name, text in described.items()
    )
    caller = (
        "nb2prod_runtime.monitoring does not call it yet; it would pass:"
        if role == "monitor"
        else "nb2prod_runtime.loader calls it for each request with:"
    )
    args_doc = f"    {caller}\n{arguments}\n" if arguments else ""
    return (
        f"# %% cell {cells} [{role}]\n{signature}\n"
        f'    """Cell {cells} [{role}] of the notebook, run as a function.\n\n'
        f'{args_doc}    {doc}\n    """\n{body}'
    )


def _describe_reads(
    spec: NotebookSpec, plan: ServingPlan, role: str, step: CellsStep
) -> dict[str, str]:
    """Where each argument of ``run_<role>_cells`` comes from, in plain words."""
    request, request_text = _request_argument(spec, plan, role, step)
    described: dict[str, str] = {}
    for name in step.reads:
        saved = f"saved state from {STATE} ({_bound_at(spec, name)})"
        if name == request:
            described[name] = request_text
        elif request is None and role != "monitor":
            described[name] = (
                f"{saved}, unless training picked it as the step's input (the card's "
                "serving.bindings says which)"
            )
        else:
            described[name] = saved
    return described


def _request_argument(
    spec: NotebookSpec, plan: ServingPlan, role: str, step: CellsStep
) -> tuple[str | None, str]:
    """The argument that receives the request, when the cells alone tell which one it is.

    Training decides for certain (runtime/notebook_path.py); this repeats its rules only
    where the answer cannot differ: a name last bound to a literal is never a DataFrame.
    """
    if role == "predict" and isinstance(plan.preprocess, CellsStep):
        from_preprocess = [n for n in step.reads if n in plan.preprocess.binds]
        if len(from_preprocess) == 1:
            return from_preprocess[0], "the preprocess step's output for the request rows"
    if role == "preprocess" or (role == "predict" and isinstance(plan.preprocess, NoStep)):
        candidates = [n for n in step.reads if not _never_a_frame(spec, n)]
        if len(candidates) == 1:
            return candidates[0], REQUEST
    return None, ""


def _last_binding(spec: NotebookSpec, name: str) -> tuple[Cell, ast.stmt] | None:
    """The training cell, and its statement, that last binds ``name`` at top level."""
    for cell in reversed(spec.cells_with_roles(TRAINING_ROLES)):
        if name not in cell.binds:
            continue
        for stmt in reversed(ast.parse(cell.code).body):
            stored = {
                n.id
                for n in ast.walk(stmt)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            }
            if name in stored:
                return cell, stmt
        return cell, ast.Pass()
    return None


def _bound_at(spec: NotebookSpec, name: str) -> str:
    found = _last_binding(spec, name)
    if found is None:
        return "bound at training"
    return f"bound at training by cell {found[0].number} [{found[0].role}]"


#: Builtins whose result is never a DataFrame (unless the notebook rebinds the name).
_NOT_DATA_CALLS = frozenset(
    {"list", "tuple", "dict", "set", "frozenset", "sorted", "str", "int", "float", "bool", "range"}
)


def _never_a_frame(spec: NotebookSpec, name: str) -> bool:
    """True when ``name`` is last bound to a literal, comprehension or builtin collection."""
    found = _last_binding(spec, name)
    if found is None or not isinstance(found[1], ast.Assign):
        return False
    value = found[1].value
    if isinstance(value, (ast.ListComp, ast.SetComp, ast.DictComp)):
        return True
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        rebound = any(value.func.id in cell.binds + cell.defines for cell in spec.cells)
        return value.func.id in _NOT_DATA_CALLS and not rebound
    try:
        ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return False
    return True
