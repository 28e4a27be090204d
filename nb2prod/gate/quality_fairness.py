"""Fairness of one model version over segment columns, through fairlearn.

Per-group metrics come from ``fairlearn.metrics.MetricFrame``; the gaps from fairlearn's
``demographic_parity_difference`` and ``equalized_odds_difference`` (largest gap between
groups). Those two are defined on a binary outcome: for a binary classifier it is the
positive class; for a multiclass one only with ``--positive-label`` (that class against the
rest); for a regressor they are null and a note says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .quality_metrics import REGRESSION, Task, metric_functions

__all__ = ["MISSING_GROUP", "fairness"]

#: The group of rows whose segment value was not logged (null).
MISSING_GROUP = "(missing)"


def fairness(
    frame: pd.DataFrame,
    by: Sequence[str],
    task: Task,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    notes: list[str],
) -> dict[str, Any]:
    """The report's ``fairness`` entry for one version's joined rows."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        equalized_odds_difference,
        selection_rate,
    )

    segments = frame[list(by)].astype(object).where(frame[list(by)].notna(), MISSING_GROUP)
    segments = segments.astype(str)
    per_row = {
        name: _two_argument(function)
        for name, function in metric_functions(task, with_scores=False).items()
    }
    binary_true = binary_pred = None
    if task.positive is not None and task.kind != REGRESSION:
        binary_true = (y_true == task.positive).astype(int)
        binary_pred = (y_pred == task.positive).astype(int)
    metrics: dict[str, Any] = {**per_row, "count": count}
    if binary_true is not None:
        metrics["selection_rate"] = lambda t, p: selection_rate(
            t == task.positive, p == task.positive
        )
    sensitive = segments if len(by) > 1 else segments[by[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a group with one class: undefined metrics are NaN
        table = MetricFrame(
            metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive
        ).by_group
        parity = odds = None
        if binary_true is not None:
            parity = demographic_parity_difference(
                binary_true, binary_pred, sensitive_features=sensitive
            )
            odds = equalized_odds_difference(binary_true, binary_pred, sensitive_features=sensitive)
    if binary_true is None:
        notes.append(_why_no_differences(task))
    groups = []
    for key, values in table.iterrows():
        group = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        rows = int(values.pop("count"))
        groups.append(
            {"group": group, "rows": rows, "metrics": {k: _number(v) for k, v in values.items()}}
        )
    return {
        "by": list(by),
        "groups": groups,
        "demographic_parity_difference": _number(parity),
        "equalized_odds_difference": _number(odds),
    }


def _two_argument(function: Any) -> Any:
    """A quality metric as fairlearn calls it: f(y_true, y_pred)."""
    return lambda y_true, y_pred: function(np.asarray(y_true), np.asarray(y_pred), None)


def _why_no_differences(task: Task) -> str:
    if task.kind == REGRESSION:
        return (
            "fairness: demographic parity and equalized odds differences are defined for a "
            "binary outcome, so they are null for a regressor; compare the per-group errors"
        )
    return (
        "fairness: demographic parity and equalized odds differences are defined for a binary "
        f"outcome; this classifier has {len(task.classes)} classes, so they are null. Pass "
        "--positive-label CLASS to measure one class against the rest"
    )


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
