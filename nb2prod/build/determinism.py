"""Refuse random draws on the serving path: the same rows must always get the same answer.

The serving path is what runs on each request: the code of script-style cells tagged
``preprocess``, ``predict`` or ``monitor``; in function style the function named after
the role; and every function defined at top level of a tagged cell that this code calls
or passes on (``df.apply(jitter)``), transitively. Cells tagged ``train``, ``load`` or
``evaluate`` run once, in training, and may draw freely.

A draw is, through the notebook's own imports (``np``, ``from numpy import random``,
``from numpy.random import choice``; a name the code binds for itself is not an import):
numpy's and the stdlib's global sampling functions, ``torch.rand*``-style functions,
``tf.random.*`` samplers and scipy's ``.rvs`` without a fixed ``random_state``. Seeding
calls are not draws, but they do not make later global draws repeatable either: the
global state is shared by concurrent requests (large batches run in a thread pool).

A generator is repeatable only when serving code creates it with a seed on each request
(``rng = np.random.default_rng(42)`` inside the function). One created once, in training,
is refused even when seeded: its seed fixes the sequence, not each answer, so a row's
prediction depends on how many requests came before.

``.sample(`` is refused on the serving path whatever its ``random_state``: on the request's
rows it drops or reorders rows, so predictions no longer line up with the rows sent.

Not followed, to stay free of false refusals: methods of classes, functions reached
through an alias (``f = np.random.rand``) or an argument, and attribute receivers
(``self.rng``). The module is one analysis; it runs past 400 lines only for the tables of
each library's sampling functions.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import NotebookError
from ..models import SERVING_ROLES, Cell, ImportBinding

#: Sampling functions of numpy's legacy global state (also RandomState/Generator methods).
NUMPY_DRAWS = frozenset(
    {
        "rand", "randn", "randint", "random_integers", "random", "random_sample", "ranf",
        "sample", "choice", "bytes", "shuffle", "permutation", "beta", "binomial",
        "chisquare", "dirichlet", "exponential", "f", "gamma", "geometric", "gumbel",
        "hypergeometric", "laplace", "logistic", "lognormal", "logseries", "multinomial",
        "multivariate_normal", "negative_binomial", "noncentral_chisquare", "noncentral_f",
        "normal", "pareto", "poisson", "power", "rayleigh", "standard_cauchy",
        "standard_exponential", "standard_gamma", "standard_normal", "standard_t",
        "triangular", "uniform", "vonmises", "wald", "weibull", "zipf",
    }
)  # fmt: skip
#: Sampling functions of the stdlib's ``random`` module (also ``random.Random`` methods).
STDLIB_DRAWS = frozenset(
    {
        "random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform",
        "triangular", "gauss", "normalvariate", "lognormvariate", "expovariate",
        "vonmisesvariate", "gammavariate", "betavariate", "paretovariate", "weibullvariate",
        "binomialvariate", "getrandbits", "randbytes",
    }
)  # fmt: skip
#: Methods that draw when called on a generator object.
GENERATOR_DRAWS = (
    NUMPY_DRAWS | STDLIB_DRAWS | {"integers", "permuted", "multivariate_hypergeometric"}
)
TORCH_DRAWS = frozenset(
    {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
     "normal", "bernoulli", "multinomial", "poisson"}
)  # fmt: skip
#: ``tf.random`` samplers; an op-level ``seed=`` still advances per call, stateless_* do not.
TENSORFLOW_DRAWS = frozenset(
    {"uniform", "normal", "truncated_normal", "shuffle", "categorical", "gamma", "poisson",
     "all_candidate_sampler", "fixed_unigram_candidate_sampler",
     "learned_unigram_candidate_sampler", "log_uniform_candidate_sampler",
     "uniform_candidate_sampler"}
)  # fmt: skip
#: Calls that create a generator object, and those never seeded by their arguments.
GENERATOR_CONSTRUCTORS = frozenset(
    {"numpy.random.default_rng", "numpy.random.RandomState", "numpy.random.Generator",
     "random.Random", "random.SystemRandom", "torch.Generator"}
)  # fmt: skip
UNSEEDABLE = frozenset({"random.SystemRandom", "torch.Generator"})  # torch: .manual_seed(n)
#: Per library, the call that seeds its global state (drawing after it is still refused).
GLOBAL_SEEDERS = {
    "numpy.random": "numpy.random.seed",
    "random": "random.seed",
    "torch": "torch.manual_seed",
    "tensorflow.random": "tensorflow.random.set_seed",
}
#: Per library, how serving code seeds its own draws: the example in the hint.
SEEDED_EXAMPLES = {
    "numpy.random": "`rng = np.random.default_rng(42)` inside the function, then `rng.normal(...)`",
    "random": "`rng = random.Random(42)` inside the function, then `rng.random()`",
    "torch": "`generator=torch.Generator().manual_seed(42)`",
    "tensorflow.random": "`tf.random.stateless_uniform(..., seed=(1, 2))`",
    "scipy.stats": "`random_state=42`",
}

DRAWS = "draws random numbers on each request, so the same rows can get different predictions"
SAMPLE_HINT = (
    "Serving predicts every row it is sent: sample rows in a `load` or `train` cell instead; "
    "to fill missing values, impute with a recorded statistic (e.g. the column's median)."
)


@dataclass(frozen=True)
class _Unit:
    """Code serving runs: a function, or the top-level statements of a script-style cell."""

    cell: Cell
    nodes: tuple[ast.AST, ...]
    root: Cell  # the serving cell through which serving reaches it
    path: tuple[str, ...] = ()  # the functions serving goes through, outermost first


@dataclass(frozen=True)
class _Draw:
    cell: Cell
    line: int
    message: str
    hint: str


@dataclass(frozen=True)
class _Generator:
    """A name bound to a new generator at the top level of a cell."""

    cell: Cell
    line: int
    seeded: bool
    per_request: bool  # bound in a script-style serving cell, whose code runs on each request


def refuse_random_draws(cells: Sequence[Cell], imports: Iterable[ImportBinding]) -> None:
    """Raise NotebookError naming the first random draw on the serving path, if any."""
    modules = {b.name: _import_target(b.statement) for b in imports}
    trees = {c.number: ast.parse(c.code) for c in cells if c.role not in (None, "skip")}
    run = [c for c in cells if c.number in trees]
    function_roles = {c.role for c in run if c.role in SERVING_ROLES and c.role in c.defines}
    outer = _Scope(modules, ())
    generators: dict[str, _Generator] = {}
    functions: dict[str, tuple[Cell, ast.AST]] = {}
    # Serving cells' own functions win over same-named ones in training cells.
    for cell in sorted(run, key=lambda c: c.role in SERVING_ROLES):
        per_request = cell.role in SERVING_ROLES and cell.role not in function_roles
        for stmt in trees[cell.number].body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions[stmt.name] = (cell, stmt)
            elif isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
                seeded = outer.new_generator(stmt.value)
                for target in stmt.targets:
                    if seeded is not None and isinstance(target, ast.Name):
                        generators[target.id] = _Generator(cell, stmt.lineno, seeded, per_request)
    draws: list[_Draw] = []
    for unit in _serving_units(run, trees, function_roles, functions, modules):
        draws.extend(_Scope(modules, unit.nodes, generators).draws(unit))
    if draws:
        first = min(draws, key=lambda d: (d.cell.number, d.line))
        raise NotebookError(first.message, hint=first.hint)


def call_resolver(
    tree: ast.AST, imports: Iterable[ImportBinding]
) -> Callable[[ast.expr], str | None]:
    """How one cell's code names a callee: ``np.random.rand`` -> ``numpy.random.rand``, through
    the notebook's imports and the cell's own; None for a name the cell binds itself or for
    anything that is not reached through an import. For analyses outside the serving path."""
    modules = {b.name: _import_target(b.statement) for b in imports}
    return _Scope(modules, (tree,)).qualified


def _serving_units(
    run: list[Cell],
    trees: dict[int, ast.Module],
    function_roles: set[str | None],
    functions: dict[str, tuple[Cell, ast.AST]],
    modules: dict[str, str],
) -> list[_Unit]:
    """The serving roots, then every function they reach, breadth first."""
    queue: list[_Unit] = []
    for cell in (c for c in run if c.role in SERVING_ROLES):
        body = trees[cell.number].body
        if cell.role in function_roles:
            # Function style: the cell's other statements ran once, in training.
            queue.extend(
                _Unit(cell, (stmt,), cell, (stmt.name,))
                for stmt in body
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
                and stmt.name == cell.role
            )
        else:
            statements = tuple(s for s in body if not isinstance(s, _DEFINITIONS))
            queue.append(_Unit(cell, statements, cell))
    seen = {unit.path[0] for unit in queue if unit.path}
    units: list[_Unit] = []
    while queue:
        unit = queue.pop(0)
        units.append(unit)
        for name in _Scope(modules, unit.nodes).functions_referenced(functions):
            if name not in seen:
                seen.add(name)
                cell, node = functions[name]
                queue.append(_Unit(cell, (node,), unit.root, (*unit.path, name)))
    return units


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass
class _Scope:
    """Resolves names in one unit of code: its own imports and bindings shadow the notebook's."""

    modules: dict[str, str]
    nodes: tuple[ast.AST, ...]
    generators: dict[str, _Generator] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.walked = [node for top in self.nodes for node in ast.walk(top)]
        self.imported: dict[str, str] = {}
        self.local: set[str] = set()
        self.values: dict[str, list[ast.expr]] = {}
        for node in self.walked:
            if isinstance(node, ast.Import) or (
                isinstance(node, ast.ImportFrom) and not node.level
            ):
                self.imported.update(_alias_target(node, alias) for alias in node.names)
            elif isinstance(node, ast.arg):
                self.local.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.local.add(node.id)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.values.setdefault(target.id, []).append(node.value)

    def module_of(self, name: str) -> str | None:
        """The module or object an imported name stands for; None for anything else."""
        if name in self.imported:
            return self.imported[name]
        return None if name in self.local else self.modules.get(name)

    def qualified(self, expr: ast.expr) -> str | None:
        """``np.random.rand`` -> ``numpy.random.rand``, through the imports; None if not one."""
        parts: list[str] = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        base = self.module_of(expr.id) if isinstance(expr, ast.Name) else None
        return ".".join([base, *reversed(parts)]) if base else None

    def new_generator(self, call: ast.Call) -> bool | None:
        """Whether ``call`` creates a seeded generator; None when it creates none."""
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
            if func.attr == "manual_seed" and self.new_generator(func.value) is not None:
                return bool(call.args) and not _is_none(call.args[0])
        qualified = self.qualified(func)
        if qualified not in GENERATOR_CONSTRUCTORS:
            return None
        return qualified not in UNSEEDABLE and _seeded(call)

    def functions_referenced(self, functions: dict[str, tuple[Cell, ast.AST]]) -> list[str]:
        """Notebook functions this unit calls or passes on, in order of appearance."""
        names = (
            node.id
            for node in self.walked
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
        )
        found = (n for n in names if n in functions and n not in self.local | set(self.imported))
        return list(dict.fromkeys(found))

    def draws(self, unit: _Unit) -> list[_Draw]:
        """Every random draw in the unit, as the refusal it would be."""
        found: list[_Draw] = []
        for node in self.walked:
            if isinstance(node, ast.Call):
                problem = self._problem(node)
                if problem is not None:
                    found.append(_draw(unit, node, *problem))
        return found

    def _problem(self, call: ast.Call) -> tuple[str, str] | None:
        """(reason, hint) when ``call`` draws; None otherwise."""
        qualified = self.qualified(call.func)
        if qualified is not None:
            return self._module_draw(call, qualified)
        func = call.func
        if not isinstance(func, ast.Attribute):
            return None
        origin = self._generator(func.value)
        if origin is not None and func.attr in GENERATOR_DRAWS:
            return origin
        if func.attr == "sample":
            return _sample_reason(call), SAMPLE_HINT
        if func.attr == "rvs" and self._chain_root(func.value).startswith("scipy.stats"):
            return self._keyword_seed(call, "random_state", "scipy.stats")
        return None

    def _module_draw(self, call: ast.Call, qualified: str) -> tuple[str, str] | None:
        module, _, name = qualified.rpartition(".")
        if module == "numpy.random" and name in NUMPY_DRAWS:
            return self._global_draw(module)
        if module == "random" and name in STDLIB_DRAWS:
            return self._global_draw(module)
        if module == "tensorflow.random" and name in TENSORFLOW_DRAWS:
            return self._global_draw(module)
        if module == "torch" and name in TORCH_DRAWS:
            return self._keyword_seed(call, "generator", "torch")
        if qualified.startswith("scipy.stats.") and name == "rvs":
            return self._keyword_seed(call, "random_state", "scipy.stats")
        return None

    def _global_draw(self, library: str) -> tuple[str, str]:
        seeder = GLOBAL_SEEDERS.get(library)
        seeds = seeder is not None and any(
            isinstance(n, ast.Call) and self.qualified(n.func) == seeder for n in self.walked
        )
        reason = DRAWS
        if seeds:
            reason += (
                "; seeding the global random state in serving code does not make it "
                "repeatable, because concurrent requests share that state"
            )
        return reason, _hint(library)

    def _keyword_seed(self, call: ast.Call, keyword: str, library: str) -> tuple[str, str] | None:
        """A draw that is repeatable when passed a fixed seed or a generator made here."""
        value = next((k.value for k in call.keywords if k.arg == keyword), None)
        if value is None or _is_none(value):
            return self._global_draw(library)
        return self._generator(value, library)

    def _generator(self, expr: ast.expr, library: str = "numpy.random") -> tuple[str, str] | None:
        """(reason, hint) when drawing from ``expr`` is not repeatable; None when it is, or
        when ``expr`` is not known to be a generator."""
        if isinstance(expr, ast.Call):
            seeded = self.new_generator(expr)
            return None if seeded is None or seeded else _unseeded(library)
        if not isinstance(expr, ast.Name):
            return None
        if expr.id in self.local:
            values = self.values.get(expr.id, [])
            made = [self.new_generator(v) for v in values if isinstance(v, ast.Call)]
            made = [seeded for seeded in made if seeded is not None]
            return _unseeded(library) if made and not all(made) else None
        bound = self.generators.get(expr.id)
        if bound is None or (bound.per_request and bound.seeded):
            return None
        if bound.per_request:
            return _unseeded(library)
        reason = (
            f"draws random numbers on each request from `{expr.id}`, a generator created "
            f"once, in training (cell {bound.cell.number} [{bound.cell.role}], line "
            f"{bound.line}): its seed fixes the sequence, not each answer, so the same rows "
            "get different predictions depending on the requests before them"
        )
        return reason, _hint(library)

    def _chain_root(self, expr: ast.expr) -> str:
        """The module at the root of ``stats.norm(0, 1)`` -> ``scipy.stats``; "" if none."""
        while isinstance(expr, (ast.Attribute, ast.Call)):
            expr = expr.value if isinstance(expr, ast.Attribute) else expr.func
        return (self.module_of(expr.id) or "") if isinstance(expr, ast.Name) else ""


def _draw(unit: _Unit, call: ast.Call, reason: str, hint: str) -> _Draw:
    shown = " ".join((ast.get_source_segment(unit.cell.code, call.func) or "").split())
    message = f"{unit.cell.label}, line {call.lineno}: `{shown}(...)` {reason}"
    if unit.cell is not unit.root or len(unit.path) > 1:
        steps = " → ".join(f"`{name}`" for name in unit.path)
        message += f" (serving reaches it from cell {unit.root.number} [{unit.root.role}]: {steps})"
    return _Draw(unit.cell, call.lineno, message, hint)


def _hint(library: str) -> str:
    example = SEEDED_EXAMPLES[library]
    return (
        "Impute with a recorded statistic (e.g. the column's median), or seed it in the "
        f"serving code itself, e.g. {example}. Cells tagged `train`, `load` and `evaluate` "
        "may draw freely."
    )


def _unseeded(library: str) -> tuple[str, str]:
    reason = (
        "draws random numbers on each request from a generator created without a seed, "
        "so the same rows can get different predictions"
    )
    return reason, _hint(library)


def _sample_reason(call: ast.Call) -> str:
    reason = (
        "samples on each request: on the request's rows it drops or reorders rows, so the "
        "predictions no longer line up with the rows sent"
    )
    if not any(k.arg == "random_state" for k in call.keywords):
        return reason + ", and without `random_state=` it samples differently each time"
    return reason + " (`random_state=` only makes it pick the same wrong rows)"


def _seeded(call: ast.Call) -> bool:
    """Whether a generator constructor call is given a seed (or a seeded bit generator)."""
    seeds = [*call.args[:1], *(k.value for k in call.keywords if k.arg in _SEED_KEYWORDS)]
    if not seeds or _is_none(seeds[0]):
        return False
    # Generator(PCG64()) is seeded only if the bit generator is; default_rng(int(time.time()))
    # is not seeded in any repeatable sense.
    return _seeded(seeds[0]) if isinstance(seeds[0], ast.Call) else True


_SEED_KEYWORDS = frozenset({"seed", "x", "bit_generator"})


def _is_none(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Constant) and expr.value is None


def _import_target(statement: str) -> str:
    """``import numpy as np`` -> ``numpy``; ``from numpy.random import choice`` ->
    ``numpy.random.choice``: what the bound name stands for."""
    stmt = ast.parse(statement).body[0]
    assert isinstance(stmt, (ast.Import, ast.ImportFrom))  # ImportBinding.statement is one
    return _alias_target(stmt, stmt.names[0])[1]


def _alias_target(stmt: ast.Import | ast.ImportFrom, alias: ast.alias) -> tuple[str, str]:
    """(bound name, what it stands for) for one name of an import statement."""
    if isinstance(stmt, ast.Import):
        if alias.asname:
            return alias.asname, alias.name
        root = alias.name.split(".")[0]  # `import numpy.random` binds numpy
        return root, root
    return alias.asname or alias.name, f"{stmt.module}.{alias.name}"
