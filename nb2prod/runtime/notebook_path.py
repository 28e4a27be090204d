"""The notebook's own serving code, run in the finished training namespace.

``NotebookPath`` works out from the trained namespace what serving needs (which frame is
the raw input, which preprocess output feeds predict, which object is ``model``) and
computes predictions the way the notebook itself does: by running its cells or calling
its functions there. It is deliberately not the serving runtime: the golden predictions
come from this path, and the service must reproduce them.

About 430 lines: working out the bindings and running the cells share the namespace and the
raw inputs; the column probe lives in probes.py and the skew guard in skew.py.
"""

from __future__ import annotations

import ast
import traceback
from dataclasses import asdict, replace
from typing import Any

import pandas as pd

from . import frozen
from .frozen import Recording
from .plan import Bindings, CellsStep, FunctionStep, NoStep, ServingPlan
from .probes import probe_same
from .raw_inputs import RawInput, bind, choose_raw_inputs, typical_row, typical_value
from .schema import predictions_to_list

#: Keys of model/state.pkl that are nb2prod's, not the notebook's (never identifiers).
RECORDING_KEY = "nb2prod.recording"
RAW_INPUTS_KEY = "nb2prod.raw_inputs"

_CELL_CODE: dict[str, str] = {}  # exec'd cell code by filename, for error messages


class ContractError(Exception):
    """Raised when the trained namespace cannot be served as the notebook describes."""


class NotebookPath:
    """Runs the notebook's own serving code in the training namespace.

    This is deliberately not the serving runtime: the golden predictions come
    from the cells as the notebook runs them, and serving must reproduce them.
    """

    def __init__(
        self,
        ns: dict[str, Any],
        plan: ServingPlan,
        recording: Recording | None = None,
        snapshots: dict[str, Any] | None = None,
        first_arguments: dict[str, Any] | None = None,
    ) -> None:
        self.ns = ns
        self.plan = plan
        self.recording = recording or Recording()
        # The serving cells' inputs as they were before the first serving cell ran.
        self.snapshots = snapshots or {}
        self.first_arguments = first_arguments or {}
        self.raw_inputs: list[RawInput] = []
        self.feature_columns: tuple[str, ...] = ()  # predict's columns of the output frame
        self.pre = plan.preprocess
        self.pred = plan.predict
        self.raw_name: str | None = None
        self.features_name: str | None = None  # predict's input name
        self.output_name: str | None = None  # preprocess's output that feeds it
        self.args: dict[str, Any] = {}  # function-style predict: param -> object
        self._resolve()

    # -- working out the plan from the namespace -------------------------------------
    def _resolve(self) -> None:
        if isinstance(self.pred, FunctionStep):
            params = self.pred.params
            if not params:
                raise ContractError("`predict` must take the features as its last argument")
            self.features_name = params[-1]
            call = self.plan.calls.get("predict", ())
            for index, param in enumerate(params[:-1]):
                self.args[param] = self._argument(param, call, index)
        else:
            self.features_name = self._features_of_cells(self.pred)
        self.raw_frame = self._raw_frame()

    def _raw_frame(self) -> pd.DataFrame:
        """The raw training input: what preprocess (or predict, without one) first read."""
        if isinstance(self.pre, FunctionStep):
            first = self.first_arguments.get("preprocess")
            if first is not None:
                return self._raw("", first, "preprocess()'s argument")
            call = self.plan.calls.get("preprocess")
            if not call:
                raise ContractError(
                    "can't tell which DataFrame is the raw input: the notebook never calls "
                    "`preprocess(...)`. Call it on the raw frame in a train or evaluate cell, "
                    "e.g. `model.fit(preprocess(X_train), y_train)`"
                )
            return self._raw("", self._data_root(call[0]), f"preprocess({call[0]})")
        if isinstance(self.pre, CellsStep):
            self.output_name = self._output_of_cells(self.pre)
            return self._raw_of_cells(self.pre)
        if isinstance(self.pred, FunctionStep):
            call = self.plan.calls.get("predict", ())
            if len(call) < len(self.pred.params):
                raise ContractError(
                    "can't tell which DataFrame is the raw input: the notebook never calls "
                    "`predict(model, features)`. Call it once on the input frame, e.g. "
                    "`predict(model, X_test)`"
                )
            return self._raw("", self._data_root(call[-1]), call[-1])
        name = self.features_name
        assert name is not None
        self.raw_name = name
        value = self.snapshots[name] if name in self.snapshots else self._eval(name)
        return self._raw(name, value, name)

    def _raw(self, name: str, value: Any, what: str) -> pd.DataFrame:
        """One raw input ``value`` bound as ``name`` ("" for a function's argument)."""
        if isinstance(value, pd.Series):
            value = value.to_frame()
        chosen = choose_raw_inputs({name: value})
        if chosen is None:
            raise ContractError(
                f"the raw input `{what}` is a {type(value).__name__}, not a pandas DataFrame or "
                "a 2-D NumPy array; serving takes rows of columns, so make the raw input a "
                "DataFrame (e.g. load_iris(as_frame=True))"
            )
        self.raw_inputs, frame = chosen
        if frame.empty:
            raise ContractError(f"the raw input `{what}` is empty after training")
        return frame

    def _argument(self, param: str, call: tuple[str, ...], index: int) -> Any:
        if index < len(call) and call[index]:
            return self._eval(call[index])
        if param in self.ns:
            return self.ns[param]
        raise ContractError(
            f"can't tell which object `predict`'s argument `{param}` is: the notebook never "
            f"calls `predict(...)` and no variable is named `{param}`. Call "
            "`predict(model, features)` once in the notebook, or name the parameter after "
            "the variable"
        )

    def _data_root(self, source: str) -> Any:
        """The frame an argument like ``X_test.head()`` or ``df[cols]`` was taken from.

        The notebook often calls preprocess/predict on a few rows for show; the raw
        training input (schema, fingerprint, golden rows) is the frame they came from.
        """
        value = self._eval(source)
        node = ast.parse(source, mode="eval").body
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
            node = node.func if isinstance(node, ast.Call) else node.value
        root = self.ns.get(node.id) if isinstance(node, ast.Name) else None
        if (
            isinstance(root, pd.DataFrame)
            and isinstance(value, pd.DataFrame)
            and list(root.columns) == list(value.columns)
        ):
            return root
        return value

    def _eval(self, source: str) -> Any:
        try:
            return eval(compile(source, "<notebook>", "eval"), dict(self.ns))  # noqa: S307
        except Exception as err:
            raise ContractError(f"evaluating `{source}` after training failed: {err!r}") from err

    def _raw_of_cells(self, pre: CellsStep) -> pd.DataFrame:
        """The frames the preprocess cells read as raw input, as they were before they ran."""
        values = {
            n: self.snapshots[n] if n in self.snapshots else self.ns.get(n) for n in pre.reads
        }
        chosen = choose_raw_inputs(values, self.ns.get(self.output_name or ""))
        if chosen is None:
            raise ContractError(
                f"the preprocess cell(s) {list(pre.cells)} read no DataFrame (or 2-D NumPy "
                "array) bound before them, so there is no raw input to serve. Read the raw rows "
                "from a DataFrame variable (e.g. `features = raw[COLUMNS]`)"
            )
        self.raw_inputs, frame = chosen
        self.raw_name = max(
            (r.name for r in self.raw_inputs if r.kind != "list"),
            key=lambda n: len(values[n]),
        )
        if frame.empty:
            raise ContractError(f"the raw input `{self.raw_name}` is empty after training")
        return frame

    def _features_of_cells(self, pred: CellsStep) -> str:
        reads = pred.reads
        binds = self.pre.binds if isinstance(self.pre, CellsStep) else ()
        # A fitted pipeline the preprocess cells bind is state the predict cell applies, not
        # its features (``full_pipeline.transform(X_test)``).
        from_pre = [n for n in reads if n in binds and not _is_estimator(self.ns.get(n))]
        if len(from_pre) == 1:
            return from_pre[0]
        data = [n for n in reads if _is_data(self.ns.get(n))]
        if len(data) == 1:
            return data[0]
        names = ", ".join(data or reads) or "nothing"
        raise ContractError(
            f"can't tell which input of the predict cell(s) {list(pred.cells)} are the "
            f"features (candidates: {names}). Make the predict cell read one features "
            "variable produced by preprocess"
        )

    def _output_of_cells(self, pre: CellsStep) -> str:
        """Which preprocess output feeds predict's features."""
        name = self.features_name
        assert name is not None
        binds = pre.binds
        if isinstance(self.pred, CellsStep) and name in binds:
            return name
        if isinstance(self.pred, FunctionStep):
            call = self.plan.calls.get("predict", ())
            if len(call) == len(self.pred.params) and call[-1] in binds:
                return call[-1]
            target = self._eval(call[-1]) if call else None
        else:
            target = self.ns.get(name)
        matches = [n for n in binds if _same_layout(self.ns.get(n), target)]
        if len(matches) == 1:
            return matches[0]
        wider = self._wider_outputs((*binds, *pre.reads), target)
        if wider:
            # The train cell took the features as some columns of this frame (it dropped the
            # target): serving takes the same columns, in the same order.
            self.feature_columns = tuple(str(c) for c in target.columns)
            return wider[0]
        raise ContractError(
            f"the predict cell reads `{name}`, and nb2prod can't tell which of the "
            f"preprocess outputs ({', '.join(binds)}) it is. Make the predict cell read the "
            "preprocess output by name"
        )

    def _wider_outputs(self, names: tuple[str, ...], target: Any) -> list[str]:
        """Frames holding every column of ``target`` (fewest other columns first)."""
        if not isinstance(target, pd.DataFrame) or not all(
            isinstance(c, str) for c in target.columns
        ):
            return []
        wanted = set(target.columns)
        frames = {
            n: v
            for n in dict.fromkeys(names)
            if isinstance(v := self.ns.get(n), pd.DataFrame) and wanted <= set(v.columns)
        }
        return sorted(frames, key=lambda n: len(frames[n].columns))

    # -- running the notebook's code ------------------------------------------------
    def predict_rows(self, frame: pd.DataFrame, what: str) -> list[Any]:
        """The notebook's predictions for ``frame`` (raw rows), as JSON values."""
        step = "preprocess"
        try:
            with frozen.replaying(self.recording):
                features = self._preprocess(frame)
                step = "predict"
                result = self._predict(features)
        except ContractError:
            raise
        except Exception as err:
            raise self._step_failed(step, err, what) from err
        return predictions_to_list(result)

    def preprocess_rows(self, frame: pd.DataFrame, what: str) -> Any:
        """The notebook's preprocess output for raw rows ``frame``; ContractError if it fails."""
        try:
            return self.features(frame)
        except ContractError:
            raise
        except Exception as err:
            raise self._step_failed("preprocess", err, what) from err

    def _step_failed(self, step: str, err: Exception, what: str) -> ContractError:
        """The error naming the step's cells and failing line, as build and check --run say it."""
        failed = self.pre if step == "preprocess" else self.pred
        cells = "" if isinstance(failed, NoStep) else f"cells {list(failed.cells)}"
        labels = " and ".join(() if isinstance(failed, NoStep) else failed.labels) or cells
        raw = self.raw_name or (self.plan.calls.get("preprocess") or ("?",))[0]
        line = _failing_line(err)
        return ContractError(
            f"the {step} step, {labels}, fails on {what} of the raw input `{raw}`"
            + (f" at `{line}`" if line else "")
            + f": {type(err).__name__}: {_first_line(err)}. Serving runs it on request rows "
            "like these"
        )

    def features(self, frame: pd.DataFrame) -> Any:
        """The notebook's preprocess output for raw rows ``frame``."""
        with frozen.replaying(self.recording):
            return self._preprocess(frame)

    def _bound(self, frame: pd.DataFrame) -> dict[str, Any]:
        return bind(self.raw_inputs, frame.copy())

    def _preprocess(self, frame: pd.DataFrame) -> Any:
        match self.pre:
            case FunctionStep():
                return self.ns["preprocess"](self._bound(frame).get("", frame))
            case CellsStep(code=code):
                assert self.raw_name is not None
                scope = dict(self.ns)
                scope.update(self._bound(frame))
                _CELL_CODE["<preprocess cells>"] = code
                exec(compile(code, "<preprocess cells>", "exec"), scope)  # noqa: S102
                output = scope[self.output_name] if self.output_name else frame
                return output[list(self.feature_columns)] if self.feature_columns else output
            case _:
                bound = self._bound(frame)
                return bound.get(self.raw_name or "", bound.get("", frame))

    def _predict(self, features: Any) -> Any:
        assert self.features_name is not None
        if isinstance(self.pred, FunctionStep):
            return self.ns["predict"](**self.args, **{self.features_name: features})
        scope = dict(self.ns)
        scope[self.features_name] = features
        code = self.pred.code
        tree = ast.parse(code)
        if self.pred.ends_with_expression:
            last = tree.body[-1]
            assert isinstance(last, ast.Expr)
            tree.body[-1] = ast.Assign(
                targets=[ast.Name(id="__nb2prod_result__", ctx=ast.Store())], value=last.value
            )
            ast.fix_missing_locations(tree)
            result_name = "__nb2prod_result__"
        else:
            assert self.pred.result is not None  # build/plan.py refuses a predict without one
            result_name = self.pred.result
        _CELL_CODE["<predict cells>"] = code
        exec(compile(tree, "<predict cells>", "exec"), scope)  # noqa: S102
        return scope[result_name]

    def settle_raw_inputs(self, frame: pd.DataFrame, expected: list[Any]) -> list[str]:
        """Give each raw frame whose rows never reach predict one typical training row.

        Probed on the golden rows: a frame keeps the request's rows only if giving it a typical
        row instead changes a prediction. Returns the frames that now get the typical row.
        """
        frames = [r for r in self.raw_inputs if r.kind == "frame"]
        if len(frames) < 2:
            return []
        settled: list[str] = []
        for raw in frames:
            snapshot = self.snapshots.get(raw.name)
            if not isinstance(snapshot, pd.DataFrame) or len(settled) == len(frames) - 1:
                continue
            before = self.raw_inputs
            self.raw_inputs = [
                replace(r, typical=typical_row(snapshot)) if r is raw else r for r in before
            ]
            try:
                same = self.predict_rows(frame, what="the sample rows") == expected
            except ContractError:
                same = False
            if same:
                settled.append(raw.name)
            else:
                self.raw_inputs = before
        return settled

    def fill_ignored(self, ignored: list[str]) -> None:
        """Serving gets the ignored columns (the target, ids) with their most common training
        value, not missing: code like ``df.dropna()`` must not drop the request's rows."""
        if not ignored:
            return
        filled = []
        for raw in self.raw_inputs:
            source = self.snapshots.get(raw.name, self.raw_frame)
            if raw.kind != "frame" or raw.typical is not None:
                filled.append(raw)
                continue
            if not isinstance(source, pd.DataFrame):
                source = self.raw_frame
            fill = {c: typical_value(source[c]) for c in ignored if c in source.columns}
            filled.append(replace(raw, fill={**fill, **raw.fill}))
        self.raw_inputs = filled

    def unused_columns(self, frame: pd.DataFrame, expected: list[Any]) -> list[str]:
        """Raw columns the predictions don't depend on (e.g. the target): not served."""
        return [
            str(c)
            for c in frame.columns
            if probe_same(self.features, self.predict_rows, self.raw_frame, frame, c, expected)
        ]

    # -- what serving needs ---------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The objects serving reads, taken from the trained namespace."""
        names = list(self.plan.globals)
        for step in (self.pre, self.pred, self.plan.monitor):
            if isinstance(step, CellsStep):
                names.extend(step.reads)
        skip = {self.raw_name, self.features_name, *(r.name for r in self.raw_inputs)}
        state = {n: self.ns[n] for n in dict.fromkeys(names) if n not in skip and n in self.ns}
        for param, value in self.args.items():
            state[_arg_key(param)] = value
        # Plain data, not nb2prod classes: the state must load wherever the runtime is imported
        # from (nb2prod.runtime at build, nb2prod_runtime in the service).
        state[RECORDING_KEY] = self.recording.to_state()
        state[RAW_INPUTS_KEY] = [asdict(raw) for raw in self.raw_inputs]
        return state

    def completed_plan(self) -> ServingPlan:
        """The plan with what training found: which names the runtime binds to what."""
        assert self.features_name is not None
        bindings = Bindings(
            features=self.features_name,
            raw_input=self.raw_name if isinstance(self.pre, CellsStep) else None,
            preprocess_output=self.output_name,
            feature_columns=self.feature_columns,
            predict_args=tuple((param, _arg_key(param)) for param in self.args),
            state=tuple(sorted(self.state())),
        )
        return replace(self.plan, bindings=bindings)


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (messages are one line in nb2prod's errors)."""
    return next((line for line in str(err).splitlines() if line.strip()), "").rstrip(".")


def _failing_line(err: BaseException) -> str:
    """The deepest line of notebook code (train.py or the cells run here) in a traceback."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.filename.endswith("train.py") or frame.filename.endswith(" cells>"):
            if frame.line:
                return frame.line.strip()
            code = _CELL_CODE.get(frame.filename, "").splitlines()
            if frame.lineno and 0 < frame.lineno <= len(code):
                return code[frame.lineno - 1].strip()
    return ""


def _arg_key(param: str) -> str:
    return f"predict.{param}"


def _is_estimator(value: Any) -> bool:
    """A model or transformer (it fits), as opposed to data."""
    return callable(getattr(value, "fit", None)) and not isinstance(value, type)


def _is_data(value: Any) -> bool:
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return True
    shape = getattr(value, "shape", None)
    return isinstance(shape, tuple) and len(shape) >= 1 and shape[0] > 1


def _same_layout(a: Any, b: Any) -> bool:
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        return list(a.columns) == list(b.columns)
    shape_a, shape_b = getattr(a, "shape", None), getattr(b, "shape", None)
    return (
        isinstance(shape_a, tuple)
        and isinstance(shape_b, tuple)
        and len(shape_a) == len(shape_b)
        and shape_a[1:] == shape_b[1:]
    )
