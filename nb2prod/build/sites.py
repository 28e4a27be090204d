"""Find the fits and row statistics in the serving code and rewrite them for record/replay.

A *site* is one call in a preprocess or predict cell whose result depends on all the rows it
is given: a fit (``.fit_transform(``), a reduction along rows (``.mean()``, ``np.median(x)``),
``pd.get_dummies(`` (its columns) or ``pd.cut(``/``pd.qcut(`` (their bins). Each site is
rewritten, in place and on its own lines, into a call of ``nb2prod_runtime.frozen`` carrying
its number; the rest of the cell stays as written. How the runtime records and replays them
is in runtime/frozen.py.

Row-wise work is left alone: ``axis=1``, the ``.str``/``.dt`` accessors, ``str.count("x")``,
and anything inside a ``lambda`` (a per-element callback) or a class body (an estimator's own
methods, which fitting records as a whole).

About 450 lines, most of them the tables of recorded and suspect calls; finding a site and
rewriting it are one walk over the cell, kept together.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..models import Cell, ImportBinding
from ..runtime.plan import FrozenSite

#: The alias the generated code imports nb2prod_runtime.frozen under.
ALIAS = "nb2prod_frozen"
IMPORT = f"from nb2prod_runtime import frozen as {ALIAS}"

FIT_METHODS = frozenset({"fit", "fit_transform", "fit_predict", "partial_fit", "fit_resample"})
_REDUCTIONS = frozenset("mean median std var min max sum quantile".split())
#: Reductions along rows (pandas methods, and numpy's array methods of the same names).
STAT_METHODS = _REDUCTIONS | frozenset("mode value_counts unique nunique count".split())
#: numpy functions that reduce along rows, NaN-skipping variants included.
NUMPY_STATS = (
    _REDUCTIONS
    | frozenset("amin amax percentile average unique".split())
    | frozenset(f"nan{name}" for name in [*_REDUCTIONS, "percentile"])
)
#: Methods whose first positional argument is the axis (``df.mean(1)`` is per row).
_AXIS_FIRST = STAT_METHODS - {"quantile", "value_counts", "unique", "count"}
ROW_AXIS = (1, "columns")
KINDS = {
    "fit": "fit",
    "stat": "statistic",
    "call_stat": "statistic",
    "dummies": "dummy columns",
    "target": "target",
    "split": "split",
    "apply": "column-wise apply",
    "group_stat": "statistic per group",
}
#: Functions that split rows into training and held-out parts: at serving every part is the
#: request's rows, so the part predict reads holds them all.
SPLIT_FUNCTIONS = frozenset({"train_test_split"})
#: Keyword arguments that carry the target into a data container (xgboost's DMatrix,
#: LightGBM's Dataset, CatBoost's Pool): a request has no target, so serving passes None.
TARGET_KEYWORDS = frozenset({"label"})
#: Calls whose result for a row depends on the other rows, and that nb2prod does not record.
#: Listed so that a failed batch-invariance check can point at the likely line.
BATCH_DEPENDENT = frozenset(
    {
        "transform",
        "rank",
        "shift",
        "cumsum",
        "cumprod",
        "cummax",
        "cummin",
        "rolling",
        "expanding",
        "ewm",
        "diff",
        "pct_change",
        "describe",
        "agg",
        "aggregate",
        "corr",
        "cov",
        "nlargest",
        "nsmallest",
        "drop_duplicates",
        "interpolate",
        "ffill",
        "bfill",
        "len",
    }
)
NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class Instrumented:
    """The serving cells' code with every site rewritten, and the sites in notebook order."""

    code: dict[int, str]  # cell number -> rewritten code (same line numbers as the cell)
    sites: tuple[FrozenSite, ...]
    # Calls that depend on the other rows and are not recorded (number 0), for diagnosis.
    suspects: tuple[FrozenSite, ...] = ()


@dataclass(frozen=True)
class _Found:
    node: ast.expr  # a call, or the value of a `label=` keyword (kind "target")
    kind: str  # "fit" | "stat" | "call_stat" | "dummies" | "bins"


def instrument(
    cells: Sequence[Cell], imports: Sequence[ImportBinding], roles: frozenset[str]
) -> Instrumented:
    """Rewrite the sites of the cells whose role is in ``roles`` (strict cells stay as written)."""
    return _instrument(tuple(cells), tuple(imports), roles)


@lru_cache(maxsize=32)
def _instrument(
    cells: tuple[Cell, ...], imports: tuple[ImportBinding, ...], roles: frozenset[str]
) -> Instrumented:
    numpy, pandas = _module_names(imports, "numpy"), _module_names(imports, "pandas")
    code: dict[int, str] = {}
    sites: list[FrozenSite] = []
    suspects: list[FrozenSite] = []
    for cell in cells:
        if cell.role not in roles or cell.strict or not cell.code.strip():
            continue
        try:
            tree = ast.parse(cell.code)
        except SyntaxError:
            continue
        unique: dict[int, _Found] = {}
        for f in _find(tree, numpy, pandas):
            unique.setdefault(id(f.node), f)  # one site per call (a target that is a statistic)
        found = list(unique.values())
        numbers = {id(f.node): len(sites) + i + 1 for i, f in enumerate(found)}
        for f in found:
            sites.append(
                FrozenSite(
                    number=numbers[id(f.node)],
                    cell=cell.number,
                    line=f.node.lineno,
                    kind=KINDS.get(f.kind, "bins"),
                    expression=_short(ast.get_source_segment(cell.code, f.node) or ""),
                )
            )
        text = _Rewriter(cell.code, found, numbers).text() if found else cell.code
        code[cell.number] = _decorate_role_function(text, cell)
        suspects.extend(_suspects(cell, tree, {id(f.node) for f in found}))
    return Instrumented(code=code, sites=tuple(sites), suspects=tuple(suspects))


def _suspects(cell: Cell, tree: ast.Module, recorded: set[int]) -> list[FrozenSite]:
    """Unrecorded calls in ``cell`` whose value for a row may depend on the other rows."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in recorded:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        inside = name in STAT_METHODS and not _row_axis(node, 0 if name in _AXIS_FIRST else None)
        if name == "transform" and not _group_transform(node):
            continue  # an estimator's transform(X) is per row
        if name in BATCH_DEPENDENT or inside:
            text = _short(ast.get_source_segment(cell.code, node) or name)
            out.append(FrozenSite(0, cell.number, node.lineno, NOT_RECORDED, text))
    return sorted(out, key=lambda s: s.line)


def _decorate_role_function(code: str, cell: Cell) -> str:
    """Mark ``def preprocess``/``def predict`` in a cell of that role: each call is one run."""
    if cell.role not in ("preprocess", "predict") or cell.role not in cell.defines:
        return code
    lines = code.splitlines()
    for index, line in enumerate(lines):
        if line.startswith((f"def {cell.role}(", f"async def {cell.role}(")):
            first = index
            while first > 0 and lines[first - 1].startswith("@"):
                first -= 1
            lines.insert(first, f'@{ALIAS}.role_run("{cell.role}")')
            return "\n".join(lines)
    return code


_EVALUATION_NAME = re.compile(r"(^|_)(test|val|valid|validation|eval|holdout)(_|\d|$)", re.I)


def evaluation_notices(cells: Sequence[Cell], sites: Sequence[FrozenSite]) -> list[str]:
    """Notices for sites that learn from a frame named like evaluation data (``x_test``).

    The notebook did that, so serving replays it (parity with the notebook), but it is
    usually a leak the author did not mean.
    """
    by_number = {cell.number: cell for cell in cells}
    notices = []
    for site in sites:
        cell = by_number.get(site.cell)
        if cell is None:
            continue
        if site.kind == "target":
            notices.append(
                f"{site.describe()} is the training target (label=); a request has no target, "
                "so serving passes label=None"
            )
            continue
        try:
            tree = ast.parse(site.expression.replace("...", ""), mode="eval")
        except SyntaxError:
            continue
        call = tree.body
        if not isinstance(call, ast.Call):
            continue
        target = call.args[0] if site.kind == "fit" and call.args else call.func
        names = [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
        learned = next((n for n in names if _EVALUATION_NAME.search(n)), None)
        if learned:
            notices.append(
                f"{site.describe()} learns from evaluation data (`{learned}`); serving replays "
                "what it learned there, as the notebook did. Fit on the training rows to avoid "
                "the leak"
            )
    return notices


def _module_names(imports: Sequence[ImportBinding], module: str) -> dict[str, str | None]:
    """Names bound to ``module`` (value None) or to one of its functions (value: its name)."""
    names: dict[str, str | None] = {}
    for binding in imports:
        if binding.module != module:
            continue
        if binding.statement.startswith("import "):
            names[binding.name] = None
        else:
            imported = binding.statement.split(" import ")[1].split(" as ")[0]
            names[binding.name] = imported
    return names


def _find(
    tree: ast.Module, numpy: dict[str, str | None], pandas: dict[str, str | None]
) -> list[_Found]:
    found: list[_Found] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Lambda, ast.ClassDef)):
            return  # per-element callbacks; an estimator's own methods
        if isinstance(node, ast.Call):
            kind = _kind(node, numpy, pandas)
            if kind:
                found.append(_Found(node, kind))
            for keyword in node.keywords:
                if keyword.arg in TARGET_KEYWORDS and not _is_none(keyword.value):
                    found.append(_Found(keyword.value, "target"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return sorted(found, key=lambda f: (f.node.lineno, f.node.col_offset))


def _kind(call: ast.Call, numpy: dict[str, str | None], pandas: dict[str, str | None]) -> str:
    func = call.func
    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    if called in SPLIT_FUNCTIONS:
        return "split"
    if isinstance(func, ast.Name):
        if numpy.get(func.id) in NUMPY_STATS and not _row_axis(call, positional=1):
            return "call_stat"
        if pandas.get(func.id) == "get_dummies":
            return "dummies"
        if pandas.get(func.id) in ("cut", "qcut"):
            return _bins_kind(call, pandas[func.id])
        return ""
    if not isinstance(func, ast.Attribute):
        return ""
    owner = func.value
    module = owner.id if isinstance(owner, ast.Name) else None
    if module in numpy and numpy[module] is None:
        if func.attr in NUMPY_STATS and not _row_axis(call, positional=1):
            return "call_stat"
        return ""
    if module in pandas and pandas[module] is None:
        if func.attr == "get_dummies":
            return "dummies"
        return _bins_kind(call, func.attr) if func.attr in ("cut", "qcut") else ""
    if func.attr in FIT_METHODS:
        return "fit"
    if func.attr == "transform" and _group_transform(call) and _named_reduction(call):
        return "group_stat"
    if func.attr == "apply" and isinstance(owner, (ast.Name, ast.Subscript)):
        # df[cols].apply(lambda x: skew(x)): per column, a statistic over the rows; the
        # runtime records it only when the result is one value per column.
        return "" if _row_axis(call, positional=1) else "apply"
    if func.attr not in STAT_METHODS:
        return ""
    if isinstance(owner, ast.Attribute) and owner.attr in ("str", "dt", "cat"):
        return ""  # element-wise accessors
    if func.attr == "count" and call.args:
        return ""  # str.count("x") / list.count(x); DataFrame.count takes keywords
    positional = 0 if func.attr in _AXIS_FIRST else None
    return "" if _row_axis(call, positional) else "stat"


def _group_transform(call: ast.Call) -> bool:
    """``df.groupby(k)[c].transform("median")``: a statistic per group of the request's rows."""
    named = any(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)
    grouped = any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "groupby"
        for n in ast.walk(call.func)
    )
    return named or grouped


def _named_reduction(call: ast.Call) -> bool:
    """``.transform("median")``: a reduction named by a string nb2prod can record per group."""
    first = call.args[0] if call.args else None
    return isinstance(first, ast.Constant) and first.value in STAT_METHODS


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _bins_kind(call: ast.Call, function: str | None) -> str:
    """``pd.qcut`` always depends on the data; ``pd.cut`` only with a number of bins."""
    if function == "qcut":
        return "bins"
    given = [k.value for k in call.keywords if k.arg == "bins"] + call.args[1:2]
    counted = any(isinstance(v, ast.Constant) and type(v.value) is int for v in given)
    return "bins" if counted else ""


def _row_axis(call: ast.Call, positional: int | None) -> bool:
    """True when the call reduces along columns (``axis=1``): per row, so it runs live."""
    values = [k.value for k in call.keywords if k.arg == "axis"]
    if positional is not None and len(call.args) > positional:
        values.append(call.args[positional])
    return any(isinstance(v, ast.Constant) and v.value in ROW_AXIS for v in values)


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class _Rewriter:
    """Splices the rewritten calls into the cell's text, innermost sites first."""

    def __init__(self, code: str, found: list[_Found], numbers: dict[int, int]) -> None:
        self.code = code
        self.numbers = numbers
        self.kinds = {id(f.node): f.kind for f in found}
        starts = [0]
        for line in code.splitlines(keepends=True):
            starts.append(starts[-1] + len(line))
        self.starts = starts
        self.lines = code.splitlines(keepends=True)
        self.spans = sorted(
            (
                (self._offset(f.node, end=False), self._offset(f.node, end=True), f.node)
                for f in found
            ),
            key=lambda s: (s[0], -s[1]),
        )

    def _offset(self, node: ast.AST, *, end: bool) -> int:
        line = node.end_lineno if end else node.lineno
        col = node.end_col_offset if end else node.col_offset
        assert line is not None and col is not None
        text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        return self.starts[line - 1] + len(text.encode()[:col].decode(errors="ignore"))

    def text(self) -> str:
        return self._render(0, len(self.code))

    def _render(self, start: int, end: int, inside: ast.AST | None = None) -> str:
        out: list[str] = []
        position = start
        for s, e, node in self.spans:
            if s < position or e > end or s < start or node is inside:
                continue
            out.append(self.code[position:s])
            out.append(self._replacement(node))
            position = e
        out.append(self.code[position:end])
        return "".join(out)

    def _span(self, node: ast.AST) -> str:
        return self._render(self._offset(node, end=False), self._offset(node, end=True))

    def _arguments(self, call: ast.Call) -> str:
        parts: list[ast.AST] = [*call.args, *call.keywords]
        if not parts:
            return ""
        start = min(self._offset(p, end=False) for p in parts)
        stop = max(self._offset(p, end=True) for p in parts)
        text = self._render(start, stop)
        return ", " + text + ("\n" if "#" in text else "")

    def _replacement(self, node: ast.expr) -> str:
        number = self.numbers[id(node)]
        kind = self.kinds[id(node)]
        if kind == "target":
            text = self._render(self._offset(node, end=False), self._offset(node, end=True), node)
            return f"{ALIAS}.target({number}, lambda: {text})"
        assert isinstance(node, ast.Call)
        call = node
        args = self._arguments(call)
        if kind in ("call_stat", "dummies", "bins", "split"):
            return f"{ALIAS}.{kind}({number}, {self._span(call.func)}{args})"
        func = call.func
        assert isinstance(func, ast.Attribute)
        receiver = self._span(func.value)
        if kind == "fit":
            return f'{ALIAS}.fit({number}, {receiver}, "{func.attr}"{args})'
        if kind == "group_stat":
            return f"{ALIAS}.group_stat({number}, {receiver}{args})"
        if not isinstance(func.value, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)):
            receiver = f"({receiver})"
        if kind == "apply":
            return f'{ALIAS}.stat({number}, lambda: {receiver}, "apply"{args})'
        return f'{ALIAS}.stat({number}, lambda: {receiver}, "{func.attr}"{args})'
