"""Logged predictions joined with labels that arrived later: the rows every quality job reads.

:func:`join` matches the frames :mod:`.log_reader` reads (:func:`.log_reader.load_predictions`
and :func:`.log_reader.load_labels`). With the key ``request_id`` a label file carrying a
``row`` column joins on (request_id, row); without one it joins one-row requests only, and
refuses a request id that names a multi-row request. Any other key is an input column (many
predictions may share one label).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import ConfigError
from .log_reader import LABEL_COLUMN, PREDICTION_COLUMNS, REQUEST_KEY, ROW_COLUMN

__all__ = ["Joined", "join"]

#: The join's own column, named so that no input column is overwritten by it.
_JOIN_KEY = "__nb2prod_join_key__"


@dataclass(frozen=True)
class Joined:
    """Predictions that found their label (``frame``: the prediction columns plus ``label``),
    and how many rows each side had and matched (``counts``)."""

    frame: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def join(predictions: pd.DataFrame, labels: pd.DataFrame, key: str) -> Joined:
    """The predictions that have a label, with it, and the counts of each side (see the module
    docstring for how ``key`` matches); ConfigError for an unusable key or duplicate labels."""
    if key not in predictions.columns:
        logged = [c for c in predictions.columns if c not in PREDICTION_COLUMNS]
        raise ConfigError(
            f"--key {key!r} is not a column of the logged predictions "
            f"(request_id or an input: {', '.join(map(str, logged[:12])) or 'none'})",
            hint="Use --key request_id (the X-Request-ID each request carried) or an input "
            "column that identifies the row; sensitive columns are never logged.",
        )
    on = [key, ROW_COLUMN] if key == REQUEST_KEY and ROW_COLUMN in labels.columns else [key]
    if on == [REQUEST_KEY]:
        _refuse_multi_row(predictions, labels)
    left = predictions.assign(**{_JOIN_KEY: _key_text(predictions[key])})
    right = labels.assign(**{_JOIN_KEY: _key_text(labels[key])})[[_JOIN_KEY, *on[1:], LABEL_COLUMN]]
    duplicated = right.duplicated(subset=[_JOIN_KEY, *on[1:]], keep=False)
    if duplicated.any():
        example = right.loc[duplicated, _JOIN_KEY].iloc[0]
        raise ConfigError(
            f"the labels hold {int(duplicated.sum())} rows for keys labelled more than once "
            f"(e.g. {key}={example})",
            hint="Keep one label per key (per request_id and row); drop the older ones.",
        )
    keys = [_JOIN_KEY, *on[1:]]
    merged = left.merge(right, on=keys, how="inner", validate="many_to_one")
    frame = merged.drop(columns=_JOIN_KEY).reset_index(drop=True)
    matched_labels = right.merge(left[keys].drop_duplicates(), on=keys, how="inner")
    counts = {
        "logged": len(predictions),
        "labelled": len(labels),
        "joined": len(frame),
        "unmatched_labels": len(labels) - len(matched_labels),
        "unmatched_predictions": len(predictions) - len(frame),
    }
    return Joined(frame=frame, counts=counts)


def _refuse_multi_row(predictions: pd.DataFrame, labels: pd.DataFrame) -> None:
    """A label by request_id alone cannot say which row of a multi-row request it is for."""
    sizes = predictions.groupby("request_id")["row"].nunique()
    multi = set(sizes.index[sizes > 1])
    clash = [rid for rid in _key_text(labels[REQUEST_KEY]) if rid in multi]
    if clash:
        raise ConfigError(
            f"{len(clash)} label(s) name a request that predicted several rows "
            f"(e.g. request_id={clash[0]}, {int(sizes[clash[0]])} rows), and the labels have "
            "no 'row' column",
            hint="Add a 'row' column (0-based index of the row within its request), or key "
            "the labels on an input column that identifies each row (--key COL).",
        )


def _key_text(values: pd.Series) -> pd.Series:
    """Keys as text both sides agree on: 7, 7.0 and "7" are one key; text stays as is."""

    def text(value: Any) -> str:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return str(int(value))
        if hasattr(value, "item"):
            return text(value.item())
        return str(value)

    return values.map(text).astype(str)
