"""The prediction log's records: what a sampled request leaves on the queue, and the JSON
object the writer makes of it.

The hook (prediction_log.py) queues one :class:`PendingRequest` per sampled request: the
request frame's values (long texts cut by :func:`bounded_text`, so a client's 10 MB cell never
waits in memory), its predictions, its id and when it was answered. For a drain of them, a
:class:`RecordBuilder` gives each request's ``inputs`` (the schema's columns but the sensitive
ones, as validated, before preprocessing; all-number drains in one conversion), a
classifier's ``classes`` and ``probabilities`` (one batched model call for the whole drain)
and the record itself; what the writer does with it, and when, is prediction_log.py's.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .card import ModelCard
from .loader import Predictor
from .monitoring.profile import frame_values
from .prediction_log_settings import PredictionLogSettings

__all__ = [
    "MAX_TEXT_CHARS",
    "PendingRequest",
    "Probabilities",
    "RecordBuilder",
    "bounded_text",
]

# The writer's logger: a record's failures read as the prediction log's.
logger = logging.getLogger("nb2prod.prediction_log")

#: Longer client strings are cut to their first characters and their length (on the request
#: path, a slice): a 10 MB cell must not become a 10 MB log line nor sit in the queue.
MAX_TEXT_CHARS = 1024
_CUT_MIN = MAX_TEXT_CHARS - 32

#: ``(classes, one list of probabilities per row)`` for one request.
Probabilities = tuple[list[Any], list[list[float]]]


def _plain(value: Any) -> Any:
    """A JSON-ready cell: NaN, infinities, None, NaT and pd.NA become null, times ISO 8601."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return value


def bounded_text(text: str) -> str:
    """``text``, or for a long one its first characters and its length."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return f"{text[: MAX_TEXT_CHARS - 32]}...[{len(text)} chars]"


@dataclass(frozen=True)
class PendingRequest:
    """One sampled request, as queued on the request path."""

    values: np.ndarray  # the request frame's values (all columns, sensitive ones included)
    predictions: list[Any]
    request_id: str
    created: float  # time.time()


class RecordBuilder:
    """One model's records: which columns are logged, and how a drain becomes records."""

    def __init__(self, settings: PredictionLogSettings, card: ModelCard) -> None:
        self._probability_errors = 0
        columns = card.input_schema["columns"]
        names = [str(column["name"]) for column in columns]
        self._columns = len(names)
        # The frame's columns are the schema's, in order (then ignored ones, never logged).
        self._kept = [
            (pos, name) for pos, name in enumerate(names) if name not in settings.sensitive
        ]
        self._kept_positions = [pos for pos, _ in self._kept]
        self._kept_names = [name for _, name in self._kept]
        self._float_rows = bool(names) and all(
            column.get("dtype") == "float64" and column.get("kind") == "number"
            for column in columns
        )
        # Columns where a client can send free text (everything but numbers, booleans, times),
        # sensitive ones included: never written, but a 10 MB one must not sit in the queue
        # either (a request whose text was cut goes without probabilities).
        self._text_columns = [
            pos
            for pos, column in enumerate(columns)
            if column.get("kind") not in ("number", "integer", "boolean", "datetime")
        ]
        self._static = {
            "model_version": card.model_version,
            "revision": os.environ.get("K_REVISION", ""),
            "sample_rate": settings.sample,
        }

    def queued_values(self, frame: pd.DataFrame) -> np.ndarray:
        """The values to queue for a request frame (on the request path): not the frame, as a
        held frame is many objects for the garbage collector to walk; all-float inputs are one
        block whose to_numpy() is a view; long texts are cut."""
        return frame_values(
            frame, self._float_rows, self._text_columns, MAX_TEXT_CHARS, bounded_text
        )

    def inputs(self, batch: list[PendingRequest]) -> list[list[dict[str, Any]] | None]:
        """Each request's ``inputs`` if the drain converts at once, else None (its record
        converts its own, and reports its own failure)."""
        try:
            return self._float_inputs(batch) or [None] * len(batch)
        except Exception:
            logger.exception("the prediction log could not convert a drain's inputs at once")
            return [None] * len(batch)

    def record(
        self,
        item: PendingRequest,
        inputs: list[dict[str, Any]] | None,
        probabilities: Probabilities | None,
    ) -> dict[str, Any]:
        """The JSON record of one request (``inputs`` and ``probabilities`` from this drain's
        :meth:`inputs` and :meth:`probabilities`)."""
        if inputs is None:
            inputs = [
                {name: _plain(row[pos]) for pos, name in self._kept} for row in item.values.tolist()
            ]
        stamp = dt.datetime.fromtimestamp(item.created, tz=dt.timezone.utc).isoformat()
        record = {
            "request_id": item.request_id,
            "timestamp": stamp,
            **self._static,
            "rows": len(inputs),
            "row_offset": 0,
            "inputs": inputs,
            "predictions": _plain(item.predictions),
        }
        if probabilities is not None:
            record["classes"], record["probabilities"] = probabilities
        return record

    def probabilities(
        self, batch: list[PendingRequest], predictor: Predictor | None
    ) -> tuple[list[Probabilities | None], float | None]:
        """Each request's ``(classes, rows)`` or None, from one call for the whole drain, and
        the thread CPU seconds that call took (None when there was no call), for the writer
        to pace its drains by."""
        found: list[Probabilities | None] = [None] * len(batch)
        if predictor is None or not predictor.has_probabilities or not batch:
            return found, None
        # A cut long text is not what was predicted on: those requests go without.
        chosen = [i for i, item in enumerate(batch) if not self._cut(item.values)]
        if not chosen:
            return found, None
        predictions = [p for i in chosen for p in batch[i].predictions]
        started = time.thread_time()
        try:
            # The queued values include sensitive columns: the model needs them.
            values = np.concatenate([batch[i].values for i in chosen])[:, : self._columns]
            answer = predictor.probabilities(predictor.frames.from_rows(values), predictions)
        except Exception as err:
            self._probability_errors += 1
            if self._probability_errors == 1:  # once: a broken call would flood the log
                # Where, not what: the message of an error in preprocessing may quote the
                # rows' values, sensitive columns included.
                logger.error(
                    "probabilities could not be computed (%s; message withheld, it may quote "
                    "input values); records go without. Traceback:\n%s",
                    type(err).__name__,
                    "".join(traceback.format_tb(err.__traceback__)),
                )
            return found, time.thread_time() - started
        spent = time.thread_time() - started
        if answer is None:
            return found, spent
        classes, rows = answer
        start = 0
        for i in chosen:
            end = start + len(batch[i].values)
            found[i] = (_plain(classes), rows[start:end])
            start = end
        return found, spent

    def _float_inputs(
        self, batch: list[PendingRequest]
    ) -> list[list[dict[str, Any]] | None] | None:
        """Each request's ``inputs`` when every row is finite numbers (the common case), in
        one conversion for the whole drain; None otherwise (each record converts its own)."""
        if not (self._float_rows and batch and all(i.values.dtype == np.float64 for i in batch)):
            return None
        block = np.concatenate([item.values for item in batch])
        if block.shape[1] != len(self._kept):
            block = block[:, self._kept_positions]
        if not np.isfinite(block).all():
            return None  # a NaN or an infinity: _plain makes it null
        names = self._kept_names
        rows = [dict(zip(names, row, strict=True)) for row in block.tolist()]
        found: list[list[dict[str, Any]] | None] = []
        start = 0
        for item in batch:
            found.append(rows[start : start + len(item.values)])
            start += len(item.values)
        return found

    def _cut(self, values: np.ndarray) -> bool:
        """Whether :func:`bounded_text` cut one of these rows' texts."""
        for position in self._text_columns:
            for value in values[:, position]:
                if type(value) is str and len(value) > _CUT_MIN and value.endswith(" chars]"):
                    return True
        return False
