"""Prometheus metrics of the monitor, registered in the app's own registry (``metrics.py``).

Label values are bounded: ``feature`` takes the schema's column names only, ``outcome`` three
fixed values, and ``name`` the keys of the notebook hook's first result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["MonitorMetrics"]

logger = logging.getLogger("nb2prod.monitoring")

#: In multi-process mode a gauge is one value per process; keep the most recently written one.
_MODE = "mostrecent"


def _number(value: Any) -> float:
    """A gauge value: NaN for missing or non-numeric values."""
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


class MonitorMetrics:
    """Drift, live quality and notebook-hook metrics."""

    def __init__(self, registry: CollectorRegistry, quality_metric: str | None) -> None:
        self._registry = registry
        self._define_drift_metrics()
        self._define_quality_metrics(quality_metric)
        self._define_hook_metrics()
        self._hook_names: frozenset[str] | None = None  # fixed by the hook's first result

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=self._registry, multiprocess_mode=_MODE)

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, labels, registry=self._registry)

    def _define_drift_metrics(self) -> None:
        gauge, counter = self._gauge, self._counter
        feature = ("feature",)
        self.feature_psi = gauge(
            "nb2prod_feature_psi", "PSI of an input column, window vs training.", feature
        )
        self.feature_pvalue = gauge(
            "nb2prod_feature_pvalue",
            "p-value of the drift test of an input column (KS numeric, chi-square categorical).",
            feature,
        )
        self.feature_ks = gauge(
            "nb2prod_feature_ks_statistic",
            "Two-sample KS statistic of a numeric input column, window vs training.",
            feature,
        )
        self.feature_unseen = gauge(
            "nb2prod_feature_unseen_rows",
            "Window rows of a categorical column with a level training never saw.",
            feature,
        )
        self.feature_drift = gauge(
            "nb2prod_feature_drift", "1 when an input column drifts, else 0.", feature
        )
        self.prediction_psi = gauge("nb2prod_prediction_psi", "PSI of the predictions.")
        self.prediction_pvalue = gauge(
            "nb2prod_prediction_pvalue", "p-value of the predictions' drift test."
        )
        self.prediction_drift = gauge(
            "nb2prod_prediction_drift", "1 when the predictions drift, else 0."
        )
        self.dataset_drift = gauge(
            "nb2prod_dataset_drift", "1 when the share of drifted columns reaches the threshold."
        )
        self.drift_share = gauge(
            "nb2prod_drifted_features_ratio", "Share of input columns that drift (0 to 1)."
        )
        self.window_rows = gauge("nb2prod_drift_window_rows", "Rows in the drift window.")
        self.checks = counter("nb2prod_drift_checks_total", "Drift checks run.")
        self.check_seconds = gauge(
            "nb2prod_drift_check_duration_seconds", "How long the last drift check took."
        )
        self.last_check = gauge(
            "nb2prod_drift_last_check_timestamp_seconds", "Unix time of the last drift check."
        )
        self.webhooks = counter(
            "nb2prod_drift_webhooks_total",
            "Drift webhook events by outcome (sent, failed, suppressed by the cooldown).",
            ("outcome",),
        )

    def _define_quality_metrics(self, quality_metric: str | None) -> None:
        gauge, counter = self._gauge, self._counter
        self.quality_metric = quality_metric
        self.quality: Gauge | None = None
        if quality_metric == "accuracy":
            self.quality = gauge(
                "nb2prod_live_accuracy_ratio", "Accuracy over the recent labelled rows (0 to 1)."
            )
        elif quality_metric == "mae":
            self.quality = gauge(
                "nb2prod_live_mae", "Mean absolute error over the recent labelled rows."
            )
        self.feedback_rows = counter("nb2prod_feedback_rows_total", "Labelled rows received.")
        self.feedback_window = gauge(
            "nb2prod_feedback_window_rows", "Labelled rows the live quality is computed over."
        )

    def _define_hook_metrics(self) -> None:
        gauge, counter = self._gauge, self._counter
        self.hook_calls = counter(
            "nb2prod_monitor_hook_calls_total", "Calls of the notebook's monitor() hook."
        )
        self.hook_errors = counter(
            "nb2prod_monitor_hook_errors_total", "Failed calls of the notebook's monitor() hook."
        )
        self.hook_seconds = gauge(
            "nb2prod_monitor_hook_duration_seconds", "How long the last monitor() call took."
        )
        self.hook_value = gauge(
            "nb2prod_monitor_value", "A number the notebook's monitor() hook returned.", ("name",)
        )

    def publish(self, report: Mapping[str, Any], seconds: float) -> None:
        """Set the drift gauges from a check's report."""
        for name, result in report["features"].items():
            self.feature_psi.labels(name).set(_number(result["psi"]))
            self.feature_pvalue.labels(name).set(_number(result["p_value"]))
            self.feature_drift.labels(name).set(1 if result["drifted"] else 0)
            if result["test"] == "ks":
                self.feature_ks.labels(name).set(_number(result["statistic"]))
            else:
                self.feature_unseen.labels(name).set(result["unseen"]["count"])
        predictions = report.get("predictions")
        if predictions:
            self.prediction_psi.set(_number(predictions["psi"]))
            self.prediction_pvalue.set(_number(predictions["p_value"]))
            self.prediction_drift.set(1 if predictions["drifted"] else 0)
        overall = report["overall"]
        self.dataset_drift.set(1 if overall["drifted"] else 0)
        self.drift_share.set(overall["share"])
        self.window_rows.set(report["window_rows"])
        self.checks.inc()
        self.check_seconds.set(seconds)
        self.last_check.set_to_current_time()

    def publish_quality(self, value: float | None, window: int, rows: int) -> None:
        """Set the live quality gauges after feedback."""
        self.feedback_rows.inc(rows)
        self.feedback_window.set(window)
        if self.quality is not None and value is not None:
            self.quality.set(value)

    def count_webhook(self, outcome: str) -> None:
        """Count a webhook event by outcome."""
        self.webhooks.labels(outcome).inc()

    def set_hook_values(self, values: Mapping[str, Any]) -> None:
        """Export the hook's numbers; names are fixed by the first result (bounded labels)."""
        if self._hook_names is None:
            self._hook_names = frozenset(str(key) for key in values)
        for key, value in values.items():
            if str(key) in self._hook_names:
                self.hook_value.labels(str(key)).set(_number(value))
            else:
                logger.debug("monitor() returned a new name %r: not exported", key)
