"""The serving plan: how the service calls the notebook's code, as typed records.

nb2prod's build stage works out the plan from the notebook's cells (which step is a
function, which is a run of cells, what each reads); training completes it with what
only the finished namespace can tell (:class:`Bindings`: which name is the raw input,
which feeds predict). The plan travels as JSON, in the build directory's spec record and
in the model card's ``serving`` section (shape in docs/build-context.md), and this
module is the only reader and writer of that JSON. It lives in the runtime because the
runtime is vendored into every build directory and must read it without nb2prod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "Bindings",
    "CellsStep",
    "FrozenSite",
    "FunctionStep",
    "NoStep",
    "PlanError",
    "ServingPlan",
    "Step",
]

#: Bumped whenever the JSON shape changes; a plan with another version is refused.
SCHEMA_VERSION = 1
_REBUILD = "rebuild the build directory with this nb2prod (nb2prod generate or nb2prod build)"


class PlanError(ValueError):
    """Raised when serving-plan JSON is missing, from another nb2prod version or hand-edited."""


@dataclass(frozen=True)
class NoStep:
    """The notebook has no cell for this role (no preprocess: predict takes the raw rows)."""


@dataclass(frozen=True)
class FunctionStep:
    """Function style: the cells define ``preprocess``/``predict``/``monitor``; call it."""

    cells: tuple[int, ...]
    params: tuple[str, ...]  # the function's parameter names, in order
    code: str = ""  # the cells' definitions (left out of the model card)
    labels: tuple[str, ...] = ()  # how messages name the cells (left out of the model card)


@dataclass(frozen=True)
class CellsStep:
    """Script style: the cells' code, run as ``run_<role>_cells(**names it reads)``."""

    cells: tuple[int, ...]
    reads: tuple[str, ...]  # names bound in training that the cells read
    binds: tuple[str, ...]  # names the cells bind
    result: str | None  # the last name the cells assign (None: they end in an expression)
    ends_with_expression: bool
    code: str = ""  # the cells' code (left out of the model card)
    labels: tuple[str, ...] = ()  # how messages name the cells (left out of the model card)


Step = NoStep | FunctionStep | CellsStep


@dataclass(frozen=True)
class FrozenSite:
    """A fit or a statistic over the input rows in the serving code, recorded at training."""

    number: int  # the number the rewritten code passes to nb2prod_runtime.frozen
    cell: int
    line: int  # line within the cell, as the notebook shows it
    kind: str  # "fit" | "statistic" | "dummy columns" | "bins"
    expression: str  # the call as written (shortened)

    def describe(self) -> str:
        """``cell 27, line 3: train_df["Age"].mean()`` for messages and listings."""
        return f"cell {self.cell}, line {self.line}: {self.expression}"


@dataclass(frozen=True)
class Bindings:
    """What training found in the finished namespace: which names serving binds to what."""

    features: str  # predict's features: its parameter (function) or the name its cells read
    raw_input: str | None = None  # preprocess cells: the name they read the raw rows as
    preprocess_output: str | None = None  # preprocess cells: the name they bind for predict
    # When predict's features are some columns of that frame (a train cell dropped the
    # target): those columns, in order. Empty: the whole output.
    feature_columns: tuple[str, ...] = ()
    # Function-style predict: (parameter, key in model/state.pkl) for every other argument.
    predict_args: tuple[tuple[str, str], ...] = ()
    state: tuple[str, ...] = ()  # every name saved in model/state.pkl


@dataclass(frozen=True)
class ServingPlan:
    """The three serving steps, the module globals they read, and training's findings."""

    preprocess: Step
    predict: FunctionStep | CellsStep
    monitor: Step = field(default_factory=NoStep)
    # Function style: names the functions read as module globals, restored from state.pkl.
    globals: tuple[str, ...] = ()
    # How the notebook itself calls preprocess()/predict(): argument source per function.
    calls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    evaluate_binds: tuple[str, ...] = ()  # names the evaluate cells bind: metric candidates
    bindings: Bindings | None = None  # None until training completes the plan
    sites: tuple[FrozenSite, ...] = ()  # fits and statistics recorded at training, replayed
    # Unrecorded calls that may depend on the other rows: where a skew message points.
    suspects: tuple[FrozenSite, ...] = ()

    def to_json(self, *, source: bool = True) -> dict[str, Any]:
        """The JSON form; ``source=False`` leaves out the notebook's code (for the model card)."""
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "preprocess": _step_json(self.preprocess, source),
            "predict": _step_json(self.predict, source),
            "monitor": _step_json(self.monitor, source),
            "globals": list(self.globals),
            "evaluate_binds": list(self.evaluate_binds),
            "bindings": None if self.bindings is None else _bindings_json(self.bindings),
            "sites": [_site_json(s) for s in self.sites],
            "suspects": [_site_json(s) for s in self.suspects],
        }
        if source:
            data["calls"] = {name: list(args) for name, args in self.calls.items()}
        return data

    @classmethod
    def from_json(cls, data: object) -> ServingPlan:
        """Read :meth:`to_json`'s output back; :class:`PlanError` says what is wrong with it."""
        record = _mapping(data, "the serving plan")
        version = record.get("schema_version")
        if version != SCHEMA_VERSION:
            written = "an older nb2prod" if version is None else f"plan version {version!r}"
            raise PlanError(
                f"the serving plan was written by {written}; this runtime reads plan version "
                f"{SCHEMA_VERSION}: {_REBUILD}"
            )
        predict = _step(record.get("predict"), "predict")
        if isinstance(predict, NoStep):
            raise PlanError(f"the serving plan has no predict step: {_REBUILD}")
        calls = _mapping(record.get("calls", {}), "serving plan `calls`")
        bindings = record.get("bindings")
        return cls(
            preprocess=_step(record.get("preprocess"), "preprocess"),
            predict=predict,
            monitor=_step(record.get("monitor", {"kind": "none"}), "monitor"),
            globals=_strings(record, "globals", "the serving plan"),
            calls={str(name): _strings(calls, name, "`calls`") for name in calls},
            evaluate_binds=_strings(record, "evaluate_binds", "the serving plan"),
            bindings=None if bindings is None else _bindings(bindings),
            sites=_sites(record.get("sites", [])),
            suspects=_sites(record.get("suspects", [])),
        )


def _step_json(step: Step, source: bool) -> dict[str, Any]:
    if isinstance(step, FunctionStep):
        data: dict[str, Any] = {
            "kind": "function",
            "cells": list(step.cells),
            "params": list(step.params),
        }
    elif isinstance(step, CellsStep):
        data = {
            "kind": "cells",
            "cells": list(step.cells),
            "reads": list(step.reads),
            "binds": list(step.binds),
            "result": step.result,
            "ends_with_expression": step.ends_with_expression,
        }
    else:
        return {"kind": "none"}
    if source:
        data.update(labels=list(step.labels), code=step.code)
    return data


def _step(data: object, role: str) -> Step:
    where = f"the serving plan's {role} step"
    record = _mapping(data, where)
    kind = record.get("kind")
    if kind == "none":
        return NoStep()
    if kind not in ("function", "cells"):
        raise PlanError(f"{where} has kind {kind!r}, not function, cells or none: {_REBUILD}")
    cells = _ints(record, "cells", where)
    code = _text(record, "code", where, default="")
    labels = _strings(record, "labels", where, required=False)
    if kind == "function":
        params = _strings(record, "params", where)
        return FunctionStep(cells=cells, params=params, code=code, labels=labels)
    ends = record.get("ends_with_expression")
    if not isinstance(ends, bool):
        raise PlanError(f"{where} needs `ends_with_expression` as true or false: {_REBUILD}")
    return CellsStep(
        cells=cells,
        reads=_strings(record, "reads", where),
        binds=_strings(record, "binds", where),
        result=_optional_text(record, "result", where),
        ends_with_expression=ends,
        code=code,
        labels=labels,
    )


def _bindings_json(bindings: Bindings) -> dict[str, Any]:
    return {
        "raw_input": bindings.raw_input,
        "features": bindings.features,
        "preprocess_output": bindings.preprocess_output,
        "feature_columns": list(bindings.feature_columns),
        "predict_args": dict(bindings.predict_args),
        "state": list(bindings.state),
    }


def _bindings(data: object) -> Bindings:
    where = "the serving plan's bindings"
    record = _mapping(data, where)
    features = _optional_text(record, "features", where)
    if features is None:
        raise PlanError(f"{where} name no features: {_REBUILD}")
    args = _mapping(record.get("predict_args", {}), f"{where}' predict_args")
    return Bindings(
        features=features,
        raw_input=_optional_text(record, "raw_input", where),
        preprocess_output=_optional_text(record, "preprocess_output", where),
        feature_columns=_strings(record, "feature_columns", where, required=False),
        predict_args=tuple((str(k), _text(args, k, f"{where}' predict_args")) for k in args),
        state=_strings(record, "state", where),
    )


def _site_json(site: FrozenSite) -> dict[str, Any]:
    return {
        "number": site.number,
        "cell": site.cell,
        "line": site.line,
        "kind": site.kind,
        "expression": site.expression,
    }


def _sites(data: object) -> tuple[FrozenSite, ...]:
    where = "the serving plan's sites"
    if not isinstance(data, list):
        raise PlanError(f"{where} should be a list: {_REBUILD}")
    sites = []
    for item in data:
        record = _mapping(item, where)
        numbers = [record.get(key) for key in ("number", "cell", "line")]
        if not all(type(n) is int for n in numbers):
            raise PlanError(f"{where} need `number`, `cell` and `line` as integers: {_REBUILD}")
        sites.append(
            FrozenSite(
                number=int(record["number"]),
                cell=int(record["cell"]),
                line=int(record["line"]),
                kind=_text(record, "kind", where),
                expression=_text(record, "expression", where),
            )
        )
    return tuple(sites)


def _mapping(data: object, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise PlanError(f"{where} is {type(data).__name__}, not a JSON object: {_REBUILD}")
    return data


def _strings(
    record: Mapping[str, Any], key: str, where: str, *, required: bool = True
) -> tuple[str, ...]:
    value = record.get(key, None if required else [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError(f"{where} needs `{key}` as a list of names: {_REBUILD}")
    return tuple(value)


def _ints(record: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = record.get(key)
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise PlanError(f"{where} needs `{key}` as a list of cell numbers: {_REBUILD}")
    return tuple(value)


def _text(record: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = record.get(key, default)
    if not isinstance(value, str):
        raise PlanError(f"{where} needs `{key}` as a string: {_REBUILD}")
    return value


def _optional_text(record: Mapping[str, Any], key: str, where: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise PlanError(f"{where} needs `{key}` as a name or null: {_REBUILD}")
    return value
