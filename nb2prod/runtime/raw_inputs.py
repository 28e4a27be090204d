"""Which notebook variables receive the request rows, and in what shape.

Kaggle-style notebooks push several frames through the same preprocessing
(``for dataset in [train_df, test_df]: ...``), and the code is not always idempotent, so each
such frame gets its own copy of the request rows, shaped as the frame was when preprocessing
first read it: its columns in its order (a column only that frame had, such as the target,
filled with a value of the training column), or a NumPy array when the raw input was one
(``load_iris(return_X_y=True)``). A list of those frames (``combine = [train_df, test_df]``)
is rebuilt from the copies, so that mutating ``dataset`` in a loop mutates ``train_df``'s copy
exactly as it did in the notebook.

Training (notebook_path.py) works the inputs out from snapshots taken before the first serving
cell ran; the loader binds them for every request. Both use :func:`bind`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ARRAY_COLUMN",
    "RawInput",
    "array_columns",
    "bind",
    "choose_raw_inputs",
    "typical_row",
    "typical_value",
]

#: Column names the schema gives a NumPy raw input: x0, x1, ... (as scikit-learn names them).
ARRAY_COLUMN = "x{}"


@dataclass(frozen=True)
class RawInput:
    """One variable the request rows are bound to."""

    name: str
    kind: str  # "frame" | "array" | "list"
    columns: tuple[str, ...] = ()  # frame: its columns in order; array: the schema names
    fill: dict[str, Any] = field(default_factory=dict)  # frame: columns the request lacks
    dtype: str = ""  # array: the training array's dtype
    members: tuple[str, ...] = ()  # list: the raw inputs it holds, in order
    is_tuple: bool = False
    # A frame whose rows never reach predict (the training frame in a Kaggle notebook): it
    # gets this one typical training row instead of the request's rows, so its own code
    # (often written for training data only, such as ``.astype(int)`` on a column that has no
    # nulls there) runs as it did in training. Training finds these by a probe.
    typical: pd.DataFrame | None = None

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> RawInput:
        """Read ``dataclasses.asdict`` output back (model/state.pkl holds plain data)."""
        return cls(
            name=data["name"],
            kind=data["kind"],
            columns=tuple(data.get("columns", ())),
            fill=dict(data.get("fill", {})),
            dtype=data.get("dtype", ""),
            members=tuple(data.get("members", ())),
            is_tuple=bool(data.get("is_tuple", False)),
            typical=data.get("typical"),
        )


def array_columns(width: int) -> list[str]:
    """The schema's names for the columns of a 2-D NumPy raw input."""
    return [ARRAY_COLUMN.format(i) for i in range(width)]


def bind(inputs: Sequence[RawInput], frame: pd.DataFrame) -> dict[str, Any]:
    """Each raw input's own copy of the request rows ``frame``, as the notebook held it."""
    bound: dict[str, Any] = {}
    for raw in inputs:
        if raw.kind == "array":
            bound[raw.name] = frame.loc[:, list(raw.columns)].to_numpy(dtype=raw.dtype, copy=True)
        elif raw.kind == "frame":
            bound[raw.name] = raw.typical.copy() if raw.typical is not None else _shaped(raw, frame)
    for raw in inputs:
        if raw.kind == "list":
            members = [bound[name] for name in raw.members]
            bound[raw.name] = tuple(members) if raw.is_tuple else members
    return bound


def _shaped(raw: RawInput, frame: pd.DataFrame) -> pd.DataFrame:
    if not raw.columns:
        # The only raw input: the request's own frame (built for this request, so filled in
        # place). The schema's ignored columns arrive missing; the code may still read them.
        for column, value in raw.fill.items():
            frame[column] = value
        return frame
    copy = frame.copy()
    for column, value in raw.fill.items():
        copy[column] = value
    present = [c for c in raw.columns if c in copy.columns]
    return copy.loc[:, present]


def choose_raw_inputs(
    snapshots: dict[str, Any], features: Any = None
) -> tuple[list[RawInput], pd.DataFrame] | None:
    """The raw inputs among the frames/arrays serving code reads, and the primary one as a frame.

    The primary input is the frame most of whose columns reach the ``features`` predict reads
    (a lookup table merged in contributes few), then the biggest (the training rows); another
    frame is a raw input too when
    it shares at least half of its columns with the primary (a test frame, not a lookup table),
    another array when it has the primary's width. The request carries the columns all raw
    frames share. None when no frame or 2-D array was read.
    """
    data = {
        name: value
        for name, value in snapshots.items()
        if isinstance(value, pd.DataFrame) or (isinstance(value, np.ndarray) and value.ndim == 2)
    }
    if not data:
        return None
    order = list(data)
    primary_name = max(
        data, key=lambda n: (_reach(data[n], features), len(data[n]), -order.index(n))
    )
    primary = data[primary_name]
    if isinstance(primary, np.ndarray):
        names = [n for n, v in data.items() if isinstance(v, np.ndarray)]
        names = [n for n in names if data[n].shape[1] == primary.shape[1]]
        columns = array_columns(primary.shape[1])
        inputs = [
            RawInput(name=n, kind="array", columns=tuple(columns), dtype=str(data[n].dtype))
            for n in names
        ]
        frame = pd.DataFrame(primary, columns=columns)
    else:
        frames = {n: v for n, v in data.items() if isinstance(v, pd.DataFrame)}
        names = [n for n, v in frames.items() if _shares_columns(v, primary)]
        shared = [c for c in primary.columns if all(c in frames[n].columns for n in names)]
        inputs = [_frame_input(n, frames[n], shared, len(names) > 1) for n in names]
        frame = primary.loc[:, shared]
    inputs.extend(_lists(snapshots, set(names)))
    return inputs, frame


def _reach(value: Any, features: Any) -> int:
    """How many of ``value``'s columns appear among the features' columns."""
    if not isinstance(value, pd.DataFrame) or not isinstance(features, pd.DataFrame):
        return 0
    names = set(map(str, features.columns))
    return sum(str(c) in names for c in value.columns)


def _shares_columns(frame: pd.DataFrame, primary: pd.DataFrame) -> bool:
    if frame is primary:
        return True
    common = len(set(map(str, frame.columns)) & set(map(str, primary.columns)))
    return common * 2 >= min(len(frame.columns), len(primary.columns)) > 0


def _frame_input(name: str, frame: pd.DataFrame, shared: list[Any], several: bool) -> RawInput:
    if not several:
        return RawInput(name=name, kind="frame")
    fill = {column: _typical(frame[column]) for column in frame.columns if column not in shared}
    return RawInput(name=name, kind="frame", columns=tuple(frame.columns), fill=fill)


def typical_row(frame: pd.DataFrame) -> pd.DataFrame:
    """One row of ``frame``'s most common value per column, with its dtypes (an aggregate,
    not a training row)."""
    values = {}
    for column in frame.columns:
        counts = frame[column].value_counts(dropna=True)
        values[column] = [counts.index[0] if len(counts) else np.nan]
    row = pd.DataFrame(values, columns=frame.columns)
    for column, dtype in frame.dtypes.items():
        try:
            row[column] = row[column].astype(dtype)
        except (TypeError, ValueError):
            continue
    return row


def typical_value(column: pd.Series) -> Any:
    """The column's most common training value (missing for an all-missing column)."""
    counts = column.value_counts(dropna=True)
    return counts.index[0] if len(counts) else np.nan


def _typical(column: pd.Series) -> Any:
    """A value of the training column, so code like ``.astype(int)`` on it still runs."""
    present = column.dropna()
    return present.iloc[0] if len(present) else np.nan


def _lists(snapshots: dict[str, Any], raw_names: set[str]) -> list[RawInput]:
    """Lists/tuples whose items are raw inputs (``combine = [train_df, test_df]``)."""
    identities = {id(snapshots[name]): name for name in raw_names}
    lists = []
    for name, value in snapshots.items():
        if isinstance(value, (list, tuple)) and value and all(id(v) in identities for v in value):
            lists.append(
                RawInput(
                    name=name,
                    kind="list",
                    members=tuple(identities[id(v)] for v in value),
                    is_tuple=isinstance(value, tuple),
                )
            )
    return lists
