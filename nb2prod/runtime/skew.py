"""The build's skew guard: the served answer for a row must not depend on the request around it.

Checked at training on the golden rows, with the notebook's own serving code replaying what
the training run recorded (notebook_path.py):

- **determinism**: the same rows predicted twice give the same answers;
- **batch invariance**: each row predicted alone gives its answer in the batch, so one row per
  request and a batch of rows are served alike.

A failure names the serving cells and, where nb2prod can tell, the line: a call whose value
depends on the other rows and that nb2prod does not record (``groupby().transform``,
``rank``, ``shift``, ``len(df)``, a reduction inside a ``lambda``). It also finds which columns
the serving code accepts as null (:func:`nullable_columns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .contract_checks import same_prediction
from .notebook_path import ContractError, NotebookPath
from .plan import CellsStep, FrozenSite, FunctionStep, ServingPlan

__all__ = [
    "BATCH_DEPENDENT",
    "BatchDependenceError",
    "SkewError",
    "check_features",
    "check_skew",
    "feature_rows",
    "null_row",
    "nullable_columns",
    "suspect",
]

#: At most this many columns are probed for nullability (one prediction each).
MAX_PROBED_COLUMNS = 200


class SkewError(ContractError):
    """Raised when the served answer for a row depends on the rows around it, or on chance."""


class BatchDependenceError(SkewError):
    """A row's answer depends on the other rows of its request (not on chance).

    ``nb2prod build --batch-dependent`` accepts this one (the notebook means it: a rank
    within the request, say) and records it in the card, so the service never joins two
    requests into one batch.
    """


#: The card's ``batching`` reason for a build whose rows depend on their request.
BATCH_DEPENDENT = "a row's answer depends on the other rows of its request"


def check_skew(runner: NotebookPath, frame: pd.DataFrame, predictions: Sequence[Any]) -> None:
    """Determinism, then batch invariance of ``predictions`` for the rows of ``frame``."""
    again = runner.predict_rows(frame, what="the sample rows (a second time)")
    for row, (first, second) in enumerate(zip(predictions, again, strict=False)):
        if not same_prediction(first, second):
            raise SkewError(
                f"predicting the same rows twice gave different answers (sample row {row}: "
                f"{first!r}, then {second!r}), so the serving code draws at random or keeps "
                f"state between calls{_where(runner.plan)}. Impute with a recorded statistic, "
                "or seed it"
            )
    if len(frame) < 2:
        return
    for row in range(len(frame)):
        try:
            alone = runner.predict_rows(frame.iloc[[row]], what=f"sample row {row} alone")
        except ContractError as err:
            raise BatchDependenceError(
                f"sample row {row} predicts in a batch of {len(frame)} rows but not alone: {err}."
                f"{suspect(runner.plan)}"
            ) from err
        if len(alone) != 1 or not same_prediction(predictions[row], alone[0]):
            got = alone[0] if len(alone) == 1 else f"{len(alone)} predictions"
            raise BatchDependenceError(
                f"sample row {row} alone predicts {got!r}, but {predictions[row]!r} in a batch of "
                f"{len(frame)} rows: the serving code{_where(runner.plan)} makes a row's answer "
                f"depend on the other rows of the request.{suspect(runner.plan)}"
            )
    check_features(runner, frame)


def check_features(runner: NotebookPath, frame: pd.DataFrame) -> None:
    """The same on the features predict receives: a class label can hide a skewed feature."""
    batch = feature_rows(runner.features(frame), len(frame))
    if batch is None:
        return
    names, values = batch
    for row in range(len(frame)):
        alone = feature_rows(runner.features(frame.iloc[[row]]), 1)
        if alone is None:
            return
        for column, (got, want) in enumerate(zip(alone[1][0], values[row], strict=False)):
            if not _same_value(got, want):
                name = f" `{names[column]}`" if names else f" {column}"
                raise BatchDependenceError(
                    f"sample row {row}'s feature{name} is {got!r} alone but {want!r} in a batch "
                    f"of {len(frame)} rows: the serving code{_where(runner.plan)} makes it "
                    f"depend on the other rows of the request.{suspect(runner.plan)}"
                )


def feature_rows(features: Any, count: int) -> tuple[list[str], list[list[Any]]] | None:
    """The features as rows of values (and column names), when they are one row per input."""
    names: list[str] = []
    if isinstance(features, pd.DataFrame):
        names = [str(c) for c in features.columns]
        values = features.to_numpy(dtype=object)
    elif isinstance(features, np.ndarray) and features.ndim == 2:
        values = features
    elif hasattr(features, "toarray"):
        values = features.toarray()
    else:
        return None
    if len(values) != count:
        return None
    return names, [list(row) for row in values]


def _same_value(a: Any, b: Any) -> bool:
    try:
        if pd.isna(a) and pd.isna(b):
            return True
    except (TypeError, ValueError):
        pass
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=1e-12))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _where(plan: ServingPlan) -> str:
    labels = [
        label
        for step in (plan.preprocess, plan.predict)
        if isinstance(step, (CellsStep, FunctionStep))
        for label in step.labels
    ]
    return f" ({' and '.join(labels)})" if labels else ""


def suspect(plan: ServingPlan) -> str:
    first: FrozenSite | None = plan.suspects[0] if plan.suspects else None
    recorded = "nb2prod records fits and reductions such as .mean() and replays them"
    if first is None:
        return (
            f" {recorded}; look for another computation over all the rows (a groupby "
            "transform, rank, shift, len(df)) and compute it in a train cell instead"
        )
    return (
        f" Likely {first.describe()}: {recorded}, but not this. Compute it in a train cell "
        "(e.g. a lookup table per group) and use the result here"
    )


def nullable_columns(runner: NotebookPath, frame: pd.DataFrame, columns: Sequence[str]) -> set[str]:
    """Columns whose null the serving code handles: a golden row with it null still predicts.

    A column with nulls in training whose null the code cannot handle (it drops such rows, or
    the model raises) is not nullable either: the service answers those rows with a 422 that
    names the field instead of failing inside the model.
    """
    nullable: set[str] = set()
    row = frame.iloc[[0]]
    for column in list(columns)[:MAX_PROBED_COLUMNS]:
        probe = null_row(row, column)
        try:
            predicted = runner.predict_rows(probe, what=f"a sample row with `{column}` null")
        except ContractError:
            continue
        if len(predicted) == 1 and _valid(predicted[0]):
            nullable.add(column)
    return nullable


def null_row(row: pd.DataFrame, column: str) -> pd.DataFrame:
    """``row`` with ``column`` missing, as the service builds a request row holding null."""
    probe = row.copy()
    numeric = pd.api.types.is_numeric_dtype(probe[column]) and probe[column].dtype != bool
    probe[column] = np.nan if numeric else None
    return probe


def _valid(prediction: Any) -> bool:
    """False for a missing prediction (NaN): the model did not handle the null."""
    if isinstance(prediction, float):
        return prediction == prediction
    if isinstance(prediction, list):
        return all(_valid(p) for p in prediction)
    return prediction is not None
