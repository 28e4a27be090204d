"""The service watching itself: input drift, prediction drift, live quality, notebook hooks.

:class:`Monitor` is built from the model card (its ``reference_profile``) and plugged into the
app as an ``after_predict`` hook. The request path only appends the request's frame and
predictions to a bounded queue and remembers the predictions for ``/feedback``. A background
thread drains the queue into a window of the last ``NB2PROD_DRIFT_WINDOW`` rows, calls the
notebook's ``monitor(inputs, predictions)`` hook, and every ``NB2PROD_DRIFT_EVERY_REQUESTS``
requests or ``NB2PROD_DRIFT_EVERY_SECONDS`` seconds compares the window with the reference
(``drift.py``), updates the Prometheus gauges and raises alerts (``alerts.py``).

Everything is bounded, in rows and in bytes: the window and the queue (``window`` rows each),
the prediction store, the metric labels (feature names from the schema, hook gauge names from
the hook's first result), and every text a client sends: the request path cuts a long string
to a bounded preview (:func:`~.profile.bounded_text`, at most 64 characters) before it is
queued, so a 10 MB value costs 64 characters of memory, and the notebook's hook sees the cut
value too. Reports name at most ten unseen levels, by a 24-character preview each.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from ..card import ModelCard
from ..plan import FunctionStep
from ..schema import FrameBuilder
from .alerts import DriftAlerts, WebhookSettings
from .drift import Thresholds, compare, judge
from .feedback import LiveQuality, PredictionStore, known_classes, parse_feedback
from .metrics import MonitorMetrics
from .profile import frame_values, level_key, numeric_values

__all__ = ["Monitor", "MonitorSettings", "monitoring_enabled"]

logger = logging.getLogger("nb2prod.monitoring")

_RULES = {
    "and": "a column drifts when psi >= psi AND its test's p_value < p_value",
    "or": "a column drifts when psi >= psi OR its test's p_value < p_value",
    "psi": "a column drifts when psi >= psi",
    "test": "a column drifts when its test's p_value < p_value",
}


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def monitoring_enabled() -> bool:
    """False when ``NB2PROD_MONITORING`` is 0/false/off (the benchmark compares both)."""
    return os.environ.get("NB2PROD_MONITORING", "1").strip().lower() not in {"0", "false", "off"}


#: The largest share of the process's time drift checks may take under heavy traffic.
CHECK_TIME_SHARE = 0.02


@dataclass(frozen=True)
class MonitorSettings:
    """Window, schedule and thresholds; :meth:`from_env` documents the variables."""

    window: int = 1000
    every_requests: int = 1000
    every_seconds: float = 30.0
    feedback_rows: int = 10_000
    thresholds: Thresholds = field(default_factory=Thresholds)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)

    @classmethod
    def from_env(cls) -> MonitorSettings:
        """Read the ``NB2PROD_DRIFT_*`` and ``NB2PROD_FEEDBACK_ROWS`` variables (README)."""
        return cls(
            window=int(_env_float("NB2PROD_DRIFT_WINDOW", 1000)),
            every_requests=max(1, int(_env_float("NB2PROD_DRIFT_EVERY_REQUESTS", 1000))),
            every_seconds=_env_float("NB2PROD_DRIFT_EVERY_SECONDS", 30.0),
            feedback_rows=int(_env_float("NB2PROD_FEEDBACK_ROWS", 10_000)),
            thresholds=Thresholds(
                psi=_env_float("NB2PROD_DRIFT_PSI", 0.2),
                psi_moderate=_env_float("NB2PROD_DRIFT_PSI_MODERATE", 0.1),
                p_value=_env_float("NB2PROD_DRIFT_P_VALUE", 0.05),
                min_rows=int(_env_float("NB2PROD_DRIFT_MIN_ROWS", 100)),
                share=_env_float("NB2PROD_DRIFT_SHARE", 0.5),
                bonferroni=os.environ.get("NB2PROD_DRIFT_BONFERRONI", "1") not in {"0", "false"},
                rule=os.environ.get("NB2PROD_DRIFT_RULE", "and").strip().lower(),
            ),
            webhook=WebhookSettings(
                url=os.environ.get("NB2PROD_DRIFT_WEBHOOK") or None,
                cooldown_seconds=_env_float("NB2PROD_DRIFT_WEBHOOK_COOLDOWN", 3600.0),
                timeout_seconds=_env_float("NB2PROD_DRIFT_WEBHOOK_TIMEOUT", 5.0),
                retries=max(1, int(_env_float("NB2PROD_DRIFT_WEBHOOK_RETRIES", 3))),
                format=os.environ.get("NB2PROD_DRIFT_WEBHOOK_FORMAT", "json"),
                token=os.environ.get("NB2PROD_DRIFT_WEBHOOK_TOKEN") or None,
            ),
        )


class Monitor:
    """Drift, quality and hook monitoring for one served model (see the module docstring)."""

    def __init__(
        self,
        card: ModelCard,
        metrics: MonitorMetrics,
        settings: MonitorSettings | None = None,
        model_code: ModuleType | None = None,
    ) -> None:
        self.settings = settings or MonitorSettings.from_env()
        self.metrics = metrics
        self.model_version = card.model_version
        profile = card.reference_profile or {"columns": {}, "predictions": {}}
        self._profiles: dict[str, dict[str, Any]] = {
            name: entry
            for name, entry in profile["columns"].items()
            if entry.get("kind") in ("numeric", "categorical")
        }
        predictions_profile = profile.get("predictions") or {}
        self._prediction_profile = (
            predictions_profile if predictions_profile.get("kind") != "skipped" else {}
        )
        window = self.settings.window
        self._layout_inputs(card.input_schema)
        # The queue is bounded in rows (a request may carry many): see after_predict.
        self._pending: deque[tuple[np.ndarray, list[Any]]] = deque()
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._columns: dict[str, deque[Any]] = {n: deque(maxlen=window) for n in self._profiles}
        self._predictions: deque[Any] = deque(maxlen=window)
        output_kind = card.output_kind
        self.quality = LiveQuality(output_kind, window, known_classes(self._prediction_profile))
        self.store = PredictionStore(self.settings.feedback_rows)
        self._remember = self.quality.metric is not None
        self._hook = self._notebook_hook(card, model_code)
        service = os.environ.get("K_SERVICE") or card.name
        self.alerts = DriftAlerts(
            service, self.model_version, self.settings.webhook, metrics.count_webhook
        )
        self._requests = 0
        self._next_check = self.settings.every_requests
        self._rows_seen = 0
        self._rows_checked = -1
        self._checks = 0
        self._report: dict[str, Any] = self._empty_report()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._check_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _layout_inputs(self, schema: dict[str, Any]) -> None:
        """How request frames are read on the request path: positions, float fast path, text."""
        self._frames = FrameBuilder(schema)
        names = [column["name"] for column in schema["columns"]]
        self._index = {name: position for position, name in enumerate(names)}
        # The queue keeps each request's values as one array, not its frame: a held pandas
        # frame is ~100 objects the garbage collector walks until the next check (measured:
        # ~150 us a request in collections), an array none. All-float inputs are a single
        # block, whose to_numpy() is a view (~1 us); other frames take ~40 us to convert.
        self._float_rows = bool(names) and all(
            column.get("dtype") == "float64" and column.get("kind") == "number"
            for column in schema["columns"]
        )
        # Columns where a client can send free text (everything but numbers, booleans, times).
        self._text_columns = [
            position
            for position, column in enumerate(schema["columns"])
            if column.get("kind") not in ("number", "integer", "boolean", "datetime")
        ]

    @staticmethod
    def _notebook_hook(
        card: ModelCard, model_code: ModuleType | None
    ) -> Callable[[pd.DataFrame, list[Any]], Any] | None:
        # Only a `def monitor(inputs, predictions)` is called; script-style cells are not.
        is_function = isinstance(card.serving.monitor, FunctionStep)
        hook = getattr(model_code, "monitor", None) if is_function else None
        return hook if callable(hook) else None

    # -- the request path ------------------------------------------------------------------
    def after_predict(self, frame: pd.DataFrame, predictions: list[Any], request_id: str) -> None:
        """The app's after_predict hook: append, remember, maybe wake the checker.

        O(1) for all-number inputs; O(text cells) otherwise, to cut long client strings.
        """
        self.after_predict_batch(frame, predictions, ((request_id, 0, len(predictions)),))

    def after_predict_batch(
        self, frame: pd.DataFrame, predictions: list[Any], spans: Sequence[tuple[str, int, int]]
    ) -> None:
        """:meth:`after_predict` for several requests predicted together (micro-batching):
        the rows are appended once, and each request's predictions remembered under its id.
        ``spans`` are ``(request_id, start, end)`` row ranges of ``frame``."""
        values = frame_values(frame, self._float_rows, self._text_columns)
        self._enqueue(values, predictions)
        if self._remember:
            for request_id, start, end in spans:
                self.store.remember(request_id, predictions[start:end])
        self._requests += len(spans)
        if self._requests >= self._next_check:
            self._next_check = self._requests + self.settings.every_requests
            self._wake.set()

    def _enqueue(self, values: np.ndarray, predictions: list[Any]) -> None:
        """Queue one request's rows; the oldest requests go once more than a window is queued."""
        with self._pending_lock:  # uncontended: ~0.1 us
            self._pending.append((values, predictions))
            self._pending_rows += len(values)
            while self._pending_rows > self.settings.window and len(self._pending) > 1:
                self._pending_rows -= len(self._pending.popleft()[0])

    # -- the background thread ---------------------------------------------------------------
    def start(self) -> None:
        """Start the checker thread (the app's lifespan startup, after the model loaded).

        The lifespan has frozen the start-up objects (``gc.freeze``) first: the window keeps
        requests alive into the collector's old generation, and full collections that walk
        the libraries and the model cost ~50 ms each.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nb2prod-monitor", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the checker thread and give webhooks in flight a moment (lifespan shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.alerts.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.every_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            started = time.perf_counter()
            try:
                self.check()
            except Exception:  # a bug here must not kill the thread, nor ever a request
                logger.exception("drift check failed")
            # A check holds the GIL for its statistics (~0.1 s for 30 columns). At a thousand
            # requests a second the request trigger would fire about every second and take a
            # tenth of the serving time: rest long enough that checks take at most
            # CHECK_TIME_SHARE of it, whatever the traffic.
            spent = time.perf_counter() - started
            self._stop.wait(spent * (1 / CHECK_TIME_SHARE - 1))

    def _ingest(self) -> None:
        """Move queued requests into the window and run the notebook hook on them."""
        with self._pending_lock:
            batches = list(self._pending)
            self._pending.clear()
            self._pending_rows = 0
        if not batches:
            return
        block = np.concatenate([values for values, _ in batches])
        predictions = [value for _, values in batches for value in values]
        recent = block[-self.settings.window :]
        for name, window in self._columns.items():
            column = recent[:, self._index[name]]
            if self._profiles[name]["kind"] == "numeric":
                window.extend(numeric_values(column).tolist())
            else:  # the level each value counts as: a short text, not the object sent
                window.extend(level_key(value) for value in column)
        self._predictions.extend(predictions[-self.settings.window :])
        self._rows_seen += len(block)
        if self._hook is not None:
            # The hook sees the rows as serving framed them: schema order, training dtypes.
            rows = block[:, : len(self._index)].tolist()
            self._call_hook(self._frames.from_rows(rows), predictions)

    def _call_hook(self, frame: pd.DataFrame, predictions: list[Any]) -> None:
        assert self._hook is not None
        started = time.perf_counter()
        try:
            result = self._hook(frame, predictions)
        except Exception:
            self.metrics.hook_errors.inc()
            logger.exception("the notebook's monitor() hook failed")
            return
        finally:
            self.metrics.hook_calls.inc()
            self.metrics.hook_seconds.set(time.perf_counter() - started)
        if not isinstance(result, Mapping):
            self.metrics.hook_errors.inc()
            logger.error("monitor() returned %s, not a dict of numbers", type(result).__name__)
            return
        self.metrics.set_hook_values(result)

    # -- drift checks ----------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """Ingest what is queued, compare the window with the reference, publish the verdict."""
        with self._check_lock:
            self._ingest()
            if self._rows_seen in (0, self._rows_checked):
                return self._report  # nothing (new) to compare
            started = time.perf_counter()
            report = self._compute()
            self._rows_checked = self._rows_seen
            self._checks += 1
            report["checks"] = self._checks
            self._report = report
            self.metrics.publish(report, time.perf_counter() - started)
        self.alerts.observe(report)
        return report

    def _compute(self) -> dict[str, Any]:
        thresholds = self.settings.thresholds
        window = len(self._predictions)
        features: dict[str, Any] = {}
        for name, profile in self._profiles.items():
            result = compare(profile, np.asarray(self._columns[name], dtype=_dtype(profile)))
            if result is not None:
                features[name] = result
        tests = max(1, len(features))
        alpha = thresholds.p_value / tests if thresholds.bonferroni else thresholds.p_value
        for result in features.values():
            judge(result, window, alpha, thresholds)
        predictions = None
        if self._prediction_profile:
            values = np.asarray(self._predictions, dtype=_dtype(self._prediction_profile))
            predictions = compare(self._prediction_profile, values)
            if predictions is not None:
                judge(predictions, window, thresholds.p_value, thresholds)
        drifted = sorted(name for name, result in features.items() if result["drifted"])
        share = len(drifted) / len(features) if features else 0.0
        report = self._empty_report()
        report.update(
            status="ok" if window >= thresholds.min_rows else "collecting",
            window_rows=window,
            checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            features=features,
            predictions=predictions,
        )
        report["overall"].update(
            drifted=bool(window >= thresholds.min_rows and share >= thresholds.share),
            share=share,
            window_rows=window,
            drifted_features=drifted,
            predictions_drifted=bool(predictions and predictions["drifted"]),
            p_value_per_feature=alpha,
        )
        return report

    def _empty_report(self) -> dict[str, Any]:
        t = self.settings.thresholds
        return {
            "status": "collecting",
            "model_version": self.model_version,
            "window_rows": 0,
            "window_size": self.settings.window,
            "checked_at": None,
            "checks": 0,
            "thresholds": {
                "psi": t.psi,
                "psi_moderate": t.psi_moderate,
                "p_value": t.p_value,
                "bonferroni": t.bonferroni,
                "min_rows": t.min_rows,
                "share": t.share,
                "rule": t.rule,
            },
            "rule": _RULES.get(t.rule, _RULES["and"])
            + " (p_value divided by the number of tested columns with bonferroni); the dataset "
            "drifts when the share of drifted columns >= share",
            "features": {},
            "predictions": None,
            "overall": {
                "drifted": False,
                "share": 0.0,
                "threshold": t.share,
                "window_rows": 0,
                "drifted_features": [],
                "predictions_drifted": False,
            },
        }

    def report(self) -> dict[str, Any]:
        """The last check's report (what ``GET /monitoring/drift`` serves)."""
        return self._report

    # -- feedback ----------------------------------------------------------------------------------
    def feedback(self, body: Any) -> dict[str, Any]:
        """Join labels to stored predictions; raise FeedbackError (404/422) when they can't be."""
        items = parse_feedback(body)
        for item in items:
            self.quality.check_labels(item.labels)
        taken = self.store.take(items)
        for predictions, labels in taken:
            self.quality.add(predictions, labels)
        value, window = self.quality.value()
        rows = sum(len(labels) for _, labels in taken)
        self.metrics.publish_quality(value, window, rows)
        return {
            "accepted_rows": rows,
            "quality": {"metric": self.quality.metric, "value": value, "window_rows": window},
        }


def _dtype(profile: Mapping[str, Any]) -> Any:
    return np.float64 if profile.get("kind") == "numeric" else object
