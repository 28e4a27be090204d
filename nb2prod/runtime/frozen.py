"""Record fits and row statistics at training; replay them at serving.

A notebook's preprocessing is written for a whole dataset: ``df["Age"].fillna(df["Age"].mean())``,
``LabelEncoder().fit_transform(df[col])`` in a loop, ``pd.get_dummies(df)``. Run on the rows of
one request, the same lines would take the mean of one row, fit a new encoder on it, or make
other dummy columns. nb2prod's build rewrites each such *site* in the serving code (the
preprocess and predict cells) into a call of this module, numbered in notebook order:

- ``stat(n, lambda: RECEIVER, "mean", ...)`` and ``call_stat(n, np.mean, x, ...)``: a reduction
  along rows;
- ``fit(n, RECEIVER, "fit_transform", X, ...)``: a fit;
- ``dummies(n, pd.get_dummies, ...)`` and ``bins(n, pd.cut, ...)``: data-dependent columns/bins.

During the training run (:func:`start_recording`) every site runs as written and its value
(the statistic, a copy of the fitted object, the dummy columns, the bin edges) is recorded by
site and occurrence, so a loop over columns records one encoder per column in order. At serving
(:func:`replaying`) the k-th run of site n in a request gets the k-th recorded value: a
statistic is a constant, ``.fit_transform(X)`` becomes ``.transform(X)`` on the recorded
object, ``.fit(X)`` returns it. This is TensorFlow Transform's analyzer idea applied to plain
pandas and scikit-learn code.

A site whose receiver holds no rows (``name.count(" ")`` on a string) or that runs inside a
per-element callback (``df.apply(f)``) is not a statistic over the input rows: it is marked
*live* and always runs as written. Outside a replay (importing ``model_code`` and calling it by
hand) every site runs as written.

One module for every kind of site (about 450 lines): they share the recorder, the replay
cursor and the liveness rules, and the generated code imports just this one.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

__all__ = [
    "Recording",
    "ReplayError",
    "bins",
    "call_stat",
    "dummies",
    "fit",
    "first_argument",
    "group_stat",
    "replaying",
    "role_run",
    "split",
    "start_recording",
    "stat",
    "stop_recording",
    "target",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Libraries whose objects hold rows: a reduction on them is a statistic over the input.
_ROW_MODULES = frozenset({"pandas", "numpy"})
#: ...except these pandas objects, whose reductions are per row (windows, string accessors).
_ROW_WISE_MODULES = ("pandas.core.window", "pandas.core.strings", "pandas.core.resample")
#: Library functions that call a notebook function once on the whole frame, not per element.
_PASS_THROUGH = frozenset({"pipe"})


class ReplayError(RuntimeError):
    """Raised when serving runs a site more often than the training run did."""


@dataclass
class Recording:
    """What the training run recorded: values per site, in the order the site ran."""

    values: dict[int, list[Any]] = field(default_factory=dict)
    live: set[int] = field(default_factory=set)  # sites that are not statistics over rows

    def to_state(self) -> dict[str, Any]:
        """Plain data for model/state.pkl (no nb2prod class, so it loads under any import name)."""
        return {"values": self.values, "live": sorted(self.live)}

    @classmethod
    def from_state(cls, data: Any) -> Recording:
        """Read :meth:`to_state`'s output back (an empty recording for none)."""
        if not isinstance(data, dict):
            return cls()
        return cls(values=dict(data.get("values") or {}), live=set(data.get("live") or ()))

    def describe(self, site: int) -> tuple[int, str]:
        """How often ``site`` ran in training and a short rendering of its values.

        Aggregates only (a number, a count of levels, an object's type): the rendering goes
        into the model card, and training rows must never.
        """
        values = self.values.get(site, [])
        shown = ", ".join(_render(v) for v in values[:3]) + (", ..." if len(values) > 3 else "")
        return len(values), shown


def _render(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if (
        isinstance(value, (int, float))
        or type(value).__module__ == "numpy"
        and not hasattr(value, "shape")
    ):
        try:
            return f"{float(value):.4g}"
        except (TypeError, ValueError):
            return type(value).__name__
    if isinstance(value, dict):  # dummy columns
        return f"{len(value)} columns"
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        if len(shape) == 1 and shape[0] == 1 and str(getattr(value, "dtype", "")) != "object":
            return _render(value.tolist()[0]) if hasattr(value, "tolist") else "1 value"
        size = shape[0] if shape else 1
        return f"{type(value).__name__} of {size} values"
    if isinstance(value, str):
        return "a text value"
    return f"fitted {type(value).__name__}"


class _Run:
    """One serving run of the notebook's code: the recording and each site's count so far."""

    __slots__ = ("recording", "seen")

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.seen: dict[int, int] = {}

    def next_value(self, site: int) -> Any:
        values = self.recording.values[site]
        index = self.seen.get(site, 0)
        if index >= len(values):
            raise ReplayError(
                f"site {site} ran {index + 1} times for these rows, but only {len(values)} times "
                "in training; its value for this run was never recorded"
            )
        self.seen[site] = index + 1
        return values[index]


class _Recorder:
    """The training run's recording; one trace per run of a role function, one for cells."""

    def __init__(self) -> None:
        self.cells: dict[int, list[Any]] = {}
        self.runs: dict[str, list[dict[int, list[Any]]]] = {}
        self.stack: list[dict[int, list[Any]]] = []
        self.live: set[int] = set()
        self.first_arguments: dict[str, Any] = {}
        # What each call of preprocess() returned and what predict() was given (kept alive,
        # so identity tells which preprocess call made the features the notebook predicted).
        self.outputs: dict[str, list[Any]] = {}
        self.predicted: list[Any] = []
        # The stack that started the recording (train.py's module level): the walk up from a
        # site stops there.
        self.base: list[Any] = []
        frame = sys._getframe(2)
        while frame is not None:
            self.base.append(frame)
            frame = frame.f_back

    def note(self, site: int, value: Any) -> None:
        trace = self.stack[-1] if self.stack else self.cells
        trace.setdefault(site, []).append(value)

    def recording(self) -> Recording:
        """Cells' sites as they ran; each role function's sites from one of its calls.

        That call is the one whose result the notebook's own ``predict()`` was given (its
        predictions are what serving must reproduce), else the first (the training data).
        """
        values = {site: list(v) for site, v in self.cells.items()}
        for role, runs in self.runs.items():
            for site, seen in runs[self._replayed_run(role)].items():
                values.setdefault(site, list(seen))
        live = set(self.live)
        return Recording(values={s: v for s, v in values.items() if s not in live}, live=live)

    def _replayed_run(self, role: str) -> int:
        outputs = self.outputs.get(role, [])
        for given in reversed(self.predicted):
            for index, output in enumerate(outputs):
                if output is given:
                    return index
        return 0


_RECORDER: _Recorder | None = None
_ACTIVE: ContextVar[_Run | None] = ContextVar("nb2prod_frozen_run", default=None)


def start_recording() -> None:
    """Record every site from now on (train.py calls it before the notebook's cells)."""
    global _RECORDER
    _RECORDER = _Recorder()


def stop_recording() -> tuple[Recording, dict[str, Any]]:
    """Stop recording; return the recording and each role function's first argument."""
    global _RECORDER
    recorder, _RECORDER = _RECORDER, None
    if recorder is None:
        return Recording(), {}
    return recorder.recording(), dict(recorder.first_arguments)


def first_argument(role: str) -> Any:
    """While recording: the first argument of the first call of role function ``role``."""
    return None if _RECORDER is None else _RECORDER.first_arguments.get(role)


@contextmanager
def replaying(recording: Recording) -> Iterator[None]:
    """Within the block, every site replays ``recording`` (one serving run)."""
    token = _ACTIVE.set(_Run(recording))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def role_run(role: str) -> Callable[[F], F]:
    """Decorator for a notebook's ``preprocess``/``predict`` function: each call is one run.

    While recording, each outermost call gets its own trace; the trace replayed is that of the
    call whose result the notebook passed to ``predict()``, else the first call's (the
    training data). Outside a recording the function is returned unchanged, so serving pays
    nothing.
    """

    def decorate(function: F) -> F:
        if _RECORDER is None:
            return function

        @wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            recorder = _RECORDER
            if recorder is None or _ACTIVE.get() is not None:
                return function(*args, **kwargs)
            trace: dict[int, list[Any]] = {}
            recorder.runs.setdefault(role, []).append(trace)
            if args and role not in recorder.first_arguments:
                recorder.first_arguments[role] = _snapshot(args[0])
            if role == "predict" and args:
                recorder.predicted.append(args[-1])
            recorder.stack.append(trace)
            try:
                result = function(*args, **kwargs)
            finally:
                recorder.stack.pop()
            recorder.outputs.setdefault(role, []).append(result)
            return result

        return run  # type: ignore[return-value]

    return decorate


def stat(site: int, receiver: Callable[[], Any], method: str, *args: Any, **kwargs: Any) -> Any:
    """``receiver().method(*args, **kwargs)``: a reduction along rows, recorded or replayed."""
    run = _ACTIVE.get()
    if run is not None and site not in run.recording.live and site in run.recording.values:
        return run.next_value(site)
    obj = receiver()
    value = getattr(obj, method)(*args, **kwargs)
    if _RECORDER is not None and run is None:
        if method == "apply" and not _per_column(obj, value):
            _RECORDER.live.add(site)  # per element or per row: not a statistic over rows
        else:
            _record_stat(site, obj, value)
    return value


def _per_column(obj: Any, value: Any) -> bool:
    """``df.apply(f)`` reduced each column to one value (a Series indexed by the columns)."""
    columns = getattr(obj, "columns", None)
    index = getattr(value, "index", None)
    if columns is None or index is None or getattr(value, "ndim", 0) != 1:
        return False
    return len(index) == len(columns) and bool((index == columns).all())


def call_stat(site: int, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` such as ``np.mean(x)``: recorded or replayed."""
    run = _ACTIVE.get()
    if run is not None and site not in run.recording.live and site in run.recording.values:
        return run.next_value(site)
    value = function(*args, **kwargs)
    if _RECORDER is not None and run is None:
        _record_stat(site, args[0] if args else None, value)
    return value


def _record_stat(site: int, obj: Any, value: Any) -> None:
    recorder = _RECORDER
    assert recorder is not None
    if site in recorder.live:
        return
    if not _holds_rows(obj) or _called_back():
        recorder.live.add(site)
        return
    recorder.note(site, value)


def fit(site: int, receiver: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """``receiver.method(*args, **kwargs)`` for a fit method: fit and record, or replay.

    Replaying, the receiver takes the recorded fitted state (a fresh ``LabelEncoder()`` in a
    loop becomes the encoder fitted for that column), then ``fit`` returns it,
    ``fit_transform`` transforms, ``fit_predict`` predicts and ``fit_resample`` returns its
    input unchanged: serving never fits.
    """
    run = _ACTIVE.get()
    if run is None or site not in run.recording.values:
        result = getattr(receiver, method)(*args, **kwargs)
        if _RECORDER is not None and run is None:
            _RECORDER.note(site, _snapshot(receiver))
        return result
    fitted = _adopt(receiver, run.next_value(site))
    if method in ("fit", "partial_fit"):
        return fitted
    if method == "fit_resample":
        return tuple(args[:2])
    data = args[0] if args else kwargs.get("X", kwargs.get("x"))
    if method == "fit_predict":
        return fitted.predict(data)
    return fitted.transform(data)


def target(site: int, value: Callable[[], Any]) -> Any:
    """A ``label=`` argument: the training target as written, ``None`` at serving.

    A request has no target; code like ``xgb.DMatrix(X_test, label=y_test)`` would otherwise
    fail on the length of ``y_test``, which belongs to the training run.
    """
    run = _ACTIVE.get()
    if run is not None:
        return None
    result = value()
    if _RECORDER is not None:
        _RECORDER.note(site, None)
    return result


def group_stat(site: int, grouped: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """``df.groupby(key)[col].transform("median")``: each row gets its group's training value.

    Recorded as the table of values per group; replayed by looking up each request row's group
    (a group training never saw gets a missing value, as an unseen level would).
    """
    run = _ACTIVE.get()
    if run is None or site not in run.recording.values:
        result = grouped.transform(name, *args, **kwargs)
        if _RECORDER is not None and run is None:
            if "GroupBy" in type(grouped).__name__:
                _RECORDER.note(site, grouped.agg(name, *args, **kwargs))
            else:
                _RECORDER.live.add(site)
        return result
    table = run.next_value(site)
    return grouped.transform(lambda group: table.get(group.name, float("nan")))


def split(site: int, function: Callable[..., Any], *arrays: Any, **kwargs: Any) -> Any:
    """``train_test_split(X, y, ...)``: as written in training; at serving every part is the
    request's rows (``X, X, y, y``), so whichever part predict reads holds all of them."""
    run = _ACTIVE.get()
    if run is None:
        if _RECORDER is not None:
            _RECORDER.note(site, None)
        return function(*arrays, **kwargs)
    return [part for array in arrays for part in (array, array)]


def dummies(site: int, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``pd.get_dummies(...)`` with the training run's columns (missing ones filled with 0).

    Replayed, ``drop_first`` is not applied to the request's rows (one row would lose its only
    level); the reindex to the training columns drops what training dropped.
    """
    run = _ACTIVE.get()
    replay = run is not None and site in run.recording.values
    if replay and kwargs.get("drop_first"):
        kwargs = {**kwargs, "drop_first": False}
    result = function(*args, **kwargs)
    if run is None or not replay:
        if _RECORDER is not None and run is None and hasattr(result, "columns"):
            _RECORDER.note(site, dict(result.dtypes.items()))
        return result
    dtypes: dict[Any, Any] = run.next_value(site)
    if not hasattr(result, "reindex") or list(result.columns) == list(dtypes):
        return result
    added = [c for c in dtypes if c not in result.columns]
    result = result.reindex(columns=list(dtypes), fill_value=0)
    for column in added:
        result[column] = result[column].astype(dtypes[column])
    return result


def bins(site: int, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``pd.cut(x, 5)``/``pd.qcut(x, 4)`` with the training run's bin edges.

    Replayed, values beyond the recorded range fall in the first or last bin (as "below the
    first quartile" means), instead of becoming missing. ``pd.cut`` with explicit edges does
    not depend on the data and runs as written.
    """
    run = _ACTIVE.get()
    call = inspect.signature(function).bind(*args, **kwargs)
    options = dict(call.arguments)
    qcut = function.__name__ == "qcut"
    if run is None or site not in run.recording.values:
        data_edges = qcut or isinstance(options.get("bins"), int)
        if _RECORDER is None or run is not None or not data_edges:
            if _RECORDER is not None and run is None:
                _RECORDER.live.add(site)
            return function(*args, **kwargs)
        wanted_edges = bool(options.get("retbins", False))
        options["retbins"] = True
        result, edges = function(**options)
        _RECORDER.note(site, edges)
        return (result, edges) if wanted_edges else result
    edges = run.next_value(site)
    options.pop("q", None)
    options["bins"] = edges
    options["x"] = _clip(options["x"], edges[0], edges[-1])
    if qcut:
        options["include_lowest"] = True
    # cut and qcut live side by side (pandas.core.reshape.tile); replay is a cut on the edges
    cut: Callable[..., Any] = sys.modules[function.__module__].cut
    return cut(**options)


def _clip(values: Any, low: Any, high: Any) -> Any:
    clip = getattr(values, "clip", None)
    if clip is None:
        return values
    try:
        return clip(low, high)
    except TypeError:  # not numbers: let cut say what is wrong, as the notebook would
        return values


def _adopt(receiver: Any, fitted: Any) -> Any:
    """The receiver with the recorded fitted state, or the recorded object itself."""
    if receiver is fitted:
        return receiver
    state = getattr(fitted, "__dict__", None)
    if type(receiver) is type(fitted) and state is not None and hasattr(receiver, "__dict__"):
        receiver.__dict__.update(state)
        return receiver
    return fitted


def _snapshot(value: Any) -> Any:
    """A copy that later refits of the same object cannot change."""
    try:
        return copy.deepcopy(value)
    except Exception:  # objects that refuse copying (locks, handles): keep the object itself
        return value


def _holds_rows(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    if module.startswith(_ROW_WISE_MODULES):
        return False
    if module.partition(".")[0] not in _ROW_MODULES:
        return False
    return getattr(obj, "ndim", 1) != 0


def _called_back() -> bool:
    """True when notebook code runs inside a library callback (``apply``, ``map``): per element.

    Walks from the notebook code that reached this module up to the stack that started the
    recording (train.py's module level); a library frame on the way (other than pass-through
    calls like ``DataFrame.pipe``) means the site runs per element or per row, not over the
    input rows.
    """
    recorder = _RECORDER
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    if frame is None or recorder is None:
        return False
    home = frame.f_code.co_filename
    while frame is not None:
        if any(frame is base for base in recorder.base):
            return False
        code = frame.f_code
        if code.co_filename not in (home, __file__) and code.co_name not in _PASS_THROUGH:
            return True
        frame = frame.f_back
    return False
