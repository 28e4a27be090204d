"""The training run's bookends, called by the generated ``train.py``.

``start()`` makes the run reproducible and puts it where the notebook ran
(its folder, its parameters, fixed seeds). ``save_model()`` works out what serving
needs from the finished namespace, computes the golden predictions with the
notebook's own code, and writes ``model/`` (state + model card) atomically.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickletools
import platform
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd

from . import frozen
from .card import BUILD_RECORD, CARD_SCHEMA_VERSION, GoldenSet, ModelCard, write_model_dir
from .monitoring.profile import reference_profile
from .notebook_path import ContractError, NotebookPath
from .plan import CellsStep, PlanError, ServingPlan
from .schema import infer_schema, to_jsonable
from .skew import (
    BATCH_DEPENDENT,
    BatchDependenceError,
    SkewError,
    check_skew,
    null_row,
    nullable_columns,
)

#: How many raw training rows make the golden set.
GOLDEN_ROWS = 8
#: At most this many raw training rows are predicted for the reference profile's predictions.
PROFILE_PREDICTION_ROWS = 2000
#: Exit code of train.py when the notebook breaks the serving contract (not a crash).
CONTRACT_EXIT_CODE = 3
#: Exit code of train.py when a row's answer depends on its batch or on chance (skew).
SKEW_EXIT_CODE = 6
#: At most this many rows with nulls join the golden set (one per nullable column).
NULL_GOLDEN_ROWS = 16
ERROR_PREFIX = "nb2prod-error: "
#: What ``check_preprocess`` writes beside the check script, for ``nb2prod check --run``.
CHECK_REPORT = "check_run.json"

_RUN: dict[str, Any] = {}


def start(train_file: str) -> None:
    """Seed, enter the notebook's folder and remember where model/ goes."""
    here = Path(train_file).resolve().parent
    spec = json.loads((here / BUILD_RECORD).read_text())
    seed = _seed(spec.get("parameters", {}))
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")  # notebooks that plot must not need a display
    # pandas 3 keeps strings in pyarrow when it is installed: the serving state would then
    # need pyarrow in the image (~100 MB), and host training would differ from training in
    # the image's pins. Python-backed strings are the same values everywhere.
    pd.options.mode.string_storage = "python"
    notebook_dir = _notebook_dir(here, spec)
    model_dir = Path(os.environ.get("NB2PROD_MODEL_DIR") or here / "model").resolve()
    try:
        plan = ServingPlan.from_json(spec.get("serving"))
    except PlanError as err:  # a hand-edited or older build directory: fail before training
        print(f"{ERROR_PREFIX}{here / BUILD_RECORD}: {err}", file=sys.stderr, flush=True)
        raise SystemExit(CONTRACT_EXIT_CODE) from None
    _RUN.update(
        here=here,
        spec=spec,
        plan=plan,
        seed=seed,
        model_dir=model_dir,
        started=time.perf_counter(),
        trained_in=os.environ.get("NB2PROD_TRAINED_IN", "host"),
    )
    sys.path.insert(0, str(here))  # local modules copied beside train.py
    os.chdir(notebook_dir)
    frozen.start_recording()


def serving_starts(namespace: dict[str, Any]) -> None:
    """Snapshot what the first serving cell reads: the raw input as serving will receive it.

    The notebook may reassign or mutate its frames later (``df = df.drop(...)``); the schema,
    the golden rows and the shape of each request's rows come from this snapshot.
    """
    plan: ServingPlan = _RUN["plan"]
    step = plan.preprocess if isinstance(plan.preprocess, CellsStep) else plan.predict
    if not isinstance(step, CellsStep):
        return
    values = {n: namespace[n] for n in step.reads if n in namespace and _is_raw_like(namespace[n])}
    _RUN["snapshots"] = copy.deepcopy(values)


def _is_raw_like(value: Any) -> bool:
    if isinstance(value, (pd.DataFrame, pd.Series, np.ndarray)):
        return True
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, (pd.DataFrame, np.ndarray)) for v in value)
    )


def save_model(namespace: dict[str, Any]) -> None:
    """Write model/ from the finished training namespace; exit 3 on a contract problem.

    Picks the serving state out of ``namespace`` (train.py's globals), computes the golden
    predictions with the notebook's own serving code, and writes the state and the card.
    """
    with _refusals_exit():
        _save_model(namespace)


@contextmanager
def _refusals_exit() -> Iterator[None]:
    """A refusal becomes its ``nb2prod-error:`` line and the build's exit code (6 skew, 3 the
    contract), which nb2prod turns back into the error it reports."""
    try:
        yield
    except SkewError as err:
        print(ERROR_PREFIX + str(err), file=sys.stderr, flush=True)
        raise SystemExit(SKEW_EXIT_CODE) from None
    except ContractError as err:
        print(ERROR_PREFIX + str(err), file=sys.stderr, flush=True)
        raise SystemExit(CONTRACT_EXIT_CODE) from None


def check_preprocess(namespace: dict[str, Any]) -> None:
    """``nb2prod check --run`` stops here, before the model's train cells run.

    Runs the serving preprocess step on sample rows with what the cells so far recorded
    (preprocess_probe.py), writes ``check_run.json`` beside the script, and exits: 0, or the
    build's exit code and error line for the same refusal.
    """
    from .preprocess_probe import probe

    recording, first_arguments = frozen.stop_recording()
    plan: ServingPlan = _RUN["plan"]
    with _refusals_exit():
        report = probe(namespace, plan, recording, first_arguments, _RUN.get("snapshots"))
    report["seconds"] = round(time.perf_counter() - _RUN["started"], 3)
    report["recorded"] = [site for site in _recorded(plan, recording) if site["runs"]]
    (_RUN["here"] / CHECK_REPORT).write_text(json.dumps(report, default=str))
    raise SystemExit(0)


def _save_model(ns: dict[str, Any]) -> None:
    spec: dict[str, Any] = _RUN["spec"]
    plan: ServingPlan = _RUN["plan"]
    recording, first_arguments = frozen.stop_recording()
    runner = NotebookPath(ns, plan, recording, _RUN.get("snapshots"), first_arguments)
    raw = runner.raw_frame
    golden_frame, golden_predictions, columns, schema, batching = _golden_rows_and_schema(
        runner, plan, bool(spec.get("batch_dependent"))
    )
    state = runner.state()
    state_bytes = _dump_state(state)
    parameters = {k: ns.get(k, v) for k, v in spec.get("parameters", {}).items()}
    metrics = _metrics(ns, plan)
    libraries = _libraries(_RUN["here"])
    fingerprint = _fingerprint(raw)
    golden = GoldenSet(
        rows=to_jsonable(golden_frame[columns].to_dict(orient="records")),
        predictions=golden_predictions,
    )
    version_source = json.dumps(
        [spec["sha256"], to_jsonable(parameters), fingerprint, golden.to_json(), libraries],
        sort_keys=True,
        default=str,
    )
    output = _output_kind(golden_predictions)
    card = ModelCard(
        name=spec["name"],
        model_version=hashlib.sha256(version_source.encode()).hexdigest()[:12],
        nb2prod_version=spec.get("nb2prod_version", "unknown"),
        notebook={"path": spec["notebook"], "sha256": spec["sha256"]},
        trained_in=_RUN["trained_in"],
        trained_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        training_seconds=round(time.perf_counter() - _RUN["started"], 3),
        python=platform.python_version(),
        parameters=to_jsonable(parameters),
        metrics=metrics,
        seeds={"python": _RUN["seed"], "numpy": _RUN["seed"], "PYTHONHASHSEED": "0"},
        libraries=libraries,
        data_fingerprint=fingerprint,
        input_schema=schema,
        output=output,
        serving=runner.completed_plan(),
        reference_profile=_reference_profile(runner, raw, schema, output),
        recorded=_recorded(plan, runner.recording),
        batching=batching,
        sensitive_columns=_sensitive_columns(spec.get("sensitive_columns", []), schema),
        schema_version=CARD_SCHEMA_VERSION,
    )
    _add_state_requirements(state_bytes, _RUN["here"])
    write_model_dir(_RUN["model_dir"], state_bytes, card, golden)
    summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "no metrics"
    print(f"nb2prod: trained model {card.model_version} ({summary})", flush=True)


def _sensitive_columns(marked: list[dict[str, str]], schema: dict[str, Any]) -> list[str]:
    """The marked sensitive columns (input or ignored ones); ContractError for a name that is
    no column of the training input at all: a typo there would log the very column it meant
    to hide."""
    names = [str(column["name"]) for column in schema["columns"]]
    ignored = {str(name) for name in schema.get("ignored_columns", [])}
    for column in marked:
        if column["name"] not in names and column["name"] not in ignored:
            raise ContractError(
                f"{column['source']}: sensitive column {column['name']!r} is not an input "
                f"column of the model; its input columns are: {', '.join(names)}. Fix the "
                "name in `# nb2prod: sensitive=...` or --sensitive"
            )
    # An ignored column is not a typo: the service never takes it, but `nb2prod batch --keep`
    # carries input-file columns into the log's records, and leaves out the card's sensitive
    # ones, so it stays on the card.
    return [column["name"] for column in marked]


def _golden_rows_and_schema(
    runner: NotebookPath, plan: ServingPlan, batch_dependent: bool = False
) -> tuple[pd.DataFrame, list[Any], list[Any], dict[str, Any], dict[str, Any]]:
    """The golden rows and their predictions, the served columns, the input schema, and the
    batch-invariance verdict.

    Along the way: which raw frames never reach predict, which columns serving never needs,
    which columns accept null (a probe), and the skew guard on the final golden rows.
    ``batch_dependent`` (``build --batch-dependent``) accepts a batch-dependent answer as the
    notebook's intent instead of refusing it; chance (determinism) is refused either way.
    """
    raw = runner.raw_frame
    golden_frame = raw.sample(n=min(GOLDEN_ROWS, len(raw)), random_state=0)
    golden_predictions = runner.predict_rows(golden_frame, what="the sample rows")
    complete = raw.dropna()
    if len(golden_predictions) != len(golden_frame) and len(complete):
        # Preprocessing that drops rows with nulls (df.dropna()) predicts complete rows only;
        # the nullability probe then makes those columns required in the request schema.
        golden_frame = complete.sample(n=min(GOLDEN_ROWS, len(complete)), random_state=0)
        golden_predictions = runner.predict_rows(golden_frame, what="the sample rows")
    if len(golden_predictions) != len(golden_frame):
        cells = plan.predict if isinstance(plan.predict, CellsStep) else None
        result = (cells and cells.result) or "its last expression"
        raise ContractError(
            f"the predict step returned {len(golden_predictions)} predictions for "
            f"{len(golden_frame)} rows (its result: {result}); it must return one per input "
            "row. End the predict cell with the predictions for all its input rows"
        )
    runner.settle_raw_inputs(golden_frame, golden_predictions)
    ignored = runner.unused_columns(golden_frame, golden_predictions)
    runner.fill_ignored(ignored)
    columns = [c for c in raw.columns if c not in ignored]
    nullable = nullable_columns(runner, golden_frame, columns)
    golden_frame = _with_null_rows(raw, golden_frame, nullable)
    golden_predictions = runner.predict_rows(golden_frame, what="the sample rows")
    batching = _batching_verdict(runner, golden_frame, golden_predictions, batch_dependent)
    schema = infer_schema(raw[columns], ignored)
    for column in schema["columns"]:
        column["nullable"] = column["name"] in {str(c) for c in nullable}
    return golden_frame, golden_predictions, columns, schema, batching


def _batching_verdict(
    runner: NotebookPath, frame: pd.DataFrame, predictions: list[Any], batch_dependent: bool
) -> dict[str, Any]:
    """The skew guard, and the card's record of whether requests may be joined in a batch."""
    try:
        check_skew(runner, frame, predictions)
    except BatchDependenceError as err:
        if not batch_dependent:
            raise BatchDependenceError(
                f"{str(err).rstrip('.')}. If the answers are meant to depend on the request's "
                "rows, build with --batch-dependent: each request is then served on its own rows"
            ) from err
        print(f"nb2prod: built with --batch-dependent: {err}", file=sys.stderr, flush=True)
        return {"batch_invariant": False, "reason": BATCH_DEPENDENT}
    if batch_dependent:
        return {"batch_invariant": False, "reason": "built with --batch-dependent"}
    if len(frame) < 2:
        return {"batch_invariant": False, "reason": "fewer than 2 sample rows to check it on"}
    return {"batch_invariant": True, "rows_checked": len(frame)}


def _recorded(plan: ServingPlan, recording: frozen.Recording) -> list[dict[str, Any]]:
    """The card's list of recorded sites, with how often each ran and its value."""
    out = []
    for site in plan.sites:
        runs, value = recording.describe(site.number)
        live = site.number in recording.live
        out.append(
            {
                "cell": site.cell,
                "line": site.line,
                "kind": site.kind,
                "expression": site.expression,
                "runs": runs,
                "value": "runs live (per element, not over the rows)" if live else value,
            }
        )
    return out


def _with_null_rows(raw: pd.DataFrame, golden: pd.DataFrame, nullable: set[Any]) -> pd.DataFrame:
    """The golden rows plus, per nullable column, a row with it null: from the training rows
    where they have nulls there, else the first golden row with the column blanked."""
    extra: list[pd.DataFrame] = []
    for column in [c for c in raw.columns if c in nullable]:
        if len(extra) >= NULL_GOLDEN_ROWS or golden[column].isna().any():
            continue
        missing = raw[raw[column].isna()]
        if len(missing):
            extra.append(missing.sample(n=1, random_state=0))
        else:
            extra.append(null_row(golden.iloc[[0]], column))
    if not extra:
        return golden
    return pd.concat([golden, *extra], ignore_index=True)


def _reference_profile(
    runner: NotebookPath, raw: pd.DataFrame, schema: dict[str, Any], output: dict[str, str]
) -> dict[str, Any]:
    """The drift reference: the training columns, and predictions on a sample of them."""
    sample = raw.sample(n=min(PROFILE_PREDICTION_ROWS, len(raw)), random_state=0)
    try:
        predictions = runner.predict_rows(sample, what="the reference-profile sample")
    except ContractError as err:  # the golden rows passed; profile what can be profiled
        print(f"nb2prod: no prediction profile: {err}", file=sys.stderr, flush=True)
        predictions = []
    if len(predictions) != len(sample):
        predictions = []
    return reference_profile(raw, schema, predictions, output["kind"])


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


def _metrics(ns: dict[str, Any], plan: ServingPlan) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for name in plan.evaluate_binds:
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


def display(*objects: Any, **_: Any) -> None:
    """Stand-in for IPython's display() so notebook cells that call it still run."""
    for obj in objects:
        print(obj)
