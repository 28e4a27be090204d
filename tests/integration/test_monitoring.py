"""Monitoring end to end: real example models, served by `nb2prod serve` on loopback, real data.

The training rows are rebuilt exactly as the example notebooks build them (same loaders, same
splits), so "rows sampled from the training data" means just that. A shifted copy moves one
numeric column by two standard deviations. Drift must show in /monitoring/drift, in /metrics and
in `nb2prod monitor`'s exit code; a local HTTP receiver counts the webhook events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from helpers import CliResult, ServeProcess, build_example, run_cli
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_diabetes, load_iris
from sklearn.model_selection import train_test_split

pytestmark = pytest.mark.slow

DRIFT_EXIT_CODE = 12
WINDOW = 1000


# --- the examples' data, as the notebooks build it -----------------------------------------------


def diabetes_split() -> tuple[pd.DataFrame, pd.Series]:
    """X_train, y_train of example_notebooks/diabetes_regression.ipynb."""
    diabetes = load_diabetes(as_frame=True, scaled=False)
    serum = {"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg", "s6": "glu"}
    patients = diabetes.frame.rename(columns=serum)
    patients["sex"] = patients["sex"].map({1.0: "female", 2.0: "male"})
    x, y = patients.drop(columns="target"), patients["target"]
    x_train, _, y_train, _ = train_test_split(x, y, test_size=0.2, random_state=7)
    return x_train, y_train


def iris_split() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """X_train, X_test and the species names of y_test, as iris_function.ipynb splits them."""
    iris = load_iris(as_frame=True)
    x, y = iris.frame[list(iris.feature_names)], iris.frame["target"]
    x_train, x_test, _, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    species = pd.Series(iris.target_names[y_test.to_numpy()], index=y_test.index)
    return x_train, x_test, species


def sample_rows(frame: pd.DataFrame, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` rows drawn with replacement from ``frame``, as JSON records."""
    index = np.random.default_rng(seed).integers(0, len(frame), n)
    records: list[dict[str, Any]] = frame.iloc[index].to_dict(orient="records")
    return records


# --- a served build, a webhook receiver, promtool ------------------------------------------------


def build(notebook: str, out: Path) -> Path:
    build_example(notebook, out, "--no-docker", "-q")
    return out


class Served(ServeProcess):
    """`nb2prod serve DIR` (helpers.ServeProcess) with a client and the monitoring reads."""

    def __init__(self, build_dir: Path, env: dict[str, str], log: Path) -> None:
        super().__init__(build_dir, log, env={"LOG_LEVEL": "WARNING", **env})
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def predict(self, rows: list[dict[str, Any]]) -> httpx.Response:
        response = self.client.post("/predict", json={"instances": rows})
        assert response.status_code == 200, response.text
        return response

    def drift(self) -> dict[str, Any]:
        response = self.client.get("/monitoring/drift", params={"refresh": "true"})
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report

    def metrics(self) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        text = self.client.get("/metrics").text
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return text, samples

    def close(self) -> None:
        self.client.close()
        super().close()


class WebhookReceiver:
    """A local HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        events: list[dict[str, Any]] = []
        self.events = events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                events.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/drift"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def promtool_path() -> str | None:
    """promtool from NB2PROD_PROMTOOL or PATH; None without it (a failure in CI)."""
    found = os.environ.get("NB2PROD_PROMTOOL") or shutil.which("promtool")
    if not found and os.environ.get("NB2PROD_REQUIRE_DOCKER") == "1":
        pytest.fail(f"NB2PROD_REQUIRE_DOCKER=1 (CI) but {PROMTOOL_MISSING}")
    return found


PROMTOOL_MISSING = (
    "promtool not found (set NB2PROD_PROMTOOL or put it on PATH: apt-get download "
    "prometheus && dpkg -x prometheus_*.deb DIR, then DIR/usr/bin/promtool)"
)


def assert_promtool_clean(exposition: str) -> None:
    """`promtool check metrics` reports nothing (skipped here without promtool; see below)."""
    promtool = promtool_path()
    if promtool is None:
        return  # test_promtool_check_metrics_is_clean skips, saying why
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def nb2prod_monitor(url: str, *args: str) -> CliResult:
    """``nb2prod monitor URL ARGS`` in process: exit code and output are what the tests read."""
    return run_cli("monitor", url, *args)


def wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Any]]:
    work = tmp_path_factory.mktemp("diabetes")
    receiver = WebhookReceiver()
    served = Served(
        build("diabetes_regression", work / "build"),
        {
            "NB2PROD_DRIFT_EVERY_REQUESTS": "20",
            "NB2PROD_DRIFT_WEBHOOK": receiver.url,
            "NB2PROD_DRIFT_WEBHOOK_COOLDOWN": "3600",
        },
        work / "serve.log",
    )
    try:
        yield served, receiver
    finally:
        served.close()
        receiver.close()


def send_in_batches(served: Served, rows: list[dict[str, Any]], size: int = 10) -> None:
    for start in range(0, len(rows), size):
        served.predict(rows[start : start + size])


def test_drift_on_one_shifted_column_only(diabetes_service: tuple[Served, Any]) -> None:
    served, receiver = diabetes_service
    x_train, _ = diabetes_split()
    rows = sample_rows(x_train, WINDOW, seed=1)

    # 1. Training rows: no drift anywhere.
    send_in_batches(served, rows)
    report = served.drift()
    assert report["status"] == "ok" and report["window_rows"] == WINDOW
    assert set(report["features"]) == set(x_train.columns)
    assert report["features"]["sex"]["test"] == "chi2"
    assert not [name for name, f in report["features"].items() if f["drifted"]], report
    assert not report["predictions"]["drifted"]
    assert report["overall"] == {**report["overall"], "drifted": False, "share": 0.0}
    text, samples = served.metrics()
    for column in x_train.columns:
        assert samples[("nb2prod_feature_drift", (("feature", column),))] == 0
    assert samples[("nb2prod_prediction_drift", ())] == 0
    assert samples[("nb2prod_drift_window_rows", ())] == WINDOW
    assert samples[("nb2prod_drift_checks_total", ())] >= 1
    assert_promtool_clean(text)
    healthy = nb2prod_monitor(served.url)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "DRIFT" not in healthy.stdout and "bmi" in healthy.stdout
    assert receiver.events == []

    # 2. The same rows with bmi moved by two standard deviations: bmi drifts, nothing else.
    shift = 2 * float(x_train["bmi"].std())
    shifted = [{**row, "bmi": row["bmi"] + shift} for row in rows]
    send_in_batches(served, shifted)
    report = served.drift()
    drifted = [name for name, f in report["features"].items() if f["drifted"]]
    assert drifted == ["bmi"], {n: (f["psi"], f["p_value"]) for n, f in report["features"].items()}
    assert report["features"]["bmi"]["psi"] >= 0.2
    assert report["features"]["bmi"]["p_value"] < report["features"]["bmi"]["threshold"]["p_value"]
    assert report["overall"]["drifted_features"] == ["bmi"]
    assert report["overall"]["share"] == pytest.approx(1 / len(x_train.columns))
    assert not report["overall"]["drifted"]  # 1 of 10 columns is below the 0.5 dataset share
    text, samples = served.metrics()
    for column in x_train.columns:
        expected = 1 if column == "bmi" else 0
        assert samples[("nb2prod_feature_drift", (("feature", column),))] == expected, column
    assert samples[("nb2prod_feature_psi", (("feature", "bmi"),))] >= 0.2
    assert_promtool_clean(text)
    result = nb2prod_monitor(served.url)
    assert result.returncode == DRIFT_EXIT_CODE, result.stdout + result.stderr
    bmi_line = next(line for line in result.stdout.splitlines() if line.startswith("bmi "))
    assert bmi_line.rstrip().endswith("DRIFT")
    assert sum(line.rstrip().endswith("DRIFT") for line in result.stdout.splitlines()) == (
        1 + report["predictions"]["drifted"]
    )
    assert "drift in bmi" in result.stderr
    assert nb2prod_monitor(served.url, "--min-share", "0.5").returncode == 0
    as_json = nb2prod_monitor(served.url, "--json")
    assert as_json.returncode == DRIFT_EXIT_CODE
    assert json.loads(as_json.stdout)["drift"]["overall"]["drifted_features"] == ["bmi"]

    # 3. Exactly one webhook event, naming bmi with its statistics.
    wait_for(lambda: len(receiver.events) >= 1)
    time.sleep(0.5)
    assert len(receiver.events) == 1
    event = receiver.events[0]
    assert event["model_version"] == report["model_version"]
    assert event["service"] == served.client.get("/metadata").json()["name"]  # no K_SERVICE
    assert "bmi" in event["drifted"] and event["drifted"]["bmi"]["psi"] >= 0.2
    assert set(event["drifted"]) - {"bmi", "<predictions>"} == set()

    # 4. Back to normal, then drifting again inside the cooldown: still one event.
    send_in_batches(served, rows)
    assert not served.drift()["overall"]["drifted_features"]
    send_in_batches(served, shifted)
    assert served.drift()["overall"]["drifted_features"] == ["bmi"]
    time.sleep(1.0)
    assert len(receiver.events) == 1
    _, samples = served.metrics()
    assert samples[("nb2prod_drift_webhooks_total", (("outcome", "sent"),))] == 1
    assert samples[("nb2prod_drift_webhooks_total", (("outcome", "suppressed"),))] >= 1


def test_feedback_mae_and_unknown_ids(diabetes_service: tuple[Served, Any]) -> None:
    served, _ = diabetes_service
    x_train, y_train = diabetes_split()
    picked = x_train.iloc[:30]
    response = served.predict(picked.to_dict(orient="records"))
    predictions = response.json()["predictions"]
    labels = [float(v) for v in y_train.iloc[:30]]
    answer = served.client.post(
        "/feedback", json={"request_id": response.headers["x-request-id"], "labels": labels}
    )
    assert answer.status_code == 200, answer.text
    expected = float(np.mean(np.abs(np.asarray(predictions) - np.asarray(labels))))
    assert answer.json()["quality"] == {
        "metric": "mae",
        "value": pytest.approx(expected),
        "window_rows": 30,
    }
    _, samples = served.metrics()
    assert samples[("nb2prod_live_mae", ())] == pytest.approx(expected)

    unknown = served.client.post("/feedback", json={"request_id": "nope", "label": 1.0})
    assert unknown.status_code == 404
    assert unknown.json()["unknown_request_ids"] == ["nope"]
    again = served.client.post(
        "/feedback", json={"request_id": response.headers["x-request-id"], "labels": labels}
    )
    assert again.status_code == 404  # labelled once already


@pytest.fixture(scope="module")
def iris_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("iris")
    served = Served(
        build("iris_function", work / "build"),
        {"NB2PROD_DRIFT_EVERY_REQUESTS": "100", "NB2PROD_FEEDBACK_ROWS": "2000"},
        work / "serve.log",
    )
    try:
        yield served
    finally:
        served.close()


def test_feedback_moves_the_accuracy_gauge(iris_service: Served) -> None:
    x_train, x_test, species = iris_split()
    requests = []
    for index in range(len(x_test)):
        response = iris_service.predict([x_test.iloc[index].to_dict()])
        requests.append((response.headers["x-request-id"], response.json()["predictions"][0]))
    # Labels for every row; a few deliberately wrong ones make the expected accuracy < 1.
    labels = list(species)
    labels[:5] = ["setosa" if label != "setosa" else "virginica" for label in labels[:5]]
    expected = float(np.mean([p == label for (_, p), label in zip(requests, labels, strict=True)]))
    body = [
        {"request_id": rid, "label": label}
        for (rid, _), label in zip(requests, labels, strict=True)
    ]
    answer = iris_service.client.post("/feedback", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted_rows"] == len(x_test)
    _, samples = iris_service.metrics()
    assert samples[("nb2prod_live_accuracy_ratio", ())] == pytest.approx(expected)
    assert samples[("nb2prod_feedback_window_rows", ())] == len(x_test)
    assert 0.5 < expected < 1.0

    # No drift for iris training rows either; all four columns are compared.
    for row in sample_rows(x_train, WINDOW, seed=2):
        iris_service.predict([row])
    report = iris_service.drift()
    assert len(report["features"]) == 4
    assert not report["overall"]["drifted_features"] and not report["predictions"]["drifted"]
    assert_promtool_clean(iris_service.metrics()[0])


def test_server_memory_stays_flat(iris_service: Served) -> None:
    """Thousands of requests after warm-up: the bounded window and stores keep RSS flat."""
    x_train, _, _ = iris_split()
    rows = sample_rows(x_train, 500, seed=3)

    def run(requests: int) -> None:
        for index in range(requests):
            iris_service.predict([rows[index % len(rows)]])

    run(3000)  # fills the window, the request queue and the prediction store
    before = iris_service.rss_bytes()
    run(5000)
    growth = iris_service.rss_bytes() - before
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 5000 requests"


def test_promtool_check_metrics_is_clean(
    diabetes_service: tuple[Served, Any], iris_service: Served
) -> None:
    """Both live /metrics, with every monitoring metric populated, lint clean."""
    if promtool_path() is None:
        pytest.skip(PROMTOOL_MISSING)
    for served in (diabetes_service[0], iris_service):
        text, samples = served.metrics()
        assert any(name == "nb2prod_feature_psi" for name, _ in samples)
        assert_promtool_clean(text)
