"""Monitor stage: read a running service's drift report (``nb2prod monitor URL``).

Reads ``GET /monitoring/drift?refresh=true`` and ``GET /metadata`` with the standard library,
renders the per-feature table, and decides the verdict a scheduled CI job acts on: drift when any
column or the predictions drift, or, with ``min_share``, when that share of columns drifts.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ..errors import MonitorError

__all__ = ["MonitorReport", "format_table", "read_service"]

PREDICTIONS_ROW = "<predictions>"


@dataclass(frozen=True)
class MonitorReport:
    """A service's drift report, with the model it serves."""

    url: str
    model_name: str
    model_version: str
    drift: dict[str, Any]

    @property
    def drifted_features(self) -> list[str]:
        """Input columns the service reports as drifted."""
        return [name for name, entry in self.drift["features"].items() if entry.get("drifted")]

    @property
    def predictions_drifted(self) -> bool:
        """Whether the predictions drift."""
        return bool((self.drift.get("predictions") or {}).get("drifted"))

    @property
    def share(self) -> float:
        """Share of input columns that drift."""
        return float(self.drift["overall"]["share"])

    def is_drifted(self, min_share: float | None = None) -> bool:
        """The verdict: any drift, or (with ``min_share``) a drifted share >= ``min_share``."""
        if min_share is not None:
            return self.share >= min_share and self.drift.get("status") == "ok"
        return bool(self.drifted_features) or self.predictions_drifted

    def summary(self) -> str:
        """One line naming what drifts."""
        names = [*self.drifted_features, *([PREDICTIONS_ROW] if self.predictions_drifted else [])]
        total = len(self.drift["features"])
        what = ", ".join(names) if names else "nothing"
        return (
            f"drift in {what} ({len(self.drifted_features)}/{total} columns, share "
            f"{self.share:.2f}; window {self.drift['window_rows']} rows)"
        )

    def table(self) -> str:
        """The human-readable report (see :func:`format_table`)."""
        return format_table(self)

    def as_json(self) -> dict[str, Any]:
        """What ``--json`` prints."""
        return {
            "url": self.url,
            "model": {"name": self.model_name, "version": self.model_version},
            "drift": self.drift,
        }


def _get_json(url: str, timeout: float) -> Any:
    headers = {"Accept": "application/json"}
    token = os.environ.get("NB2PROD_ADMIN_TOKEN")
    if token:  # the service guards /monitoring/* and /metadata with it when it has one
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        hint = None
        if err.code == 503 and "monitoring is off" in detail:
            hint = "The service runs with NB2PROD_MONITORING=0; unset it to monitor."
        raise MonitorError(f"{url} answered {err.code}: {detail}", hint=hint) from err
    except (OSError, ValueError) as err:  # URLError, timeouts, refused, bad JSON
        raise MonitorError(
            f"cannot read {url}: {err}",
            hint="Is the service running and the URL its base (e.g. http://127.0.0.1:8080)?",
        ) from err


def read_service(url: str, timeout: float = 10.0, refresh: bool = True) -> MonitorReport:
    """Fetch the drift report and the model card of the service at base ``url``."""
    if not url.startswith(("http://", "https://")):
        raise MonitorError(f"{url!r} is not an http(s) URL")
    base = url.rstrip("/")
    drift = _get_json(f"{base}/monitoring/drift" + ("?refresh=true" if refresh else ""), timeout)
    card = _get_json(f"{base}/metadata", timeout)
    if not isinstance(drift, dict) or "features" not in drift or "overall" not in drift:
        raise MonitorError(f"{base}/monitoring/drift did not return a drift report")
    return MonitorReport(
        url=base,
        model_name=str(card.get("name", "?")) if isinstance(card, dict) else "?",
        model_version=str(card.get("model_version", "?")) if isinstance(card, dict) else "?",
        drift=drift,
    )


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) else str(value)


def format_table(report: MonitorReport) -> str:
    """The human-readable report: one row per column and one for the predictions."""
    drift = report.drift
    rows = list(drift["features"].items())
    if drift.get("predictions"):
        rows.append((PREDICTIONS_ROW, drift["predictions"]))
    header = ("feature", "test", "psi", "statistic", "p-value", "threshold", "drifted")
    lines = [header]
    for name, entry in rows:
        threshold = entry.get("threshold") or {}
        lines.append(
            (
                name,
                str(entry.get("test", "-")),
                _number(entry.get("psi")),
                _number(entry.get("statistic")),
                _number(entry.get("p_value"), 3),
                f"psi>={_number(threshold.get('psi'))} {threshold.get('rule', 'and')} "
                f"p<{_number(threshold.get('p_value'), 3)}",
                "DRIFT" if entry.get("drifted") else "no",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    overall = drift["overall"]
    head = (
        f"{report.model_name} {report.model_version} at {report.url}: "
        f"window {drift['window_rows']} rows, checked {drift.get('checked_at') or 'never'}"
    )
    status = (
        f"not enough rows yet for a verdict (minimum {drift['thresholds']['min_rows']})"
        if drift.get("status") != "ok"
        else f"dataset drift: {'YES' if overall['drifted'] else 'no'} "
        f"(share {overall['share']:.2f}, threshold {overall['threshold']})"
    )
    return "\n".join([head, *(line.rstrip() for line in table), status])
