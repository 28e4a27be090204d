"""Live quality: ground-truth labels joined to the predictions the service made.

``/predict`` answers carry an ``X-Request-ID``; the monitor remembers each request's predictions
in a bounded store (:class:`PredictionStore`, oldest requests evicted first). ``POST /feedback``
later sends the true labels for a request id; :class:`LiveQuality` scores them against what was
predicted, over a window of the most recent labelled rows: accuracy for label outputs, mean
absolute error for numeric outputs.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .profile import level_key

__all__ = [
    "FeedbackError",
    "LiveQuality",
    "PredictionStore",
    "known_classes",
    "parse_feedback",
    "quality_metric",
]

#: A 422 for an unknown label lists at most this many of the known classes.
_CLASSES_SHOWN = 50


def quality_metric(output_kind: str) -> str | None:
    """The live quality metric for an output kind: accuracy (label), mae (number), or None."""
    return {"label": "accuracy", "number": "mae"}.get(output_kind)


def known_classes(prediction_profile: Mapping[str, Any]) -> list[str] | None:
    """The labels a classifier can produce: its reference predictions' levels, when complete.

    None when the profile is not categorical or bucketed some levels as ``other``: then any
    string or finite number is taken as a label.
    """
    if prediction_profile.get("kind") != "categorical" or prediction_profile.get("other"):
        return None
    return [str(level) for level in prediction_profile.get("levels") or []] or None


class FeedbackError(ValueError):
    """Raised when a feedback item cannot be used; ``status`` is the HTTP answer (404 or 422)."""

    def __init__(self, message: str, status: int = 422, unknown: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.unknown = unknown or []


@dataclass(frozen=True)
class FeedbackItem:
    """Labels for one request: one per predicted row, in the order of the request's rows."""

    request_id: str
    labels: list[Any]


def parse_feedback(body: Any) -> list[FeedbackItem]:
    """``{"request_id", "label"}``, ``{"request_id", "labels": [...]}``, or a list of those."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise FeedbackError("send at least one {'request_id': ..., 'label': ...} item")
    parsed: list[FeedbackItem] = []
    for number, item in enumerate(items):
        where = f"item {number}" if isinstance(body, list) else "the body"
        if not isinstance(item, Mapping) or not isinstance(item.get("request_id"), str):
            raise FeedbackError(f"{where} needs a string 'request_id' (the X-Request-ID)")
        if ("label" in item) == ("labels" in item):
            raise FeedbackError(f"{where} needs exactly one of 'label' or 'labels' (a list)")
        labels = [item["label"]] if "label" in item else item["labels"]
        if not isinstance(labels, list) or not labels:
            raise FeedbackError(f"{where}: 'labels' must be a non-empty list, one per row")
        parsed.append(FeedbackItem(item["request_id"], labels))
    return parsed


class PredictionStore:
    """Predictions by request id, at most ``max_rows`` rows in all (oldest requests go first).

    ``remember`` is on the request path: a dict insert under an uncontended lock.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._rows = 0
        self._by_id: OrderedDict[str, list[Any]] = OrderedDict()
        self._reused: set[str] = set()  # ids several /predict calls used (a subset of _by_id)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def rows(self) -> int:
        """How many predicted rows are held."""
        return self._rows

    def remember(self, request_id: str, predictions: list[Any]) -> None:
        """Keep a request's predictions; a repeated id is marked so its feedback gets a 409."""
        with self._lock:
            old = self._by_id.pop(request_id, None)
            if old is not None:
                self._rows -= len(old)
                # Labels for this id could belong to either request: never join them silently.
                self._reused.add(request_id)
            self._by_id[request_id] = predictions
            self._rows += len(predictions)
            while self._rows > self.max_rows and self._by_id:
                evicted_id, evicted = self._by_id.popitem(last=False)
                self._rows -= len(evicted)
                self._reused.discard(evicted_id)

    def take(self, items: list[FeedbackItem]) -> list[tuple[list[Any], list[Any]]]:
        """(predictions, labels) per item, removed from the store; all or nothing.

        Unknown, expired or already labelled ids raise a 404 FeedbackError, ids used by several
        requests a 409; a label count that does not match the request's rows raises a 422.
        """
        with self._lock:
            unknown = [item.request_id for item in items if item.request_id not in self._by_id]
            if unknown:
                raise FeedbackError(
                    f"unknown request_id(s) {unknown}: never predicted here, already labelled, "
                    f"or expired (the store keeps the last {self.max_rows} predicted rows)",
                    status=404,
                    unknown=unknown,
                )
            reused = [item.request_id for item in items if item.request_id in self._reused]
            if reused:
                raise FeedbackError(
                    f"request_id(s) {reused} were used by more than one /predict call, so the "
                    "labels cannot be joined to one of them: send a fresh X-Request-ID per call",
                    status=409,
                )
            if len({item.request_id for item in items}) != len(items):
                raise FeedbackError("a request_id appears more than once in this feedback")
            for item in items:
                rows = len(self._by_id[item.request_id])
                if rows != len(item.labels):
                    raise FeedbackError(
                        f"request {item.request_id} predicted {rows} row(s) but "
                        f"{len(item.labels)} label(s) came: send 'labels' with one per row, "
                        "in the order of the request's rows"
                    )
            taken = []
            for item in items:
                predictions = self._by_id.pop(item.request_id)
                self._rows -= len(predictions)
                taken.append((predictions, item.labels))
            return taken


class LiveQuality:
    """Accuracy (label outputs) or mean absolute error (numeric outputs) over recent labels."""

    def __init__(self, output_kind: str, window: int, classes: list[str] | None = None) -> None:
        self.metric = quality_metric(output_kind)
        self.classes = frozenset(classes) if classes else None
        self._scores: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def check_labels(self, labels: list[Any]) -> None:
        """Raise a 422 FeedbackError unless the labels can be scored (numbers for MAE)."""
        if self.metric is None:
            raise FeedbackError("live quality needs label or number predictions, not vectors")
        if self.metric == "accuracy":
            for label in labels:
                self._check_class(label)
        if self.metric == "mae":
            for label in labels:
                if isinstance(label, bool) or not isinstance(label, (int, float)):
                    raise FeedbackError(f"label {label!r} is not a number")
                if not math.isfinite(label):
                    raise FeedbackError(f"label {label!r} is not a finite number")

    def _check_class(self, label: Any) -> None:
        # An object, a NaN or a class the model never predicts scores as a miss every time:
        # one client bug would read as a collapse of live accuracy.
        key = level_key(label) if isinstance(label, (str, int, float)) else None
        if key is None:
            raise FeedbackError(f"label {label!r} is not a class label (a string or a number)")
        if self.classes is not None and key not in self.classes:
            shown = sorted(self.classes)[:_CLASSES_SHOWN]
            raise FeedbackError(f"label {label!r} is not a class this model predicts: {shown}")

    def add(self, predictions: list[Any], labels: list[Any]) -> None:
        """Score labelled rows (checked with :meth:`check_labels`) into the window."""
        scores = [self._score(p, label) for p, label in zip(predictions, labels, strict=True)]
        with self._lock:
            self._scores.extend(score for score in scores if score is not None)

    def _score(self, prediction: Any, label: Any) -> float | None:
        if self.metric == "accuracy":
            return 1.0 if level_key(prediction) == level_key(label) else 0.0
        if isinstance(prediction, bool) or not isinstance(prediction, (int, float)):
            return None  # the model predicted no number (NaN became null): nothing to score
        return abs(float(prediction) - float(label))

    def value(self) -> tuple[float | None, int]:
        """The metric over the window (None before any label), and the window's row count."""
        with self._lock:
            count = len(self._scores)
            return (sum(self._scores) / count if count else None), count
