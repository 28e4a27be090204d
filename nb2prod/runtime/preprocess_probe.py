"""``nb2prod check --run``: the preprocess step on sample rows, before any model is trained.

The generated check script runs the notebook's cells up to the first train cell after the
last preprocess cell, recording fits and statistics as training does, then stops here. The
serving preprocess code runs on one sample row and on a batch of them, with what was recorded
replayed, exactly as the build does before it computes the golden predictions. A failure is
the build's own error (the same message and exit code), found without fitting the model:

- the raw input is not a frame or 2-D array, or is empty;
- the preprocess step fails on sample rows (a column it needs, a dtype it assumes);
- a sample row's features differ alone and in a batch (a statistic over the request's rows).

What needs the model (predictions per row, determinism of predict) is left to the build.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .frozen import Recording
from .notebook_path import ContractError, NotebookPath
from .plan import CellsStep, FunctionStep, NoStep, ServingPlan
from .skew import BatchDependenceError, check_features, feature_rows, suspect

#: Sample rows for the batch run (the build's golden set is this size).
BATCH_ROWS = 8


class NotYetBound(Exception):
    """What the probe needs is only bound by cells after the stop (the train cells)."""


class PreprocessProbe(NotebookPath):
    """``NotebookPath`` before training: no model yet, so only preprocess runs."""

    def _resolve(self) -> None:
        self.exact = True  # False: which preprocess output predict reads is a guess
        if isinstance(self.pred, FunctionStep) and self.pred.params:
            self.features_name = self.pred.params[-1]
        elif isinstance(self.pred, CellsStep):
            try:
                self.features_name = self._features_of_cells(self.pred)
            except ContractError:
                self.features_name = None
        match self.pre:
            case FunctionStep():
                self.raw_frame = self._function_raw()
            case CellsStep():
                self.output_name = self._probe_output(self.pre)
                self.raw_frame = self._raw_of_cells(self.pre)
                # Cells that change the raw frame in place (df["x"] = ...) output it.
                self.output_name = self.output_name or self.raw_name
            case _:
                raise NotYetBound("the notebook has no preprocess step")

    def _function_raw(self) -> pd.DataFrame:
        first = self.first_arguments.get("preprocess")
        if first is not None:
            return self._raw("", first, "preprocess()'s argument")
        call = self.plan.calls.get("preprocess")
        if not call:
            raise NotYetBound("the notebook calls `preprocess(...)` only in train cells or later")
        try:
            value = self._data_root(call[0])
        except ContractError:
            raise NotYetBound(
                f"`preprocess({call[0]})`'s argument is bound by a train cell"
            ) from None
        return self._raw("", value, f"preprocess({call[0]})")

    def _probe_output(self, pre: CellsStep) -> str | None:
        """The preprocess output predict reads: as the build works it out, else a guess."""
        if self.features_name is not None:
            try:
                return self._output_of_cells(pre)
            except ContractError:
                pass
        self.exact = False
        candidates = [n for n in (pre.result, *reversed(pre.binds)) if n]
        return next((n for n in candidates if _is_table(self.ns.get(n))), None)


def probe(
    ns: dict[str, Any],
    plan: ServingPlan,
    recording: Recording,
    first_arguments: dict[str, Any],
    snapshots: dict[str, Any] | None,
) -> dict[str, Any]:
    """Run the preprocess step on sample rows; ContractError (or SkewError) as the build's.

    Returns what ran, for the report: ``ran`` False with a ``reason`` when there was nothing
    to run before training.
    """
    if isinstance(plan.preprocess, NoStep):
        return {"ran": False, "reason": "the notebook has no preprocess step"}
    try:
        runner = PreprocessProbe(ns, plan, recording, snapshots, first_arguments)
    except NotYetBound as why:
        return {"ran": False, "reason": str(why)}
    raw = runner.raw_frame
    batch = raw.sample(n=min(BATCH_ROWS, len(raw)), random_state=0)
    features = runner.preprocess_rows(batch, what="the sample rows")
    complete = raw.dropna()
    if _rows(features) not in (None, len(batch)) and len(complete):
        # Preprocessing that drops rows with nulls: the build predicts complete rows too.
        batch = complete.sample(n=min(BATCH_ROWS, len(complete)), random_state=0)
        features = runner.preprocess_rows(batch, what="the sample rows")
    exact = isinstance(plan.preprocess, FunctionStep) or runner.exact
    count = _rows(features)
    if exact and count is not None and count != len(batch):
        raise ContractError(
            f"the preprocess step, {' and '.join(plan.preprocess.labels)}, returned {count} "
            f"rows of features for {len(batch)} sample rows of the raw input, so predict "
            "can't return one per input row as serving needs. Keep every row in the "
            "preprocess cells (impute rather than drop; filter the training rows in a train "
            "cell)"
        )
    single = _alone(runner, batch)
    compared = (
        (isinstance(plan.preprocess, FunctionStep) or runner.output_name is not None)
        and len(batch) > 1
        and feature_rows(features, len(batch)) is not None
    )
    if compared:
        check_features(runner, batch)
    return {
        "ran": True,
        "raw_input": runner.raw_name or _argument(plan),
        "training_rows": len(raw),
        "output": runner.output_name,
        "output_is_a_guess": not runner.exact,
        "batch_rows": len(batch),
        "features_batch": _shape(features),
        "features_single": _shape(single),
        "compared_alone_and_batch": compared,
    }


def _is_table(value: Any) -> bool:
    """Rows of features: a DataFrame, a 2-D array or a sparse matrix."""
    if isinstance(value, pd.DataFrame):
        return True
    shape = getattr(value, "shape", None)
    return isinstance(shape, tuple) and len(shape) == 2 and hasattr(value, "dtype")


def _alone(runner: PreprocessProbe, batch: pd.DataFrame) -> Any:
    """Each sample row preprocessed alone, as a one-row request is; the first row's output.

    A row that preprocesses in the batch but not alone is the build's skew refusal.
    """
    outputs = []
    for row in range(len(batch)):
        try:
            outputs.append(
                runner.preprocess_rows(batch.iloc[[row]], what=f"sample row {row} alone")
            )
        except ContractError as err:
            if len(batch) < 2:
                raise
            raise BatchDependenceError(
                f"sample row {row} preprocesses in a batch of {len(batch)} rows but not alone: "
                f"{err}.{suspect(runner.plan)}"
            ) from err
    return outputs[0]


def _argument(plan: ServingPlan) -> str:
    call = plan.calls.get("preprocess")
    return f"preprocess({call[0]})" if call else "preprocess()'s argument"


def _rows(value: Any) -> int | None:
    if isinstance(value, (pd.DataFrame, pd.Series, np.ndarray)) and value.ndim >= 1:
        return len(value)
    return None


def _shape(value: Any) -> list[int] | str:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
        return list(shape)
    return type(value).__name__
