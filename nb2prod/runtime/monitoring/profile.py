"""The reference profile: what the training data looked like, for drift detection in serving.

Training computes :func:`reference_profile` from the raw frame the notebook trained on (never
from serving data) and stores it in the model card as ``reference_profile``. Serving compares a
window of recent requests against it (``drift.py``). Both sides bucket values with the same
helpers here (:func:`bin_counts`, :func:`level_key`), so a value lands in the same bin in both.

The card travels into the image, so the profile holds summaries, never training records or
raw values: bins, shares and quantiles for numbers, frequent levels for categories.

Per column (and for the predictions):

- numeric (``number``/``integer`` kinds, numeric predictions): the reference deciles as inner
  bin edges, with open-ended outer bins ``(-inf, e1]`` ... ``(e9, inf)``; each bin's share; the
  share of missing values; and the 1st to 99th percentiles (:data:`QUANTILE_PROBS`), from
  which ``drift.py`` rebuilds the reference distribution for the KS test. The minimum and
  maximum are left out on purpose: extremes are the values most likely to single out one
  person (the oldest patient), and the KS test barely looks at the outer 1%.
- categorical (``string``/``category``/``boolean``, label predictions): level counts; the
  :data:`MAX_LEVELS` most frequent levels seen at least :data:`MIN_LEVEL_COUNT` times, the
  rest counted together as ``other`` (a level seen once or twice is a raw value, e.g. a name).
  Levels are :func:`level_key` texts, at most :data:`MAX_LEVEL_CHARS` characters.
- skipped: datetimes (time always moves on, so they always "drift") and vector predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MAX_LEVELS",
    "MAX_LEVEL_CHARS",
    "MIN_LEVEL_COUNT",
    "PROFILE_VERSION",
    "QUANTILE_PROBS",
    "bin_counts",
    "bounded_text",
    "level_counts",
    "level_key",
    "numeric_values",
    "reference_profile",
    "values_profile",
]

PROFILE_VERSION = 2
#: The percentiles kept per numeric column (1% to 99%): the KS test's reference.
QUANTILE_PROBS = np.linspace(0.01, 0.99, 99)
#: Categorical columns keep the counts of their this-many most frequent levels.
MAX_LEVELS = 50
#: Levels seen fewer times than this in training are pooled into ``other``.
MIN_LEVEL_COUNT = 5
#: A level is compared (and kept, and reported) as at most this many characters.
MAX_LEVEL_CHARS = 64
_PREFIX_CHARS = 40
_QUANTILES = np.linspace(0.1, 0.9, 9)
_NUMERIC_KINDS = {"number", "integer"}
_CATEGORICAL_KINDS = {"string", "category", "boolean"}


def frame_values(
    frame: pd.DataFrame,
    float_rows: bool,
    text_columns: Sequence[int],
    limit: int = MAX_LEVEL_CHARS,
    bound: Callable[[str], str] | None = None,
) -> np.ndarray:
    """A request frame's values, to queue off the request path: a view for all-float inputs
    (one block); otherwise an object copy whose strings longer than ``limit`` in
    ``text_columns`` are cut by ``bound`` (default :func:`bounded_text`), so that a client's
    10 MB cell is never kept. O(text cells), never O(text length)."""
    if float_rows:
        return frame.to_numpy()
    cut = bound or bounded_text
    values = frame.to_numpy(dtype=object)  # a copy: cutting texts leaves the frame be
    for position in text_columns:
        column = values[:, position]
        for row, value in enumerate(column):
            if type(value) is str and len(value) > limit:
                column[row] = cut(value)
    return values


def bounded_text(text: str) -> str:
    """``text``, or for a long one its first 40 characters and its length: at most 64 chars.

    Cheap enough for the request path (a slice, never a hash of a 10 MB string), and a fixed
    point (a bounded text stays as it is), so serving and training agree on a long level.
    """
    if len(text) <= MAX_LEVEL_CHARS:
        return text
    return f"{text[:_PREFIX_CHARS]}...[{len(text)} chars]"


def level_key(value: Any) -> str | None:
    """The level a value counts as: its (bounded) text; ``None`` for missing values."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():  # 3.0 and 3 are the same level
            return str(int(value))
    return bounded_text(value if isinstance(value, str) else str(value))


def numeric_values(values: Iterable[Any] | pd.Series | np.ndarray) -> np.ndarray:
    """Values as float64; anything that is not a number becomes NaN (missing)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return values.astype(np.float64, copy=False)
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    numbers = pd.to_numeric(series, errors="coerce")
    return np.asarray(numbers, dtype=np.float64)


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts of non-missing ``values`` in the bins ``(-inf, e1], (e1, e2], ..., (ek, inf)``."""
    present = values[~np.isnan(values)]
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), present, side="left")
    return np.bincount(index, minlength=len(edges) + 1)


def level_counts(values: Iterable[Any]) -> tuple[dict[str, int], int]:
    """Counts per level, and the number of missing values."""
    counts: dict[str, int] = {}
    missing = 0
    for value in values:
        key = level_key(value)
        if key is None:
            missing += 1
        else:
            counts[key] = counts.get(key, 0) + 1
    return counts, missing


def _numeric_profile(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return {"kind": "skipped", "reason": "no values in the training data"}
    edges = [float(edge) for edge in np.unique(np.quantile(present, _QUANTILES))]
    counts = bin_counts(present, edges)
    return {
        "kind": "numeric",
        "count": int(values.size),
        "present": int(present.size),
        "edges": edges,
        "shares": [float(count) / present.size for count in counts],
        "missing_share": float(1 - present.size / values.size),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "quantiles": [float(value) for value in np.quantile(present, QUANTILE_PROBS)],
    }


def _categorical_profile(values: Iterable[Any]) -> dict[str, Any]:
    counts, missing = level_counts(values)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = [(level, count) for level, count in ranked[:MAX_LEVELS] if count >= MIN_LEVEL_COUNT]
    return {
        "kind": "categorical",
        "count": sum(counts.values()) + missing,
        "levels": [level for level, _ in kept],
        "counts": [count for _, count in kept],
        # Levels beyond the kept ones: a serving value not in `levels` may be one of them.
        "other": sum(counts.values()) - sum(count for _, count in kept),
        "missing": missing,
    }


def values_profile(kind: str, values: Any) -> dict[str, Any]:
    """The profile of one column's (or the predictions') values, by schema/output kind."""
    if kind in _NUMERIC_KINDS:
        return _numeric_profile(numeric_values(values))
    if kind in _CATEGORICAL_KINDS:
        return _categorical_profile(values)
    return {"kind": "skipped", "reason": f"{kind} values are not compared"}


def reference_profile(
    raw: pd.DataFrame, schema: Mapping[str, Any], predictions: list[Any], output_kind: str
) -> dict[str, Any]:
    """The card's ``reference_profile``: every schema column of ``raw`` and the predictions.

    ``raw`` is the training input; ``predictions`` are the notebook's own predictions for (a
    sample of) it; ``output_kind`` is the card's ``output.kind`` (label, number or vector).
    """
    columns = {
        column["name"]: values_profile(column["kind"], raw[column["name"]])
        for column in schema["columns"]
    }
    prediction_kind = {"label": "string", "number": "number"}.get(output_kind, output_kind)
    return {
        "version": PROFILE_VERSION,
        "rows": len(raw),
        "columns": columns,
        "predictions": (
            values_profile(prediction_kind, predictions)
            if predictions
            else {"kind": "skipped", "reason": "no reference predictions"}
        ),
        "prediction_rows": len(predictions),
    }
