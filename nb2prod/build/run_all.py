"""Notice when the user's own Run All leaves a global random generator where nb2prod's does not.

nb2prod's training runs only the cells whose role is in TRAINING_ROLES (untagged cells that
only define things or seed take the role ``definitions``); the user's Run All runs every cell.
A cell nb2prod does not run (untagged, ``skip``) that draws from, or seeds, a global
generator before training leaves that generator in another state in the user's session, so
everything training draws from it afterwards differs: the split, the forest, the sampled
rows. The model nb2prod trains is then not the one the user evaluated.

Each global generator is followed on its own: numpy's, the stdlib ``random`` module's,
torch's and TensorFlow's. scikit-learn and pandas draw from numpy's when given no
``random_state``, so a ``random.shuffle`` in an exploration cell does not change a forest.
A seeding call in a cell nb2prod runs puts both sessions in the same state again.

Training depends on a generator through calls in ``load``, ``preprocess`` and ``train``
cells up to the last ``train`` cell: global draws, ``.sample(`` and scipy ``.rvs`` without
``random_state``, and scikit-learn estimators and splitters whose result depends on
``random_state`` when it is unset. XGBoost, LightGBM and CatBoost are left out: without
``random_state`` they use a fixed seed of their own, not numpy's generator. Static analysis
only, over each cell's code; calls reached through aliases or functions are not followed.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..models import TRAINING_ROLES, Cell, ImportBinding
from .determinism import (
    GLOBAL_SEEDERS,
    NUMPY_DRAWS,
    STDLIB_DRAWS,
    TENSORFLOW_DRAWS,
    TORCH_DRAWS,
    call_resolver,
)

#: Roles whose cells produce the model; a draw in an ``evaluate`` cell does not change it.
MODEL_ROLES = ("load", "preprocess", "train")
#: How notices name each global generator, keyed like GLOBAL_SEEDERS.
GENERATOR_NAMES = {
    "numpy.random": "numpy's global random generator",
    "random": "the `random` module's global generator",
    "torch": "torch's global random generator",
    "tensorflow.random": "TensorFlow's global random generator",
}
SEED_CALLS = {
    "numpy.random": "np.random.seed(42)",
    "random": "random.seed(42)",
    "torch": "torch.manual_seed(42)",
    "tensorflow.random": "tf.random.set_seed(42)",
}
_SEEDERS = {call: library for library, call in GLOBAL_SEEDERS.items()}

#: scikit-learn callables whose result depends on numpy's global generator whenever
#: ``random_state`` is unset: the exact name, or a prefix of a family of classes.
SKLEARN_ALWAYS = frozenset(
    {"KMeans", "MiniBatchKMeans", "BisectingKMeans", "IsolationForest", "RandomTreesEmbedding",
     "ShuffleSplit", "StratifiedShuffleSplit", "GroupShuffleSplit", "RepeatedKFold",
     "RepeatedStratifiedKFold", "Perceptron", "RandomizedSearchCV", "TruncatedSVD",
     "GaussianMixture", "BayesianGaussianMixture", "TSNE"}
)  # fmt: skip
SKLEARN_FAMILIES = (
    "RandomForest", "ExtraTree", "GradientBoosting", "HistGradientBoosting", "DecisionTree",
    "SGD", "MLP", "Bagging", "AdaBoost", "PassiveAggressive",
)  # fmt: skip
#: Those that draw only with one argument: (keyword, the literal values that make it draw).
#: LogisticRegression's default solver, an unshuffled KFold or an SVC without probability
#: estimates give the same result whatever the generator's state.
SKLEARN_WHEN = {
    "KFold": ("shuffle", (True,)),
    "StratifiedKFold": ("shuffle", (True,)),
    "StratifiedGroupKFold": ("shuffle", (True,)),
    "LogisticRegression": ("solver", ("sag", "saga", "liblinear")),
    "Ridge": ("solver", ("sag", "saga")),
    "RidgeClassifier": ("solver", ("sag", "saga")),
    "SVC": ("probability", (True,)),
    "NuSVC": ("probability", (True,)),
}


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class _Use:
    """One call that seeds or draws from a global generator."""

    cell: Cell
    line: int
    library: str  # a GLOBAL_SEEDERS key
    seeds: bool
    verb: str = "draws with"  # how the notice says what the call does
    shown: str = ""  # the call as the notice shows it, e.g. "RandomForestClassifier()"
    keyword: str | None = None  # the argument that would fix the call on its own


def run_all_notices(cells: Sequence[Cell], imports: Sequence[ImportBinding]) -> list[str]:
    """One notice per global generator that a cell nb2prod does not run changes before
    training depends on it, so that the model nb2prod trains differs from the user's own
    Run All; [] when there is none."""
    last_train = max((cell.number for cell in cells if cell.role == "train"), default=0)
    uses = [
        use
        for cell in cells
        if cell.code.strip() and cell.number <= last_train
        for use in _uses(cell, imports)
    ]
    notices: list[str] = []
    for library in GENERATOR_NAMES:
        changed: list[_Use] = []  # by cells nb2prod does not run, since the last common seed
        for use in (u for u in uses if u.library == library):
            if use.cell.role not in TRAINING_ROLES:
                changed.append(use)
            elif use.seeds:
                changed = []  # runs in both sessions and resets the state they share
            elif changed and use.cell.role in MODEL_ROLES:
                notices.append(_notice(changed, use))
                break
    return notices


def _uses(cell: Cell, imports: Sequence[ImportBinding]) -> list[_Use]:
    """The cell's calls that seed or draw from a global generator, in source order."""
    tree = ast.parse(cell.code)
    resolve = call_resolver(tree, imports)
    nodes: list[ast.AST] = list(tree.body)
    if cell.role not in TRAINING_ROLES:
        # A function defined in a cell nb2prod does not run draws only when something calls
        # it, and calls through functions are not followed.
        nodes = [node for node in nodes if not isinstance(node, _DEFINITIONS)]
    found: list[_Use] = []
    for node in (inner for top in nodes for inner in ast.walk(top)):
        if isinstance(node, ast.Call):
            use = _classify(node, resolve, cell)
            if use is not None:
                found.append(use)
    return sorted(found, key=lambda use: use.line)


def _classify(call: ast.Call, resolve: Callable[[ast.expr], str | None], cell: Cell) -> _Use | None:
    """What ``call`` does to a global generator, if anything."""
    segment = ast.get_source_segment(cell.code, call.func) or ""
    shown = " ".join(segment.split()) + ("(...)" if call.args or call.keywords else "()")
    use = _Use(cell, call.lineno, "numpy.random", seeds=False, shown=shown)
    qualified = resolve(call.func)
    if qualified in _SEEDERS:
        return _Use(cell, call.lineno, _SEEDERS[qualified], seeds=True, shown=shown)
    if qualified is None:
        # `df.sample(` on a name or expression the cell has: pandas draws from numpy's.
        is_sample = isinstance(call.func, ast.Attribute) and call.func.attr == "sample"
        if is_sample and not _given(call, "random_state"):
            return replace(use, verb="samples with", keyword="random_state")
        return _scipy_rvs(call, resolve, use)
    module, _, name = qualified.rpartition(".")
    if module == "numpy.random" and name in NUMPY_DRAWS:
        return use
    if module == "random" and name in STDLIB_DRAWS:
        return replace(use, library="random")
    if module == "tensorflow.random" and name in TENSORFLOW_DRAWS:
        return replace(use, library="tensorflow.random")
    if module == "torch" and name in TORCH_DRAWS and not _given(call, "generator"):
        return replace(use, library="torch", keyword="generator")
    if qualified.startswith("scipy.stats.") and name == "rvs":
        return None if _given(call, "random_state") else replace(use, keyword="random_state")
    if qualified.split(".")[0] == "sklearn" and _sklearn_draws(name, call):
        splits = name == "train_test_split" or "Fold" in name or "Split" in name
        return replace(use, verb="splits with" if splits else "fits", keyword="random_state")
    return None


def _scipy_rvs(call: ast.Call, resolve: Callable[[ast.expr], str | None], use: _Use) -> _Use | None:
    """``stats.norm(0, 1).rvs(5)``: scipy draws from numpy's generator without random_state."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr != "rvs" or _given(call, "random_state"):
        return None
    root: ast.expr = func.value
    while isinstance(root, (ast.Attribute, ast.Call)):
        root = root.value if isinstance(root, ast.Attribute) else root.func
    module = resolve(root) or ""
    return replace(use, keyword="random_state") if module.startswith("scipy.stats") else None


def _sklearn_draws(name: str, call: ast.Call) -> bool:
    """Whether a scikit-learn call without random_state depends on the global generator."""
    if _given(call, "random_state"):
        return False
    if name == "train_test_split":
        return not _keyword_is(call, "shuffle", (False,))
    if name in SKLEARN_WHEN:
        keyword, values = SKLEARN_WHEN[name]
        return _keyword_is(call, keyword, values)
    return name in SKLEARN_ALWAYS or name.startswith(SKLEARN_FAMILIES)


def _given(call: ast.Call, keyword: str) -> bool:
    """Whether ``call`` passes ``keyword`` a value other than None (``**options`` may)."""
    return any(
        k.arg is None or (k.arg == keyword and not _keyword_is(call, keyword, (None,)))
        for k in call.keywords
    )


def _keyword_is(call: ast.Call, keyword: str, values: tuple[object, ...]) -> bool:
    """Whether ``call`` passes ``keyword`` one of the literal ``values``."""
    for k in call.keywords:
        if k.arg == keyword and isinstance(k.value, ast.Constant):
            return any(k.value.value is v or k.value.value == v for v in values)
    return False


def _notice(changed: list[_Use], use: _Use) -> str:
    """The one-line notice: which cells change the generator, which call depends on it, the fix."""
    numbers = list(dict.fromkeys(u.cell.number for u in changed))
    plural = len(numbers) > 1
    if all(u.seeds for u in changed):
        verb = "seed" if plural else "seeds"
    elif any(u.seeds for u in changed):
        verb = "seed or draw from" if plural else "seeds and draws from"
    else:
        verb = "draw from" if plural else "draws from"
    cells = f"cell{'s' if plural else ''} {', '.join(map(str, numbers))}"
    missing = f" without {use.keyword}" if use.keyword else ""
    consumer = f"cell {use.cell.number} [{use.cell.role}] (line {use.line})"
    fix = f"pass `{_fix_argument(use.keyword)}` to `{use.shown}`, or " if use.keyword else ""
    return (
        f"{cells} (not run by nb2prod) {verb} {GENERATOR_NAMES[use.library]} before training, "
        f"and {consumer} {use.verb} `{use.shown}`{missing}: the model nb2prod trains will "
        f"differ from your own Run All. To fix it, {fix}call `{SEED_CALLS[use.library]}` in a "
        f"`load` cell between cell {numbers[-1]} and cell {use.cell.number}."
    )


def _fix_argument(keyword: str | None) -> str:
    if keyword == "generator":
        return "generator=torch.Generator().manual_seed(42)"
    return f"{keyword}=42"
