"""Quality metrics of labelled predictions, from scikit-learn, with bootstrap intervals.

Classification: accuracy, precision, recall and F1 (for the positive class of a binary task,
macro-averaged over the classes present otherwise), and ROC AUC when the log holds
probabilities and their classes. Regression: MAE, RMSE and R². Each comes with a 95%
percentile-bootstrap interval from a fixed-seed resample of the rows, so the same rows give
the same report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "Task",
    "bucket_width",
    "detect_task",
    "metric_functions",
    "over_time",
    "with_intervals",
]

CLASSIFICATION = "classification"
REGRESSION = "regression"
#: A numeric label column with more distinct values than this is taken for a regression target.
MAX_CLASSES = 20
#: Over-time buckets: the smallest of these widths that gives at most MAX_BUCKETS buckets.
BUCKET_WIDTHS = ("1min", "5min", "15min", "1h", "6h", "1D", "7D", "30D")
MAX_BUCKETS = 24

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


@dataclass(frozen=True)
class Task:
    """What is being scored: the kind, and for classification the classes and positive one."""

    kind: str
    classes: tuple[Any, ...] = ()
    positive: Any = None  # binary tasks (or --positive-label): the class precision is about

    @property
    def binary(self) -> bool:
        """Two classes (or fewer seen) and a positive one: precision is about that class."""
        return self.kind == CLASSIFICATION and self.positive is not None and len(self.classes) <= 2


def detect_task(labels: pd.Series, predictions: pd.Series, output_kind: str | None) -> str:
    """``classification`` or ``regression``: the card's output kind when known, else numeric
    labels with fractions or many distinct values mean regression."""
    if output_kind == "number":
        return REGRESSION
    if output_kind in ("label", "vector"):
        return CLASSIFICATION
    both = pd.concat([labels, predictions], ignore_index=True)
    numbers = pd.to_numeric(both, errors="coerce")
    if numbers.isna().any() or both.map(lambda v: isinstance(v, bool)).any():
        return CLASSIFICATION
    fractional = bool((numbers != numbers.round()).any())
    many = labels.nunique() > MAX_CLASSES
    return REGRESSION if fractional or many else CLASSIFICATION


def aligned(labels: pd.Series, predictions: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions as comparable arrays: numbers when both sides are numbers (a CSV's
    1 and a log's 1.0 are one class), text otherwise."""
    y_true = pd.to_numeric(labels, errors="coerce")
    y_pred = pd.to_numeric(predictions, errors="coerce")
    if kind == REGRESSION or (not y_true.isna().any() and not y_pred.isna().any()):
        return y_true.to_numpy(np.float64), y_pred.to_numpy(np.float64)
    return labels.astype(str).to_numpy(object), predictions.astype(str).to_numpy(object)


def metric_functions(task: Task, with_scores: bool) -> dict[str, Metric]:
    """The metrics of ``task``: name -> f(y_true, y_pred, scores); scores are the positive
    class's probability (binary) or each class's (multiclass), when logged."""
    from sklearn import metrics as m

    if task.kind == REGRESSION:
        return {
            "mae": lambda t, p, s: m.mean_absolute_error(t, p),
            "rmse": lambda t, p, s: math.sqrt(m.mean_squared_error(t, p)),
            "r2": lambda t, p, s: m.r2_score(t, p) if len(t) > 1 else math.nan,
        }
    if task.binary:
        average: dict[str, Any] = {"average": "binary", "pos_label": task.positive}
    else:
        # Over the classes present in the rows (scikit-learn's default): a class that a model
        # version, a time bucket or a group never saw nor predicted is not a zero in the mean.
        average = {"average": "macro"}
    found: dict[str, Metric] = {
        "accuracy": lambda t, p, s: m.accuracy_score(t, p),
        "precision": lambda t, p, s: m.precision_score(t, p, zero_division=0, **average),
        "recall": lambda t, p, s: m.recall_score(t, p, zero_division=0, **average),
        "f1": lambda t, p, s: m.f1_score(t, p, zero_division=0, **average),
    }
    if with_scores:
        found["roc_auc"] = lambda t, p, s: _roc_auc(task, t, s)
    return found


def _roc_auc(task: Task, y_true: np.ndarray, scores: np.ndarray | None) -> float:
    from sklearn.metrics import roc_auc_score

    present = set(y_true.tolist())
    if scores is None or len(present) < 2:
        return math.nan  # undefined with one class present
    if task.binary:
        return float(roc_auc_score(y_true == task.positive, scores))
    # One class against the rest, averaged over the classes the labels hold: what
    # roc_auc_score(multi_class="ovr") computes, without its demand that each row's scores sum
    # to 1 (they don't when the model knows classes that these rows never show).
    return float(
        np.mean(
            [
                roc_auc_score(y_true == value, scores[:, k])
                for k, value in enumerate(task.classes)
                if value in present
            ]
        )
    )


def with_intervals(
    task: Task,
    functions: dict[str, Metric],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None,
    resamples: int,
    seed: int,
) -> dict[str, dict[str, float | None]]:
    """Each metric's value on the rows (scikit-learn), and its 95% percentile-bootstrap
    interval over ``resamples`` draws of the rows with replacement, from ``seed``.

    Calling scikit-learn a thousand times per metric takes minutes, so each draw's metrics
    come from its confusion matrix (classification) or its errors (regression) with the same
    definitions (``zero_division=0``; ROC AUC as the Mann-Whitney statistic, which is what
    ``roc_auc_score`` computes, one class against the rest averaged for multiclass).
    """
    values = point_values(functions, y_true, y_pred, scores)
    n = len(y_true)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in functions}
    prepared = _Prepared(task, y_true, y_pred, scores)
    for _ in range(resamples if n else 0):
        for name, value in prepared.metrics(rng.integers(0, n, n)).items():
            if name in draws:
                draws[name].append(value)
    result: dict[str, dict[str, float | None]] = {}
    for name, value in values.items():
        finite = np.asarray([v for v in draws[name] if math.isfinite(v)])
        low = _finite(np.percentile(finite, 2.5)) if finite.size else None
        high = _finite(np.percentile(finite, 97.5)) if finite.size else None
        result[name] = {"value": value, "low": low, "high": high}
    return result


class _Prepared:
    """The rows coded once, so that each bootstrap draw costs a few numpy calls."""

    def __init__(
        self, task: Task, y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None
    ) -> None:
        self.task = task
        self.y_true, self.y_pred, self.scores = y_true, y_pred, scores
        if task.kind == REGRESSION:
            return
        index = {value: i for i, value in enumerate(task.classes)}
        self.k = len(task.classes)
        true_codes = np.asarray([index[v] for v in y_true.tolist()], dtype=np.int64)
        pred_codes = np.asarray([index[v] for v in y_pred.tolist()], dtype=np.int64)
        self.true_codes = true_codes
        self.pairs = true_codes * self.k + pred_codes

    def metrics(self, rows: np.ndarray) -> dict[str, float]:
        if self.task.kind == REGRESSION:
            return _regression_metrics(self.y_true[rows], self.y_pred[rows])
        matrix = np.bincount(self.pairs[rows], minlength=self.k * self.k).reshape(self.k, -1)
        found = _confusion_metrics(matrix, self.task)
        if self.scores is not None:
            found["roc_auc"] = _rank_auc(self.task, self.true_codes[rows], self.scores[rows])
        return found


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom, 0 where bottom is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros_like(top, dtype=np.float64)
    np.divide(top, bottom, out=out, where=bottom > 0)
    return out


def _confusion_metrics(matrix: np.ndarray, task: Task) -> dict[str, float]:
    """accuracy, precision, recall, f1 from a confusion matrix (rows: truth, columns:
    prediction), for the positive class (binary) or macro-averaged."""
    tp = np.diag(matrix).astype(np.float64)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    if task.binary:
        k = task.classes.index(task.positive)
        precision, recall, f1 = precision[k : k + 1], recall[k : k + 1], f1[k : k + 1]
    else:  # macro over the classes present in the draw, as metric_functions has it
        present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
        precision, recall, f1 = precision[present], recall[present], f1[present]
    total = matrix.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else math.nan,
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
    }


def _rank_auc(task: Task, true_codes: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half), as roc_auc_score has it."""
    from scipy.stats import rankdata

    def auc(positive: np.ndarray, score: np.ndarray) -> float:
        n1 = int(positive.sum())
        n0 = len(positive) - n1
        if not n1 or not n0:
            return math.nan
        ranks = rankdata(score)
        return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))

    if task.binary:
        return auc(true_codes == task.classes.index(task.positive), scores)
    present = np.unique(true_codes)
    if len(present) < 2:
        return math.nan
    return float(np.mean([auc(true_codes == k, scores[:, k]) for k in present]))


def _regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    errors = y_true - y_pred
    squares = float(np.mean(errors**2))
    spread = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(errors))),
        "rmse": math.sqrt(squares),
        "r2": 1 - float(np.sum(errors**2)) / spread if spread > 0 else math.nan,
    }


def point_values(
    functions: dict[str, Metric],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None,
) -> dict[str, float | None]:
    """Each metric's value on the rows, without an interval."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: _finite(f(y_true, y_pred, scores)) for name, f in functions.items()}


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def bucket_width(first: pd.Timestamp, last: pd.Timestamp) -> str:
    """The narrowest of :data:`BUCKET_WIDTHS` that cuts ``first``..``last`` in at most
    :data:`MAX_BUCKETS` buckets."""
    span = last - first
    if pd.isna(span):  # no timestamps
        return BUCKET_WIDTHS[-1]
    for width in BUCKET_WIDTHS:
        if span / pd.Timedelta(width) < MAX_BUCKETS:
            return width
    return BUCKET_WIDTHS[-1]


def over_time(
    timestamps: pd.Series,
    functions: dict[str, Metric],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None,
    width: str,
) -> list[dict[str, Any]]:
    """The metrics per time bucket of ``width`` (buckets without rows are left out, and so
    are rows without a timestamp)."""
    starts = timestamps.dt.floor(width)
    buckets = []
    for begin in sorted(starts.dropna().unique()):
        mask = (starts == begin).to_numpy()
        buckets.append(
            {
                "start": begin.isoformat(),
                "end": (begin + pd.Timedelta(width)).isoformat(),
                "rows": int(mask.sum()),
                "metrics": point_values(
                    functions,
                    y_true[mask],
                    y_pred[mask],
                    None if scores is None else scores[mask],
                ),
            }
        )
    return buckets


def positive_class(classes: Sequence[Any], chosen: Any = None) -> Any:
    """The positive class: ``chosen`` (--positive-label) matched to a class, else for two
    classes the one a binary model calls positive (1, True, or the second in sorted order)."""
    if chosen is not None:
        for value in classes:
            if str(value) == str(chosen) or _same_number(value, chosen):
                return value
        return None
    if len(classes) != 2:
        return None
    for value in classes:
        if _same_number(value, 1):
            return value
    return sorted(classes, key=str)[-1]


def _same_number(value: Any, other: Any) -> bool:
    try:
        return float(value) == float(other)
    except (TypeError, ValueError):
        return False
