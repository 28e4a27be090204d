"""Propose a role for every code cell of an untagged notebook, from its code alone.

``nb2prod tag`` prints these proposals (and writes them with ``--write``), Kubeflow Kale
blocks are mapped to roles with them, and the "no cell is tagged" errors name the cells they
point at. The analysis is static and works in two passes:

1. What each cell does (:class:`Facts`): reads a file or a dataset, fits a model (``.fit(X, y)``,
   ``xgb.train``), fits a transformer, predicts, computes a metric, only shows things (``.head()``,
   plots), only assigns literals, or only defines functions, classes and constants.
2. Which cells the model needs: the predict cell is chosen (the last clean ``.predict(`` on
   held-out data), then the cells are sliced backwards from it by the names each cell reads and
   writes (a frame changed in place, or through ``for dataset in combine``, counts as written).
   A cell in the slice before the fit is ``preprocess``; one outside it that only explores is
   ``skip``. So exploration that assigns (``rate = df.churn.mean()``) is not put on the serving
   path, and only the model the predict cell uses is trained.

When no cell predicts cleanly (the predictions are inside a metric cell, or nothing predicts),
:class:`PredictHint` holds the one cell to add.

One module (about 570 lines) because the two passes share the per-cell facts and their
vocabulary (loaders, metrics, display calls); split, each half would import most of the other.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..models import Cell
from .names import name_use

LOADERS = frozenset(
    {
        *("read_csv", "read_table", "read_excel", "read_parquet", "read_json", "read_feather"),
        *("read_pickle", "read_sql", "read_sql_query", "read_sql_table", "read_hdf", "read_fwf"),
        *("read_orc", "loadtxt", "genfromtxt", "fromfile", "load_dataset", "open"),
        *("make_classification", "make_regression", "make_blobs", "make_moons"),
    }
)
PREDICTS = frozenset({"predict", "predict_proba", "predict_log_proba", "decision_function"})
METRICS = frozenset(
    {
        *("confusion_matrix", "classification_report", "cross_val_score", "cross_validate"),
        *("cross_val_predict", "roc_curve", "precision_recall_curve", "score", "learning_curve"),
    }
)
#: Calls that only show things: a cell of nothing else is exploration.
DISPLAY = frozenset(
    {
        *("head", "tail", "info", "describe", "print", "display", "plot", "hist", "show"),
        *("value_counts", "nunique", "unique", "corr", "crosstab", "sample", "isnull", "isna"),
        *("sum", "mean", "count", "sort_values", "groupby", "agg", "round", "boxplot", "scatter"),
        *("heatmap", "countplot", "barplot", "pairplot", "distplot", "histplot", "set_title"),
        *("figure", "subplots", "title", "xlabel", "ylabel", "legend", "tight_layout", "len"),
    }
)
#: Calls that make data (a frame typed in is still data, not a constant to define).
DATA_CONSTRUCTORS = frozenset(
    {"DataFrame", "Series", "array", "asarray", "concat", "merge", "from_records", "from_dict"}
)
#: Calls that write files: a cell that only reports this way stays out of the training run.
WRITERS = frozenset(
    {"to_csv", "to_parquet", "to_excel", "to_json", "to_pickle", "savefig", "dump", "save"}
)
#: Roots of plotting objects: binding ``fig, ax = plt.subplots()`` is still only showing.
PLOTTING = frozenset({"plt", "sns", "px", "go", "fig", "ax", "axes", "axs"})
#: Calls that set up the session (seeds, warnings, display options): allowed in definitions.
SETUP = frozenset(
    {"seed", "filterwarnings", "simplefilter", "set_option", "set_printoptions", "manual_seed"}
)
#: Methods that change their receiver.
MUTATORS = frozenset(
    {"append", "extend", "insert", "pop", "update", "remove", "clear", "add", "setdefault"}
)
#: A fitted object named like these is the model (``.fit(X)`` with one argument included).
_MODEL_WORDS = ("model", "clf", "classifier", "regressor", "reg", "estimator", "forest", "tree")
_HELD_OUT_WORDS = ("test", "val", "valid", "holdout", "new", "unseen", "score")


@dataclass(frozen=True)
class Proposal:
    """The proposed role of one code cell, and why, in a few words."""

    cell: int
    role: str | None  # None: leave untagged (imports, definitions nb2prod includes itself)
    reason: str


@dataclass(frozen=True)
class PredictHint:
    """The cell to add when no cell predicts cleanly: its text, and the cell it follows."""

    after_cell: int
    source: str


@dataclass
class Facts:
    """What one cell does, read from its code."""

    cell: int
    empty: bool = False
    loads: list[str] = field(default_factory=list)
    model_fits: list[tuple[str, str]] = field(default_factory=list)  # (receiver, X argument)
    predicts: list[tuple[str, str, str | None]] = field(default_factory=list)  # (recv, arg, to)
    metrics: list[str] = field(default_factory=list)
    writes_files: list[str] = field(default_factory=list)
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    display_only: bool = False
    literal_only: bool = False
    scalars_only: bool = False  # literal numbers, strings, booleans: settings to tune
    definition_only: bool = False
    defines: tuple[str, ...] = ()
    tree: ast.Module | None = None
    candidate: bool = True  # may be a definitions cell (not already given another role)


def propose_roles(cells: Sequence[Cell]) -> tuple[list[Proposal], PredictHint | None]:
    """A proposal for every code cell (in order), and the predict cell to add if one is needed."""
    facts = [_facts(cell) for cell in cells]
    _mark_definitions(facts)
    predict, hint = _predict_cell(facts)
    fit_cells = [f.cell for f in facts if f.model_fits]
    if predict is not None:
        # Function style: the cells that call predict() pass it the model.
        callers = {f.cell for f in facts if f.cell != predict and _calls_predict(f)}
        needed = _slice(facts, {predict} | callers)
    elif fit_cells:
        needed = _slice(facts, {fit_cells[-1]})
    else:
        needed = set()
    first_fit = min((n for n in fit_cells if n in needed), default=None)
    first_load = min((f.cell for f in facts if f.loads), default=None)
    context = _Context(predict, needed, first_fit, first_load, _predictions(facts, predict))
    return [Proposal(f.cell, *_role(f, context)) for f in facts], hint


def definition_cells(cells: Sequence[Cell]) -> set[int]:
    """The cells that only define functions, classes, constants and session setup.

    A cell that already has a role other than ``definitions`` is never one: what it binds is
    data for the cells after it.
    """
    facts = [_facts(cell) for cell in cells]
    for f, cell in zip(facts, cells, strict=True):
        f.candidate = cell.role in (None, "definitions")
    _mark_definitions(facts)
    return {f.cell for f in facts if f.definition_only}


def block_role(roles: Sequence[str | None]) -> str | None:
    """One role for a group of cells (a Kale block): the most decisive of its cells' roles."""
    for role in ("train", "predict", "load", "preprocess", "evaluate", "parameters", "skip"):
        if role in roles:
            return role
    return None


# --- pass 1: what each cell does ------------------------------------------------------------


def _facts(cell: Cell) -> Facts:
    facts = Facts(cell=cell.number)
    try:
        tree = ast.parse(cell.code)
    except SyntaxError:
        facts.empty = True
        return facts
    if not tree.body or all(_is_docstring(s) for s in tree.body):
        facts.empty = True
        return facts
    facts.tree = tree
    use = name_use(tree)
    facts.reads = set(use.reads)
    facts.writes = set(use.binds) | _mutated(tree)
    facts.defines = use.defines
    for node in _outside_definitions(tree):
        if isinstance(node, ast.Call):
            _call_facts(node, facts, tree)
    facts.display_only = _display_only(tree, facts)
    facts.literal_only = all(_literal_assignment(s) for s in tree.body)
    facts.scalars_only = facts.literal_only and all(
        isinstance(s.value, (ast.Constant, ast.UnaryOp))
        for s in tree.body
        if isinstance(s, (ast.Assign, ast.AnnAssign))
    )
    return facts


def _call_facts(node: ast.Call, facts: Facts, tree: ast.Module) -> None:
    name = _call_name(node)
    receiver = _root(node.func.value) if isinstance(node.func, ast.Attribute) else None
    if name in LOADERS or name.startswith(("load_", "fetch_")) or _numpy_load(node):
        facts.loads.append(name)
    elif name in ("fit", "train") and _fits_model(node, name, receiver):
        first = node.args[0] if node.args else None
        argument = ast.unparse(first) if first is not None else ""
        facts.model_fits.append((_fitted(node, tree) or receiver or "model", argument))
    elif name in PREDICTS and node.args:
        # model.predict(X), or a notebook's own predict(model, X)
        args = node.args if isinstance(node.func, ast.Attribute) else node.args[1:]
        owner = node.func.value if isinstance(node.func, ast.Attribute) else node.args[0]
        if args:
            facts.predicts.append(
                (ast.unparse(owner), ast.unparse(args[-1]), _assigned_to(node, tree))
            )
    elif name == "split" and receiver is not None and _splitter(tree, receiver):
        facts.loads.append(f"{receiver}.split")
    elif name in WRITERS:
        facts.writes_files.append(name)
    elif name in METRICS or name.endswith(("_score", "_error", "_loss")):
        facts.metrics.append(name)


def _fits_model(node: ast.Call, name: str, receiver: str | None) -> bool:
    """``.fit(X, y)`` (supervised), ``xgb.train(params, dtrain)``, or a model-named ``.fit(X)``."""
    if name == "train":
        return receiver in ("xgb", "lgb", "xgboost", "lightgbm", "catboost")
    if len(node.args) >= 2 or any(k.arg in ("y", "label", "labels") for k in node.keywords):
        return True
    text = ast.unparse(node.func).lower()
    return any(word in text for word in _MODEL_WORDS)


def _fitted(node: ast.Call, tree: ast.Module) -> str | None:
    """Where the fitted model ends up: ``m = Model().fit(X, y)`` -> ``m``, else the receiver."""
    assigned = _assigned_to(node, tree)
    if assigned is not None:
        return assigned
    if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
        return node.func.value.id
    return None


def _assigned_to(node: ast.Call, tree: ast.Module) -> str | None:
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name) and any(n is node for n in ast.walk(stmt.value)):
                return target.id
    return None


def _splitter(tree: ast.Module, receiver: str) -> bool:
    """``split = StratifiedShuffleSplit(...)``: ``split.split(df, ...)`` divides the data."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == receiver for t in node.targets
        ):
            if isinstance(node.value, ast.Call):
                made = _call_name(node.value)
                return made.endswith(("Split", "Fold")) or "Split" in made
    return receiver.lower() in ("split", "splitter", "kf", "skf", "kfold", "cv")


def _numpy_load(node: ast.Call) -> bool:
    return (
        isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and _root(node.func.value) in ("np", "numpy", "joblib", "pickle", "torch")
    )


def _mutated(tree: ast.Module) -> set[str]:
    """Names the cell changes in place: ``df[c] = ...``, ``inplace=True``, ``lst.append``, and
    the iterable of a loop whose variable is changed (``for d in combine: d[c] = ...``)."""
    changed: set[str] = set()
    for node in _outside_definitions(tree):
        targets: list[ast.expr] = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, (ast.Subscript, ast.Attribute)):
                    root = _root(part)
                    if root:
                        changed.add(root)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            inplace = any(
                k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value
                for k in node.keywords
            )
            if inplace or node.func.attr in MUTATORS or node.func.attr.startswith("fit"):
                root = _root(node.func.value)
                if root:
                    changed.add(root)
    for node in _outside_definitions(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            if node.target.id in changed:
                changed |= {n.id for n in ast.walk(node.iter) if isinstance(n, ast.Name)}
    return changed


def _display_only(tree: ast.Module, facts: Facts) -> bool:
    if facts.loads or facts.model_fits or facts.predicts or facts.metrics:
        return False
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
            return False
        if isinstance(node, ast.keyword) and node.arg == "inplace":
            return False
        if isinstance(node, ast.Call) and not _display_call(node):
            return False
    written = facts.writes - _loop_variables(tree)
    return all(name in PLOTTING for name in written)


def _display_call(node: ast.Call) -> bool:
    name = _call_name(node)
    root = _root(node.func)
    return name in DISPLAY or root in PLOTTING or name in ("str", "round", "sorted", "zip")


def _loop_variables(tree: ast.Module) -> set[str]:
    return {
        n.id
        for node in ast.walk(tree)
        if isinstance(node, (ast.For, ast.comprehension))
        for n in ast.walk(node.target)
        if isinstance(n, ast.Name)
    }


def _literal_assignment(stmt: ast.stmt) -> bool:
    if _is_docstring(stmt):
        return True
    if not isinstance(stmt, (ast.Assign, ast.AnnAssign)) or stmt.value is None:
        return False
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    if not all(isinstance(t, ast.Name) for t in targets):
        return False
    try:
        ast.literal_eval(stmt.value)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return False
    return True


def _mark_definitions(facts: list[Facts]) -> None:
    """Mark the cells that only define things, in notebook order: a constant may use an
    earlier one (``CSV = os.path.join(HOUSING_PATH, "housing.csv")``)."""
    # Imports are already taken out of the cells, so a name no cell binds is imported (or a
    # builtin): reading it is not reading data.
    computed = {name for f in facts for name in f.writes}
    known: set[str] = set()
    for f in facts:
        if f.empty or f.tree is None or f.loads or f.model_fits or f.predicts or f.metrics:
            continue
        if not f.candidate:
            continue
        local: set[str] = set()  # bound by the cell's earlier statements
        for stmt in f.tree.body:
            if not _defines_only(stmt, computed - known - local):
                break
            local |= {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                local.add(stmt.name)
        else:
            f.definition_only = True
            known |= f.writes


def _defines_only(stmt: ast.stmt, data: set[str]) -> bool:
    """A def, a class, a docstring, session setup, or ``NAME = value`` computed from no data."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        eager = [*stmt.decorator_list]
        if not isinstance(stmt, ast.ClassDef):
            eager += [d for d in [*stmt.args.defaults, *stmt.args.kw_defaults] if d is not None]
        return not any(_reads(e) & data for e in eager)
    if _is_docstring(stmt):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        return _call_name(stmt.value) in SETUP and not _reads(stmt.value) & data
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        plain = all(isinstance(n, (ast.Name, ast.Tuple)) for n in targets)
        calls = {_call_name(c) for c in ast.walk(stmt.value) if isinstance(c, ast.Call)}
        made = calls & (LOADERS | DATA_CONSTRUCTORS)
        return plain and not _reads(stmt.value) & data and not made
    return False


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


# --- pass 2: the predict cell and the cells the model needs ---------------------------------


def _predict_cell(facts: list[Facts]) -> tuple[int | None, PredictHint | None]:
    """The cell whose predictions are served, or the cell to add when none predicts cleanly."""
    first_fit = min((f.cell for f in facts if f.model_fits), default=None)
    named = [f for f in facts if "predict" in f.defines]
    if named:  # function style: the cell that defines predict()
        return named[-1].cell, None
    if first_fit is None:
        return None, None
    candidates = [
        f for f in facts if f.cell >= first_fit and f.predicts and not f.model_fits and not f.loads
    ]
    clean = [f for f in candidates if not f.metrics]
    held_out = [f for f in clean if any(_held_out(arg) for _, arg, _ in f.predicts)]
    chosen = (held_out or clean or [None])[-1]
    if chosen is not None:
        return chosen.cell, None
    if candidates:
        where = candidates[-1]
        receiver, argument, _ = where.predicts[-1]
        return None, _hint(where.cell, receiver, argument)
    last = [f for f in facts if f.model_fits][-1]
    model, argument = last.model_fits[-1]
    test = next(
        (n for f in facts for n in sorted(f.writes) if _held_out(n) and n.lower()[:1] == "x"),
        argument or "X_test",
    )
    return None, _hint(last.cell, model, test)


def _hint(after: int, receiver: str, argument: str) -> PredictHint:
    return PredictHint(
        after_cell=after,
        source=f"# nb2prod: predict\npredictions = {receiver}.predict({argument})",
    )


def _held_out(argument: str) -> bool:
    text = argument.lower()
    return any(word in text for word in _HELD_OUT_WORDS) and "train" not in text


def _slice(facts: list[Facts], start: set[int]) -> set[int]:
    """The cells ``start`` depends on through names read and written, in notebook order."""
    aliases = _aliases(facts)
    needed = set(start)
    live: set[str] = set()
    for f in reversed(facts):
        writes = f.writes | {a for name in f.writes for a in aliases.get(name, ())}
        if f.cell in start or (f.cell < max(start) and writes & live and not f.display_only):
            if f.definition_only and f.cell not in start:
                continue  # included by nb2prod when read; not part of the data path
            needed.add(f.cell)
            live = (live - _rebound(f)) | f.reads
    return needed


def _calls_predict(f: Facts) -> bool:
    return f.tree is not None and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "predict"
        for n in ast.walk(f.tree)
    )


def _rebound(f: Facts) -> set[str]:
    """Names the cell binds afresh at top level (``housing = raw.drop(...)``): earlier values
    of them are not needed through this cell."""
    if f.tree is None:
        return set()
    fresh = {
        t.id
        for stmt in f.tree.body
        if isinstance(stmt, ast.Assign)
        for t in stmt.targets
        if isinstance(t, ast.Name)
    }
    return fresh - f.reads


def _aliases(facts: list[Facts]) -> dict[str, set[str]]:
    """``combine = [train_df, test_df]``: changing ``combine`` in place changes both frames."""
    aliases: dict[str, set[str]] = {}
    for f in facts:
        for node in ast.walk(f.tree) if f.tree is not None else ():
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, (ast.List, ast.Tuple))
            ):
                names = {e.id for e in node.value.elts if isinstance(e, ast.Name)}
                aliases.setdefault(node.targets[0].id, set()).update(names)
    return aliases


@dataclass(frozen=True)
class _Context:
    """What the whole notebook tells about one cell's role."""

    predict: int | None
    needed: set[int]
    first_fit: int | None
    first_load: int | None
    predictions: str | None  # the name the predict cell binds


def _predictions(facts: list[Facts], predict: int | None) -> str | None:
    found = [f for f in facts if f.cell == predict]
    return found[0].predicts[-1][2] if found and found[0].predicts else None


def _role(f: Facts, c: _Context) -> tuple[str | None, str]:
    predict, needed, first_fit, first_load = c.predict, c.needed, c.first_fit, c.first_load
    if f.empty:
        return None, "imports only (nb2prod gathers imports from every cell)"
    if f.cell == predict:
        if "predict" in f.defines:
            return "predict", "defines predict()"
        receiver, argument, _ = f.predicts[-1]
        return "predict", f"predicts with {receiver} on {argument}"
    if "preprocess" in f.defines:
        return "preprocess", "defines preprocess()"
    if predict is not None and f.cell > predict and _calls_predict(f):
        return ("evaluate" if f.writes else "skip"), "calls predict() on sample rows"
    if f.model_fits:
        model = f.model_fits[-1][0]
        if f.cell in needed:
            return "train", f"fits {model}"
        return "skip", f"fits {model}, which the predict cell does not use"
    if f.loads and (first_fit is None or f.cell < first_fit or f.cell in needed):
        return "load", f"reads data ({f.loads[0]})"
    if f.scalars_only and (first_fit is None or f.cell < first_fit) and f.writes:
        return "parameters", "literal settings before the model is fitted"
    if f.literal_only and (first_load is None or f.cell < first_load) and f.writes:
        return "parameters", "literal settings before the data is read"
    if f.definition_only:
        what = ", ".join(sorted(f.writes)[:3]) or "setup"
        return None, f"defines {what}: nb2prod includes it when a tagged cell uses it"
    if f.cell in needed:
        return "preprocess", "changes the data the model reads"
    if f.writes_files:
        return "skip", f"writes files ({f.writes_files[0]}): not part of the training run"
    if f.display_only:
        return "skip", "only shows the data"
    if predict is not None and f.cell > predict and c.predictions in f.reads:
        return "evaluate", f"uses the predictions ({c.predictions})"
    if f.metrics or f.predicts:
        return "evaluate", f"scores the model ({(f.metrics or [p[0] for p in f.predicts])[0]})"
    return "skip", "explores: nothing the model or its predictions use"


# --- small helpers --------------------------------------------------------------------------


def _outside_definitions(tree: ast.Module) -> list[ast.AST]:
    """ast.walk without the bodies of functions and classes: they run only when called."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stack.extend(
                [*node.decorator_list, *getattr(node.args, "defaults", [])]
                if not isinstance(node, ast.ClassDef)
                else node.decorator_list
            )
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
