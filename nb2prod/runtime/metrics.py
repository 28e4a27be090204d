"""Prometheus metrics of the service, in a registry each app owns.

An own registry (not prometheus_client's global one) lets a process, or a test, create several
apps. With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker processes), values are written to that
directory and a scrape aggregates them with a ``MultiProcessCollector``.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    multiprocess,
    platform_collector,
    process_collector,
)

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ServiceMetrics:
    """The service's request, latency and prediction metrics, and its model-info gauge."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess = bool(os.environ.get(_MULTIPROC_ENV))
        if not self._multiprocess:
            process_collector.ProcessCollector(registry=self.registry)
            platform_collector.PlatformCollector(registry=self.registry)
            gc_collector.GCCollector(registry=self.registry)
        self.requests = Counter(
            "nb2prod_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "path", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "nb2prod_request_duration_seconds",
            "HTTP request latency in seconds, by method and route template.",
            ["method", "path"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "nb2prod_predictions_total",
            "Rows predicted.",
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "nb2prod_batch_rows",
            "Rows per prediction when concurrent requests are batched together.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "nb2prod_batch_requests",
            "Requests per prediction when concurrent requests are batched together.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "nb2prod_model_info",
            "The model being served (always 1), labelled with its version.",
            ["model_version"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        # Label children cached by key: .labels() takes a lock and builds tuples per call.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count a finished request and record its latency (``path`` is the route template)."""
        key = (method, path, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, path, str(status)),
                self.duration.labels(method, path),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_predictions(self, rows: int) -> None:
        """Add ``rows`` predicted rows."""
        self.predictions.inc(rows)

    def observe_batch(self, rows: int, requests: int) -> None:
        """Record one batched prediction's size, in rows and in requests."""
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def set_model_version(self, version: str) -> None:
        """Publish ``nb2prod_model_info{model_version=...} 1``."""
        self.model_info.labels(version).set(1)

    def exposition(self) -> bytes:
        """The text exposition format for ``GET /metrics``."""
        if self._multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
