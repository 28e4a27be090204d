"""Drift alerts: one WARNING log line when something newly drifts, and the retraining webhook.

The webhook (``NB2PROD_DRIFT_WEBHOOK``) gets a JSON POST while anything drifts, at most once per
cooldown (``NB2PROD_DRIFT_WEBHOOK_COOLDOWN``, default 3600 s): the first drift sends at once, a
drift that persists sends again after the cooldown. Each event is sent from its own daemon
thread, with a timeout and retries with backoff, so neither requests nor drift checks wait on it.

``NB2PROD_DRIFT_WEBHOOK_FORMAT=github`` wraps the event as a GitHub ``repository_dispatch`` body
(``{"event_type": "nb2prod-drift", "client_payload": event}``) and
``NB2PROD_DRIFT_WEBHOOK_TOKEN`` is sent as ``Authorization: Bearer ...``.

The token goes to the configured URL and nowhere else: the URL must be ``https://`` (or
``http://`` to a loopback address, for tests), redirects are never followed (a redirect could
carry the token to another host, and would hide that the event was not delivered), and any
answer but a 2xx counts as a failed attempt, retried with backoff, then counted ``failed``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DriftAlerts", "WebhookSettings", "WebhookURLError", "check_webhook_url"]

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


class WebhookURLError(ValueError):
    """Raised when ``NB2PROD_DRIFT_WEBHOOK`` is not an https:// (or loopback http://) URL."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str) -> str:
    """``url`` when events (and the token) may be sent to it; WebhookURLError otherwise."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and _is_loopback(host):
        return url
    shown = f"{parts.scheme}://{host}" if parts.scheme else repr(url[:40])
    raise WebhookURLError(
        f"NB2PROD_DRIFT_WEBHOOK={shown}... is refused: drift events (and "
        "NB2PROD_DRIFT_WEBHOOK_TOKEN) are sent only to https:// URLs, or http:// on loopback "
        "for tests. Fix or unset NB2PROD_DRIFT_WEBHOOK."
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: the 3xx answer becomes an HTTPError, i.e. a failed attempt."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


#: http(s) only, no redirects (build_opener would add file://, ftp:// and redirects).
_OPENER = urllib.request.OpenerDirector()
for _handler in (
    urllib.request.ProxyHandler(),
    urllib.request.HTTPHandler(),
    urllib.request.HTTPSHandler(),
    urllib.request.HTTPDefaultErrorHandler(),
    urllib.request.HTTPErrorProcessor(),
    _NoRedirects(),
):
    _OPENER.add_handler(_handler)


class DriftAlerts:
    """Turns each drift check's verdict into log lines and rate-limited webhook events."""

    def __init__(
        self, service: str, model_version: str, settings: WebhookSettings, count: OutcomeCounter
    ) -> None:
        if settings.url:
            check_webhook_url(settings.url)
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
                # HTTPErrorProcessor turns every non-2xx answer into an HTTPError.
                with _OPENER.open(request, timeout=settings.timeout_seconds):
                    pass
            except OSError as err:  # URLError and HTTPError (3xx/4xx/5xx) are OSErrors
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
