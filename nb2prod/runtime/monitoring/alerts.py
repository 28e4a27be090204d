"""Drift alerts: one WARNING log line when something newly drifts, and the retraining webhook.

The webhook (``NB2PROD_DRIFT_WEBHOOK``) gets a JSON POST while anything drifts, at most once per
cooldown (``NB2PROD_DRIFT_WEBHOOK_COOLDOWN``, default 3600 s): the first drift sends at once, a
drift that persists sends again after the cooldown. Each event is sent from its own daemon
thread, with a timeout and retries with backoff, so neither requests nor drift checks wait on it.

``NB2PROD_DRIFT_WEBHOOK_FORMAT=github`` wraps the event as a GitHub ``repository_dispatch`` body
(``{"event_type": "nb2prod-drift", "client_payload": event}``) and
``NB2PROD_DRIFT_WEBHOOK_TOKEN`` is sent as ``Authorization: Bearer ...``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DriftAlerts", "WebhookSettings"]

logger = logging.getLogger("nb2prod.monitoring")

#: ``outcome`` is "sent", "failed" or "suppressed" (a new drift inside the cooldown).
OutcomeCounter = Callable[[str], None]


@dataclass(frozen=True)
class WebhookSettings:
    """Where and how drift events are posted."""

    url: str | None = None
    cooldown_seconds: float = 3600.0
    timeout_seconds: float = 5.0
    retries: int = 3
    backoff_seconds: float = 1.0
    format: str = "json"
    token: str | None = None


class DriftAlerts:
    """Turns each drift check's verdict into log lines and rate-limited webhook events."""

    def __init__(
        self, service: str, model_version: str, settings: WebhookSettings, count: OutcomeCounter
    ) -> None:
        self.service = service
        self.model_version = model_version
        self.settings = settings
        self._count = count
        self._drifted: set[str] = set()
        self._last_sent: float | None = None
        self._threads: list[threading.Thread] = []

    def observe(self, report: dict[str, Any]) -> None:
        """Called after every check with the report ``/monitoring/drift`` serves."""
        drifted = _drifted_stats(report)
        newly = sorted(set(drifted) - self._drifted)
        self._drifted = set(drifted)
        if newly:
            logger.warning(
                "drift detected: %s",
                ", ".join(newly),
                extra={
                    "json_fields": {
                        "event": "drift",
                        "newlyDrifted": newly,
                        "drifted": drifted,
                        "modelVersion": self.model_version,
                        "windowRows": report["window_rows"],
                    }
                },
            )
        if not drifted or not self.settings.url:
            return
        now = time.monotonic()
        if self._last_sent is not None and now - self._last_sent < self.settings.cooldown_seconds:
            if newly:
                self._count("suppressed")
            return
        self._last_sent = now
        event = {
            "event": "nb2prod.drift",
            "service": self.service,
            "model_version": self.model_version,
            "detected_at": report["checked_at"],
            "window_rows": report["window_rows"],
            "share": report["overall"]["share"],
            "dataset_drifted": report["overall"]["drifted"],
            "newly_drifted": newly,
            "drifted": drifted,
        }
        thread = threading.Thread(target=self._send, args=(event,), daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def wait(self, timeout: float) -> None:
        """Wait for webhook sends in flight (at shutdown, and in tests)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _send(self, event: dict[str, Any]) -> None:
        settings = self.settings
        assert settings.url is not None
        body: dict[str, Any] = event
        if settings.format == "github":
            body = {"event_type": "nb2prod-drift", "client_payload": event}
        headers = {"Content-Type": "application/json", "User-Agent": "nb2prod-monitor"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        data = json.dumps(body, default=str).encode()
        for attempt in range(1, settings.retries + 1):
            request = urllib.request.Request(settings.url, data, headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=settings.timeout_seconds):  # noqa: S310
                    pass
            except OSError as err:  # URLError and HTTPError (4xx/5xx) are OSErrors
                logger.warning(
                    "drift webhook attempt %d/%d failed: %s", attempt, settings.retries, err
                )
                if attempt < settings.retries:
                    time.sleep(settings.backoff_seconds * 2 ** (attempt - 1))
                continue
            self._count("sent")
            logger.info("drift webhook sent to %s", settings.url.split("?")[0])
            return
        self._count("failed")


def _drifted_stats(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> statistics of everything that drifts (predictions under ``<predictions>``)."""
    entries = dict(report["features"])
    if report.get("predictions"):
        entries["<predictions>"] = report["predictions"]
    return {
        name: {key: entry.get(key) for key in ("test", "psi", "statistic", "p_value", "threshold")}
        for name, entry in entries.items()
        if entry.get("drifted")
    }
