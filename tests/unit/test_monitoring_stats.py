"""Monitoring internals on synthetic data: statistics against scipy and hand-computed values,
the verdict rule, bounded memory, alerts, the notebook hook and feedback."""

from __future__ import annotations

import json
import math
import threading
import time
import tracemalloc
import warnings
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fake_build import BASE_PLAN, make_card
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from scipy import stats

from nb2prod.runtime.card import ModelCard
from nb2prod.runtime.monitoring.alerts import DriftAlerts, WebhookSettings, WebhookURLError
from nb2prod.runtime.monitoring.api import install_monitoring
from nb2prod.runtime.monitoring.drift import Thresholds, compare, judge, psi
from nb2prod.runtime.monitoring.feedback import (
    FeedbackError,
    LiveQuality,
    PredictionStore,
    parse_feedback,
)
from nb2prod.runtime.monitoring.metrics import MonitorMetrics
from nb2prod.runtime.monitoring.monitor import Monitor, MonitorSettings
from nb2prod.runtime.monitoring.profile import reference_profile, values_profile
from nb2prod.runtime.plan import FunctionStep

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

# --- statistics ----------------------------------------------------------------------------------


def test_psi_matches_the_hand_computed_value() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0  # empty on both sides adds nothing
    assert math.isfinite(psi([1.0, 0.0], [0.5, 0.5]))  # empty on one side: large, finite


def test_numeric_profile_bins_are_reference_deciles_with_open_ends() -> None:
    values = np.random.default_rng(0).normal(size=5000)
    profile = values_profile("number", pd.Series(values))
    assert profile["edges"] == pytest.approx(np.quantile(values, np.linspace(0.1, 0.9, 9)))
    assert len(profile["shares"]) == 10 and sum(profile["shares"]) == pytest.approx(1)
    assert all(share == pytest.approx(0.1, abs=1e-3) for share in profile["shares"])
    percentiles = np.quantile(values, [p / 100 for p in range(1, 100)])
    assert profile["quantiles"] == pytest.approx(percentiles)
    # Summaries only: no raw values, not even the extremes.
    assert "sample" not in profile
    assert values.min() not in profile["quantiles"] and values.max() not in profile["quantiles"]
    assert profile == values_profile("number", pd.Series(values))


def test_numeric_comparison_matches_scipy_ks_and_manual_psi() -> None:
    rng = np.random.default_rng(1)
    training = rng.normal(size=3000)
    profile = values_profile("number", pd.Series(training))
    window = rng.normal(loc=0.5, size=800)
    result = compare(profile, window)
    assert result is not None and result["test"] == "ks"
    # The reference: 1000 evenly spaced points of the quantile function through the
    # training percentiles (the outer 1% at the 1st and 99th percentile).
    probs = [p / 100 for p in range(1, 100)]
    rebuilt = np.interp((np.arange(1000) + 0.5) / 1000, probs, np.quantile(training, probs))
    expected = stats.ks_2samp(rebuilt, window)
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p_value"] == pytest.approx(expected.pvalue)
    # ... and it says what the raw training values would have said.
    raw = stats.ks_2samp(training, window)
    assert abs(result["statistic"] - raw.statistic) < 0.02
    edges = np.asarray(profile["edges"])
    counts = np.array(
        [np.sum(window <= edges[0])]
        + [np.sum((window > lo) & (window <= hi)) for lo, hi in zip(edges, edges[1:], strict=False)]
        + [np.sum(window > edges[-1])]
    )
    assert result["psi"] == pytest.approx(psi([*profile["shares"], 0.0], [*counts / 800, 0.0]))


def test_categorical_comparison_matches_scipy_chi2_and_counts_unseen_levels() -> None:
    reference = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    profile = values_profile("string", reference)
    window = ["a"] * 50 + ["b"] * 30 + ["c"] * 10 + ["zzz"] * 10
    result = compare(profile, window)
    assert result is not None and result["test"] == "chi2"
    table = np.array([[600, 300, 100, 0], [50, 30, 10, 10]])
    expected = stats.chi2_contingency(table, correction=False)
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert result["unseen"] == {"count": 10, "levels": ["zzz"]}
    assert result["psi"] == pytest.approx(psi([0.6, 0.3, 0.1, 0.0], [0.5, 0.3, 0.1, 0.1]))


def test_verdict_rule_and_minimum_window() -> None:
    thresholds = Thresholds()
    both = {"psi": 0.5, "p_value": 1e-6}
    psi_only = {"psi": 0.5, "p_value": 0.5}
    for result, window, drifted in ((both, 1000, True), (psi_only, 1000, False), (both, 99, False)):
        judged = dict(result)
        judge(judged, window, 0.005, thresholds)
        assert judged["drifted"] is drifted
    judged = dict(psi_only)
    judge(judged, 1000, 0.005, Thresholds(rule="or"))
    assert judged["drifted"] is True
    assert judged["psi_level"] == "drift" and judged["threshold"]["p_value"] == 0.005


# --- the monitor on synthetic data ---------------------------------------------------------------

COLUMNS = [f"x{i}" for i in range(12)]


def synthetic_card(output: str = "label") -> ModelCard:
    rng = np.random.default_rng(5)
    raw = pd.DataFrame({name: rng.normal(size=2000) for name in COLUMNS})
    raw["colour"] = rng.choice(["red", "green", "blue"], size=2000, p=[0.5, 0.3, 0.2])
    schema = {
        "columns": [{"name": n, "kind": "number", "dtype": "float64"} for n in COLUMNS]
        + [{"name": "colour", "kind": "string", "dtype": "object"}],
        "ignored_columns": [],
    }
    predictions: list[Any] = (
        list(np.where(raw["x0"] > 0, "pos", "neg")) if output == "label" else list(raw["x0"] * 2)
    )
    return make_card(
        name="synthetic",
        input_schema=schema,
        output={"kind": output},
        serving=replace(
            BASE_PLAN, monitor=FunctionStep(cells=(9,), params=("inputs", "predictions"))
        ),
        reference_profile=reference_profile(raw, schema, predictions, output),
    )


def make_monitor(
    card: ModelCard | None = None, model_code: Any = None, **settings: Any
) -> tuple[Monitor, CollectorRegistry]:
    registry = CollectorRegistry()
    card = card or synthetic_card()
    kind = card.output_kind
    metrics = MonitorMetrics(registry, {"label": "accuracy", "number": "mae"}[kind])
    return Monitor(card, metrics, MonitorSettings(**settings), model_code), registry


def frame_of(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame({name: rng.normal(size=rows) for name in COLUMNS})
    frame["x3"] += shift
    frame["colour"] = rng.choice(["red", "green", "blue"], size=rows, p=[0.5, 0.3, 0.2])
    return frame


def feed(monitor: Monitor, frame: pd.DataFrame, prefix: str) -> None:
    for index in range(len(frame)):
        row = frame.iloc[[index]]
        monitor.after_predict(row, ["pos" if row["x0"].iloc[0] > 0 else "neg"], f"{prefix}{index}")


@pytest.mark.parametrize("seed", range(5))
def test_no_drift_on_reference_distribution_and_one_column_when_shifted(seed: int) -> None:
    monitor, registry = make_monitor()
    rng = np.random.default_rng(100 + seed)
    feed(monitor, frame_of(rng, 1000), "a")
    report = monitor.check()
    assert report["window_rows"] == 1000 and report["status"] == "ok"
    assert report["overall"]["drifted_features"] == []
    assert not report["predictions"]["drifted"]
    feed(monitor, frame_of(rng, 1000, shift=2.0), "b")
    report = monitor.check()
    assert report["overall"]["drifted_features"] == ["x3"]
    assert registry.get_sample_value("nb2prod_feature_drift", {"feature": "x3"}) == 1
    assert registry.get_sample_value("nb2prod_feature_drift", {"feature": "x4"}) == 0
    assert registry.get_sample_value("nb2prod_drift_window_rows") == 1000


def test_no_verdict_below_the_minimum_window() -> None:
    monitor, _ = make_monitor()
    feed(monitor, frame_of(np.random.default_rng(0), 50, shift=5.0), "a")
    report = monitor.check()
    assert report["status"] == "collecting" and report["overall"]["drifted_features"] == []


def test_30k_requests_keep_memory_flat() -> None:
    """Drive the request hook 30k times with the checker thread running: memory stays bounded.

    Once the window (1,000 rows) and the feedback store (5,000 rows) are full, every further
    request must cost nothing lasting: 24k more requests that each kept ~100 bytes would add
    over 2 MiB."""
    monitor, _ = make_monitor(window=1000, every_requests=500, feedback_rows=5000)
    rng = np.random.default_rng(0)
    frames = [frame_of(rng, 1) for _ in range(200)]
    monitor.start()
    try:

        def drive(start: int, count: int) -> None:
            for index in range(start, start + count):
                monitor.after_predict(frames[index % 200], ["pos"], f"req-{index}")

        drive(0, 6_000)  # warm up: window, queue and prediction store fill up
        monitor.check()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        drive(6_000, 24_000)
        monitor.check()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        monitor.stop()
    assert after - before < 2 * 2**20, f"grew by {(after - before) / 2**20:.2f} MiB"
    assert len(monitor._pending) <= 1000
    assert all(len(values) == 1000 for values in monitor._columns.values())
    assert monitor.store.rows <= 5000
    assert monitor.report()["checks"] >= 2


# --- the notebook hook ---------------------------------------------------------------------------


def test_monitor_hook_values_become_gauges_and_errors_are_counted() -> None:
    calls: list[int] = []
    dtypes: list[tuple[str, bool]] = []

    def hook(inputs: pd.DataFrame, predictions: list[Any]) -> dict[str, float]:
        calls.append(len(inputs))
        dtypes.append((str(inputs["x0"].dtype), list(inputs.columns) == [*COLUMNS, "colour"]))
        if len(calls) == 2:
            raise RuntimeError("boom")
        return {"mean_x0": float(inputs["x0"].mean()), f"new_{len(calls)}": 1.0}

    monitor, registry = make_monitor(model_code=SimpleNamespace(monitor=hook))
    rng = np.random.default_rng(0)
    frame = frame_of(rng, 20)
    feed(monitor, frame, "a")
    monitor.check()
    assert calls == [20] and dtypes == [("float64", True)]  # framed as serving frames them
    assert registry.get_sample_value("nb2prod_monitor_value", {"name": "mean_x0"}) == (
        pytest.approx(frame["x0"].mean())
    )
    feed(monitor, frame_of(rng, 5), "b")
    monitor.check()  # the hook raises: counted, and the check goes on
    assert registry.get_sample_value("nb2prod_monitor_hook_errors_total") == 1
    feed(monitor, frame_of(rng, 5), "c")
    monitor.check()
    assert registry.get_sample_value("nb2prod_monitor_hook_calls_total") == 3
    # Names are fixed by the first result: a later new name is not exported.
    assert registry.get_sample_value("nb2prod_monitor_value", {"name": "new_3"}) is None


# --- feedback ------------------------------------------------------------------------------------


def test_feedback_store_is_bounded_and_checks_label_counts() -> None:
    store = PredictionStore(max_rows=10)
    for index in range(8):
        store.remember(f"r{index}", ["a", "b"])
    assert store.rows == 10 and len(store) == 5  # the oldest three requests were evicted
    items = parse_feedback({"request_id": "r0", "label": "a"})
    with pytest.raises(FeedbackError) as err:
        store.take(items)
    assert err.value.status == 404 and err.value.unknown == ["r0"]
    with pytest.raises(FeedbackError, match="2 row") as err:
        store.take(parse_feedback({"request_id": "r7", "label": "a"}))
    assert err.value.status == 422
    taken = store.take(parse_feedback([{"request_id": "r7", "labels": ["a", "x"]}]))
    assert taken == [(["a", "b"], ["a", "x"])]
    for bad in ({}, [], {"request_id": "r6"}, {"request_id": "r6", "label": 1, "labels": [1]}):
        with pytest.raises(FeedbackError):
            parse_feedback(bad)


def test_live_quality_accuracy_and_mae() -> None:
    accuracy = LiveQuality("label", window=4)
    accuracy.add(["a", "b", "c"], ["a", "x", "c"])
    accuracy.add([1, 2], ["1", 3])  # labels compare as levels: 1 == "1"
    # The window keeps the last four rows: b/x wrong, c/c right, 1/"1" right, 2/3 wrong.
    assert accuracy.value() == (pytest.approx(2 / 4), 4)
    mae = LiveQuality("number", window=10)
    mae.check_labels([1.0, 2])
    with pytest.raises(FeedbackError):
        mae.check_labels(["high"])
    mae.add([1.0, 5.0], [2.0, 2.0])
    assert mae.value() == (pytest.approx(2.0), 2)


# --- alerts --------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    """A local webhook receiver; ``statuses`` are answered in turn (then 204)."""
    events: list[dict[str, Any]] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = statuses.pop(0) if statuses else 204
            if status < 300:
                events.append({"body": body, "auth": self.headers.get("Authorization")})
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", events, statuses
    server.shutdown()
    server.server_close()


def drift_report(drifted: bool) -> dict[str, Any]:
    entry = {
        "test": "ks",
        "psi": 1.0,
        "statistic": 0.5,
        "p_value": 1e-9,
        "drifted": drifted,
        "threshold": {"psi": 0.2, "p_value": 0.01},
    }
    return {
        "features": {"x3": entry},
        "predictions": None,
        "window_rows": 1000,
        "checked_at": "now",
        "overall": {"share": 0.1, "drifted": False},
    }


def test_webhook_once_per_cooldown_with_retries_and_github_format(
    receiver: tuple[str, list[dict[str, Any]], list[int]],
) -> None:
    url, events, statuses = receiver
    outcomes: list[str] = []
    settings = WebhookSettings(
        url=url, cooldown_seconds=0.6, backoff_seconds=0.01, format="github", token="secret"
    )
    alerts = DriftAlerts("svc", "v1", settings, outcomes.append)
    statuses.append(500)  # the first attempt fails, the retry gets through
    alerts.observe(drift_report(True))
    alerts.wait(5)
    assert len(events) == 1 and outcomes == ["sent"]
    assert events[0]["auth"] == "Bearer secret"
    body = events[0]["body"]
    assert body["event_type"] == "nb2prod-drift"
    assert body["client_payload"]["drifted"]["x3"]["psi"] == 1.0
    assert len(body["client_payload"]) <= 10  # GitHub's limit on client_payload properties
    alerts.observe(drift_report(False))
    alerts.observe(drift_report(True))  # newly drifted again, inside the cooldown
    alerts.wait(5)
    assert len(events) == 1 and outcomes == ["sent", "suppressed"]
    time.sleep(0.7)
    alerts.observe(drift_report(True))  # still drifting after the cooldown: reminded once
    alerts.wait(5)
    assert len(events) == 2


def test_webhook_does_not_follow_a_redirect_and_counts_it_failed() -> None:
    """A 302 to another port: never followed, the token stays home, the event is 'failed'."""
    hits: dict[str, list[str | None]] = {"redirector": [], "elsewhere": []}

    def server(name: str, status: int, location: str = "") -> ThreadingHTTPServer:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                hits[name].append(self.headers.get("Authorization"))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    elsewhere = server("elsewhere", 200)
    redirector = server("redirector", 302, f"http://127.0.0.1:{elsewhere.server_address[1]}/x")
    try:
        outcomes: list[str] = []
        settings = WebhookSettings(
            url=f"http://127.0.0.1:{redirector.server_address[1]}/hook",
            token="secret",
            retries=2,
            backoff_seconds=0.01,
        )
        alerts = DriftAlerts("svc", "v1", settings, outcomes.append)
        alerts.observe(drift_report(True))
        alerts.wait(5)
    finally:
        for httpd in (redirector, elsewhere):
            httpd.shutdown()
            httpd.server_close()
    assert outcomes == ["failed"]
    assert hits == {"redirector": ["Bearer secret", "Bearer secret"], "elsewhere": []}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/drift", True),
        ("http://127.0.0.1:9/drift", True),
        ("http://localhost:9/drift", True),
        ("http://[::1]:9/drift", True),
        ("http://example.com/drift", False),
        ("http://10.0.0.1/drift", False),
        ("file:///etc/passwd", False),
        ("ftp://127.0.0.1/drift", False),
        ("https:///no-host", False),
        ("hooks.example.com/drift", False),
    ],
)
def test_webhook_urls_are_https_or_loopback_http(url: str, allowed: bool) -> None:
    settings = WebhookSettings(url=url, token="secret")
    if allowed:
        DriftAlerts("svc", "v1", settings, lambda outcome: None)
    else:
        with pytest.raises(WebhookURLError, match="refused") as err:
            DriftAlerts("svc", "v1", settings, lambda outcome: None)
        assert "secret" not in str(err.value)


# --- the endpoints when monitoring is off --------------------------------------------------------


def test_monitoring_off_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NB2PROD_MONITORING", "0")
    app = FastAPI()
    app.state.after_predict = []
    assert install_monitoring(app, synthetic_card(), CollectorRegistry(), SimpleNamespace()) is None
    assert app.state.after_predict == []
    client = TestClient(app)
    assert client.get("/monitoring/drift").status_code == 503
    assert client.post("/feedback", json={"request_id": "x", "label": 1}).status_code == 503
