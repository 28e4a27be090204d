"""The training run's bookends, called by the generated ``train.py``.

``start()`` makes the run reproducible and puts it where the notebook ran
(its folder, its parameters, fixed seeds). ``finish()`` works out what serving
needs from the finished namespace, computes the golden predictions with the
notebook's own code, and writes ``model/`` (state + model card) atomically.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import pickletools
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from .profile import reference_profile
from .schema import infer_schema, predictions_to_list, to_jsonable

#: How many raw training rows make the golden set.
GOLDEN_ROWS = 8
#: At most this many raw training rows are predicted for the reference profile's predictions.
PROFILE_PREDICTION_ROWS = 2000
#: Exit code of train.py when the notebook breaks the serving contract (not a crash).
CONTRACT_EXIT_CODE = 3
ERROR_PREFIX = "nb2prod-error: "

_RUN: dict[str, Any] = {}
_CELL_CODE: dict[str, str] = {}  # exec'd cell code by filename, for error messages


class ContractError(Exception):
    """Raised when the trained namespace cannot be served as the notebook describes."""


def start(train_file: str) -> None:
    """Seed, enter the notebook's folder and remember where model/ goes."""
    here = Path(train_file).resolve().parent
    spec = json.loads((here / "spec.json").read_text())
    seed = _seed(spec.get("parameters", {}))
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")  # notebooks that plot must not need a display
    notebook_dir = _notebook_dir(here, spec)
    model_dir = Path(os.environ.get("NB2PROD_MODEL_DIR") or here / "model").resolve()
    _RUN.update(
        here=here,
        spec=spec,
        seed=seed,
        model_dir=model_dir,
        started=time.perf_counter(),
        trained_in=os.environ.get("NB2PROD_TRAINED_IN", "host"),
    )
    sys.path.insert(0, str(here))  # local modules copied beside train.py
    os.chdir(notebook_dir)


def finish(namespace: dict[str, Any]) -> None:
    """Write model/ from the finished training namespace; exit 3 on a contract problem."""
    try:
        _finish(namespace)
    except ContractError as err:
        print(ERROR_PREFIX + str(err), file=sys.stderr, flush=True)
        raise SystemExit(CONTRACT_EXIT_CODE) from None


def _finish(ns: dict[str, Any]) -> None:
    spec: dict[str, Any] = _RUN["spec"]
    plan: dict[str, Any] = spec["serving"]
    runner = NotebookPath(ns, plan)
    raw = runner.raw_frame
    golden_frame = raw.sample(n=min(GOLDEN_ROWS, len(raw)), random_state=0)
    golden_predictions = runner.predict_rows(golden_frame, what="the sample rows")
    if len(golden_predictions) != len(golden_frame):
        result = plan["predict"].get("result") or "its last expression"
        raise ContractError(
            f"the predict step returned {len(golden_predictions)} predictions for "
            f"{len(golden_frame)} rows (its result: {result}); it must return one per input "
            "row. End the predict cell with the predictions for all its input rows"
        )
    ignored = runner.unused_columns(golden_frame, golden_predictions)
    columns = [c for c in raw.columns if c not in ignored]
    schema = infer_schema(raw[columns], ignored)
    state = runner.state()
    state_bytes = _dump_state(state)
    parameters = {k: ns.get(k, v) for k, v in spec.get("parameters", {}).items()}
    metrics = _metrics(ns, spec)
    libraries = _libraries(_RUN["here"])
    fingerprint = _fingerprint(raw)
    golden = {
        "rows": to_jsonable(golden_frame[columns].to_dict(orient="records")),
        "predictions": golden_predictions,
    }
    version_source = json.dumps(
        [spec["sha256"], to_jsonable(parameters), fingerprint, golden, libraries],
        sort_keys=True,
        default=str,
    )
    card = {
        "name": spec["name"],
        "model_version": hashlib.sha256(version_source.encode()).hexdigest()[:12],
        "nb2prod_version": spec.get("nb2prod_version", "unknown"),
        "notebook": {"path": spec["notebook"], "sha256": spec["sha256"]},
        "trained_in": _RUN["trained_in"],
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_seconds": round(time.perf_counter() - _RUN["started"], 3),
        "python": platform.python_version(),
        "parameters": to_jsonable(parameters),
        "metrics": metrics,
        "seeds": {"python": _RUN["seed"], "numpy": _RUN["seed"], "PYTHONHASHSEED": "0"},
        "libraries": libraries,
        "data_fingerprint": fingerprint,
        "input_schema": schema,
        "output": _output_kind(golden_predictions),
        "serving": runner.card_section(),
        "golden": golden,
    }
    card["reference_profile"] = _reference_profile(runner, raw, schema, card["output"])
    _add_state_requirements(state_bytes, _RUN["here"])
    _write_model_dir(_RUN["model_dir"], state_bytes, card)
    summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "no metrics"
    print(f"nb2prod: trained model {card['model_version']} ({summary})", flush=True)


def _reference_profile(
    runner: NotebookPath, raw: pd.DataFrame, schema: dict[str, Any], output: dict[str, str]
) -> dict[str, Any]:
    """The drift reference (issue 4): the training columns, and predictions on a sample of them."""
    sample = raw.sample(n=min(PROFILE_PREDICTION_ROWS, len(raw)), random_state=0)
    try:
        predictions = runner.predict_rows(sample, what="the reference-profile sample")
    except ContractError as err:  # the golden rows passed; profile what can be profiled
        print(f"nb2prod: no prediction profile: {err}", file=sys.stderr, flush=True)
        predictions = []
    if len(predictions) != len(sample):
        predictions = []
    return reference_profile(raw, schema, predictions, output["kind"])


class NotebookPath:
    """Runs the notebook's own serving code in the training namespace.

    This is deliberately not the serving runtime: the golden predictions come
    from the cells as the notebook runs them, and serving must reproduce them.
    """

    def __init__(self, ns: dict[str, Any], plan: dict[str, Any]) -> None:
        self.ns = ns
        self.plan = plan
        self.pre = plan["preprocess"]
        self.pred = plan["predict"]
        self.raw_name: str | None = None
        self.features_name: str | None = None  # predict's input name
        self.output_name: str | None = None  # preprocess's output that feeds it
        self.args: dict[str, Any] = {}  # function-style predict: param -> object
        self._resolve()

    # -- working out the plan from the namespace -------------------------------------
    def _resolve(self) -> None:
        if self.pred["kind"] == "function":
            params = self.pred["params"]
            if not params:
                raise ContractError("`predict` must take the features as its last argument")
            self.features_name = params[-1]
            call = self.plan["calls"].get("predict", [])
            for index, param in enumerate(params[:-1]):
                self.args[param] = self._argument(param, call, index)
        else:
            self.features_name = self._features_of_cells()
        if self.pre["kind"] == "function":
            call = self.plan["calls"].get("preprocess")
            if not call:
                raise ContractError(
                    "can't tell which DataFrame is the raw input: the notebook never calls "
                    "`preprocess(...)`. Call it on the raw frame in a train or evaluate cell, "
                    "e.g. `model.fit(preprocess(X_train), y_train)`"
                )
            self.raw_frame = self._frame(self._data_root(call[0]), f"preprocess({call[0]})")
        elif self.pre["kind"] == "cells":
            self.raw_name = self._raw_of_cells()
            self.raw_frame = self._frame(self.ns[self.raw_name], self.raw_name)
            self.output_name = self._output_of_cells()
        elif self.pred["kind"] == "function":
            call = self.plan["calls"].get("predict", [])
            if len(call) < len(self.pred["params"]):
                raise ContractError(
                    "can't tell which DataFrame is the raw input: the notebook never calls "
                    "`predict(model, features)`. Call it once on the input frame, e.g. "
                    "`predict(model, X_test)`"
                )
            self.raw_frame = self._frame(self._data_root(call[-1]), call[-1])
        else:
            name = self.features_name
            assert name is not None
            self.raw_name = name
            self.raw_frame = self._frame(self._eval(name), name)

    def _argument(self, param: str, call: list[str], index: int) -> Any:
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

    def _frame(self, value: Any, what: str) -> pd.DataFrame:
        if isinstance(value, pd.Series):
            value = value.to_frame()
        if not isinstance(value, pd.DataFrame):
            raise ContractError(
                f"the raw input `{what}` is a {type(value).__name__}, not a pandas DataFrame; "
                "serving takes rows of named columns, so make the raw input a DataFrame "
                "(e.g. load_iris(as_frame=True))"
            )
        if value.empty:
            raise ContractError(f"the raw input `{what}` is empty after training")
        return value

    def _raw_of_cells(self) -> str:
        frames = [n for n in self.pre["reads"] if isinstance(self.ns.get(n), pd.DataFrame)]
        if len(frames) == 1:
            return frames[0]
        cells = self.pre["cells"]
        if not frames:
            raise ContractError(
                f"the preprocess cell(s) {cells} read no DataFrame bound before them, so "
                "there is no raw input to serve. Read the raw rows from a DataFrame variable "
                "(e.g. `features = raw[COLUMNS]`)"
            )
        raise ContractError(
            f"the preprocess cell(s) {cells} read several DataFrames ({', '.join(frames)}); "
            "nb2prod can't tell which is the raw input. Read exactly one raw DataFrame there"
        )

    def _features_of_cells(self) -> str:
        reads = self.pred["reads"]
        from_pre = [n for n in reads if n in self.pre.get("binds", [])]
        if len(from_pre) == 1:
            return from_pre[0]
        data = [n for n in reads if _is_data(self.ns.get(n))]
        if len(data) == 1:
            return data[0]
        names = ", ".join(data or reads) or "nothing"
        raise ContractError(
            f"can't tell which input of the predict cell(s) {self.pred['cells']} are the "
            f"features (candidates: {names}). Make the predict cell read one features "
            "variable produced by preprocess"
        )

    def _output_of_cells(self) -> str:
        """Which preprocess output feeds predict's features."""
        name = self.features_name
        assert name is not None
        binds = self.pre["binds"]
        if self.pred["kind"] == "cells" and name in binds:
            return name
        if self.pred["kind"] == "function":
            call = self.plan["calls"].get("predict", [])
            if len(call) == len(self.pred["params"]) and call[-1] in binds:
                return call[-1]
            target = self._eval(call[-1]) if call else None
        else:
            target = self.ns.get(name)
        matches = [n for n in binds if _same_layout(self.ns.get(n), target)]
        if len(matches) == 1:
            return matches[0]
        raise ContractError(
            f"the predict cell reads `{name}`, and nb2prod can't tell which of the "
            f"preprocess outputs ({', '.join(binds)}) it is. Make the predict cell read the "
            "preprocess output by name"
        )

    # -- running the notebook's code ------------------------------------------------
    def predict_rows(self, frame: pd.DataFrame, what: str) -> list[Any]:
        """The notebook's predictions for ``frame`` (raw rows), as JSON values."""
        step = "preprocess"
        try:
            features = self._preprocess(frame)
            step = "predict"
            result = self._predict(features)
        except ContractError:
            raise
        except Exception as err:
            plan = self.pre if step == "preprocess" else self.pred
            labels = " and ".join(plan.get("labels") or [f"cells {plan.get('cells')}"])
            raw = self.raw_name or (self.plan["calls"].get("preprocess") or ["?"])[0]
            line = _failing_line(err)
            raise ContractError(
                f"the {step} step, {labels}, fails on {what} of the raw input `{raw}`"
                + (f" at `{line}`" if line else "")
                + f": {type(err).__name__}: {err}. Serving runs it on request rows like these"
            ) from err
        return predictions_to_list(result)

    def features(self, frame: pd.DataFrame) -> Any:
        """The notebook's preprocess output for raw rows ``frame``."""
        return self._preprocess(frame)

    def _preprocess(self, frame: pd.DataFrame) -> Any:
        if self.pre["kind"] == "function":
            return self.ns["preprocess"](frame.copy())
        if self.pre["kind"] == "cells":
            assert self.raw_name is not None
            scope = dict(self.ns)
            scope[self.raw_name] = frame.copy()
            _CELL_CODE["<preprocess cells>"] = self.pre["code"]
            exec(compile(self.pre["code"], "<preprocess cells>", "exec"), scope)  # noqa: S102
            return scope[self.output_name] if self.output_name else frame
        return frame.copy()

    def _predict(self, features: Any) -> Any:
        if self.pred["kind"] == "function":
            assert self.features_name is not None
            return self.ns["predict"](**self.args, **{self.features_name: features})
        assert self.features_name is not None
        scope = dict(self.ns)
        scope[self.features_name] = features
        code = self.pred["code"]
        tree = ast.parse(code)
        if self.pred["ends_with_expression"]:
            last = tree.body[-1]
            assert isinstance(last, ast.Expr)
            tree.body[-1] = ast.Assign(
                targets=[ast.Name(id="__nb2prod_result__", ctx=ast.Store())], value=last.value
            )
            ast.fix_missing_locations(tree)
            result_name = "__nb2prod_result__"
        else:
            result_name = self.pred["result"]
        _CELL_CODE["<predict cells>"] = code
        exec(compile(tree, "<predict cells>", "exec"), scope)  # noqa: S102
        return scope[result_name]

    def unused_columns(self, frame: pd.DataFrame, expected: list[Any]) -> list[str]:
        """Raw columns the predictions don't depend on (e.g. the target): not served."""
        return [str(c) for c in frame.columns if _probe_same(self, frame, c, expected)]

    # -- what serving needs ---------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The objects serving reads, taken from the trained namespace."""
        names = list(self.plan.get("globals", []))
        for step in (self.pre, self.pred, self.plan.get("monitor", {})):
            if step.get("kind") == "cells":
                names.extend(step["reads"])
        skip = {self.raw_name, self.features_name}
        state = {n: self.ns[n] for n in dict.fromkeys(names) if n not in skip and n in self.ns}
        for param, value in self.args.items():
            state[_arg_key(param)] = value
        return state

    def card_section(self) -> dict[str, Any]:
        """The model card's ``serving`` section: how the runtime calls model_code."""
        skip = {self.raw_name, self.features_name}

        def reads(step: dict[str, Any]) -> list[str]:
            return [n for n in step.get("reads", []) if n not in skip]

        pre: dict[str, Any] = {"kind": self.pre["kind"]}
        if self.pre["kind"] == "cells":
            pre.update(raw_input=self.raw_name, output=self.output_name, reads=reads(self.pre))
        pred: dict[str, Any] = {"kind": self.pred["kind"], "features": self.features_name}
        if self.pred["kind"] == "function":
            pred["args"] = {param: _arg_key(param) for param in self.args}
        else:
            pred["reads"] = reads(self.pred)
        monitor = self.plan.get("monitor", {"kind": "none"})
        section = {
            "preprocess": pre,
            "predict": pred,
            "monitor": {k: v for k, v in monitor.items() if k != "code"},
            "globals": list(self.plan.get("globals", [])),
            "state": sorted(self.state()),
        }
        return section


def _probe_same(
    runner: NotebookPath, frame: pd.DataFrame, column: Any, expected: list[Any]
) -> bool:
    """True when serving never needs ``column`` (the target, an id, a leftover).

    Two conservative probes: the serving code runs without the column and predicts
    the same; or blanking the column leaves the features unchanged (code like
    ``df.drop(columns="target")`` needs the column present, not its values).
    Blanking alone is not enough: a model that tolerates NaN could hide a feature.
    """
    try:
        if runner.predict_rows(frame.drop(columns=[column]), what="probe rows") == expected:
            return True
    except ContractError:
        pass
    blanked = frame.copy()
    blanked[column] = np.nan
    try:
        return _same_features(runner.features(frame), runner.features(blanked))
    except Exception:
        return False


def _same_features(a: Any, b: Any) -> bool:
    if isinstance(a, (pd.DataFrame, pd.Series)) and isinstance(b, type(a)):
        return bool(a.equals(b))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    return False


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


def _seed(parameters: dict[str, Any]) -> int:
    for name in ("seed", "SEED", "random_state", "RANDOM_STATE", "random_seed"):
        if isinstance(parameters.get(name), int):
            return int(parameters[name])
    return 0


def _notebook_dir(here: Path, spec: dict[str, Any]) -> Path:
    if os.environ.get("NB2PROD_NOTEBOOK_DIR"):
        return Path(os.environ["NB2PROD_NOTEBOOK_DIR"])
    relative = (here / spec["notebook_dir_relative"]).resolve()
    return relative if relative.is_dir() else Path(spec["notebook_dir"])


def _metrics(ns: dict[str, Any], spec: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in spec["serving"].get("evaluate_binds", []):
        value = ns.get(name)
        if isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
            metrics[name] = float(value)
    return metrics


def _libraries(here: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (here / "requirements.txt").read_text().splitlines():
        name, sep, _ = line.partition("==")
        if sep and not line.startswith("#"):
            try:
                pins[name.strip()] = metadata.version(name.strip())
            except metadata.PackageNotFoundError:
                continue
    return pins


def _fingerprint(frame: pd.DataFrame) -> dict[str, Any]:
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    try:
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    except TypeError:  # unhashable cells (lists, dicts): fall back to their text
        digest.update(frame.to_csv().encode())
    return {"sha256": digest.hexdigest(), "rows": len(frame), "columns": frame.shape[1]}


def _output_kind(predictions: list[Any]) -> dict[str, str]:
    first = predictions[0] if predictions else None
    if isinstance(first, list):
        return {"kind": "vector"}
    if isinstance(first, float):
        return {"kind": "number"}
    return {"kind": "label"}


def _dump_state(state: dict[str, Any]) -> bytes:
    for name, value in state.items():
        try:
            cloudpickle.dumps(value)
        except Exception as err:
            raise ContractError(
                f"the serving state `{name}` ({type(value).__name__}) can't be saved: {err}. "
                "Serving needs it; keep open files, connections and generators out of "
                "what preprocess/predict read"
            ) from err
    return bytes(cloudpickle.dumps(state))


def _add_state_requirements(state_bytes: bytes, here: Path) -> None:
    """Pin the packages the pickled state needs to load (e.g. scikit-learn for a model)."""
    modules = _pickled_modules(state_bytes)
    distributions = metadata.packages_distributions()
    path = here / "requirements-serving.txt"
    lines = path.read_text().splitlines()
    present = {line.split("==")[0].strip().lower() for line in lines if "==" in line}
    added: list[str] = []
    for module in sorted(modules):
        if module in sys.stdlib_module_names or module in ("__main__", "builtins"):
            continue
        for dist in distributions.get(module, []):
            if dist.lower() in present:
                continue
            present.add(dist.lower())
            added.append(f"{dist}=={metadata.version(dist)}")
    if added:
        note = "# needed to load the serving state (model/state.pkl), found by train.py"
        path.write_text("\n".join([*lines, note, *added]) + "\n")


def _pickled_modules(data: bytes) -> set[str]:
    modules: set[str] = set()
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
        if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
            modules.add(arg.split(" ")[0].split(".")[0])
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            modules.add(strings[-2].split(".")[0])
        if isinstance(arg, str):
            strings.append(arg)
    return modules


def _write_model_dir(model_dir: Path, state_bytes: bytes, card: dict[str, Any]) -> None:
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=model_dir.parent))
    try:
        (staging / "state.pkl").write_bytes(state_bytes)
        (staging / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def display(*objects: Any, **_: Any) -> None:
    """Stand-in for IPython's display() so notebook cells that call it still run."""
    for obj in objects:
        print(obj)
