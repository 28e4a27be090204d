"""Which raw columns serving never needs: the probe behind the request schema.

Training runs the notebook's serving code (notebook_path.py) on the golden rows with one column
changed at a time; a column whose change leaves the features as they were (the target, an id, a
leftover) is left out of the request schema, and serving fills it with missing values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["probe_same"]


def probe_same(
    features: Callable[[pd.DataFrame], Any],
    predict_rows: Callable[..., list[Any]],
    training: pd.DataFrame,
    frame: pd.DataFrame,
    column: Any,
    expected: list[Any],
) -> bool:
    """True when serving never needs ``column`` (the target, an id, a leftover).

    The probe gives every row another value of the column, taken from the training rows:
    the column is unused when the features stay the same. Not a blank or a dropped column:
    imputation (``fillna(mode)``) and replayed dummy columns (a missing level is all zeros)
    would hide a feature behind those. Features nb2prod can't compare fall back to the
    predictions.
    """
    probe = _altered(frame, column, training)
    if probe is None:
        return False
    try:
        same = _same_features(features(frame), features(probe))
        if same is None:
            same = predict_rows(probe, what="probe rows") == expected
    except Exception:  # the code can't take another value there: it reads the column
        return False
    return bool(same)


def _altered(frame: pd.DataFrame, column: Any, training: pd.DataFrame) -> pd.DataFrame | None:
    """``frame`` with each row's ``column`` set to another training value of it."""
    source = training[column] if column in training.columns else frame[column]
    levels = list(source.value_counts(dropna=True).index[:2])
    if not levels:
        return None
    probe = frame.copy()
    values = []
    for value in probe[column]:
        other = levels[1] if len(levels) > 1 and _equal(value, levels[0]) else levels[0]
        values.append(other if not _equal(value, other) else None)
    if all(v is None for v in values):
        return None  # a constant column: nothing to tell by
    probe[column] = pd.Series(values, index=probe.index, dtype=object).astype(
        frame[column].dtype, errors="ignore"
    )
    return probe


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _same_features(a: Any, b: Any) -> bool | None:
    """Whether two preprocess outputs are equal; None when nb2prod can't compare them."""
    if isinstance(a, (pd.DataFrame, pd.Series)) and isinstance(b, type(a)):
        return bool(a.equals(b))
    a, b = _dense(a), _dense(b)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.shape != b.shape:
            return False
        try:
            return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
        except TypeError:
            return bool(np.array_equal(a, b))
    return None


def _dense(value: Any) -> Any:
    """An array for matrices nb2prod can read: scipy sparse, xgboost's DMatrix."""
    if hasattr(value, "toarray"):
        return value.toarray()
    get_data = getattr(value, "get_data", None)
    if callable(get_data):
        try:
            return np.asarray(get_data().toarray())
        except Exception:
            return value
    return value
