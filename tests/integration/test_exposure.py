"""What the served model exposes and keeps, through a real `nb2prod serve` on loopback.

One build of example_notebooks/diabetes_regression.ipynb (patient records: the example where a
leak matters) serves each test with its own environment:

- 10 MB strings in a categorical column keep the process RSS and /monitoring/drift's body small;
- /metadata serves the allow-listed card fields: no golden row, no training value, no path;
- NB2PROD_ADMIN_TOKEN guards /metadata, /monitoring/drift and /feedback, not /predict;
- the drift webhook never follows a redirect (nor sends its token elsewhere) and counts the
  redirect as a failure; a file:// webhook stops the service at start-up with one clear line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from helpers import PUBLIC_CARD_FIELDS, REPO_DIR, ServeProcess, build_example, example_notebook
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

pytestmark = pytest.mark.slow

REPO = REPO_DIR
NOTEBOOK = example_notebook("diabetes_regression")
TOKEN = "admin-token-for-tests"  # noqa: S105 - a test value
ALLOWED_FIELDS = PUBLIC_CARD_FIELDS


def x_train() -> pd.DataFrame:
    """X_train of the diabetes notebook, rebuilt as the notebook builds it."""
    diabetes = load_diabetes(as_frame=True, scaled=False)
    serum = {"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg", "s6": "glu"}
    patients = diabetes.frame.rename(columns=serum)
    patients["sex"] = patients["sex"].map({1.0: "female", 2.0: "male"})
    x, y = patients.drop(columns="target"), patients["target"]
    frame: pd.DataFrame = train_test_split(x, y, test_size=0.2, random_state=7)[0]
    return frame


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exposure") / "build"
    build_example(NOTEBOOK.stem, out, "--no-docker", "-q")
    return out


class Served(ServeProcess):
    """`nb2prod serve DIR` (helpers.ServeProcess) with extra environment and a client; started
    without waiting, so that a test can watch a service that must refuse to start."""

    def __init__(self, build_dir: Path, env: dict[str, str], log: Path) -> None:
        super().__init__(build_dir, log, env={"LOG_LEVEL": "WARNING", **env}, wait=False)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self) -> Served:
        self.wait_until_ready()
        return self

    def metric(self, name: str, labels: str = "") -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(f"{name}{labels} ") or line.startswith(f"{name}{{{labels}}} "):
                return float(line.split()[-1])
        return 0.0

    def close(self) -> None:
        self.client.close()
        super().close()


@pytest.fixture
def serve(build_dir: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(env: dict[str, str], ready: bool = True) -> Served:
        served = Served(build_dir, env, tmp_path / f"serve-{len(started)}.log")
        started.append(served)
        return served.wait_ready() if ready else served

    yield start
    for served in started:
        served.close()


# --- item: monitoring memory is bounded in bytes ------------------------------------------------


def test_10mb_category_strings_keep_rss_and_the_drift_report_small(serve: Any) -> None:
    served = serve({"NB2PROD_MAX_BODY_BYTES": str(32 * 2**20)})
    rows = x_train().iloc[:1].to_dict(orient="records")

    def send(count: int, start: int) -> None:
        for index in range(count):
            # Each value distinct, so that nothing could be shared between requests.
            huge = f"{index + start:08d}" + "x" * (10 * 2**20)
            response = served.client.post(
                "/predict", json={"instances": [{**rows[0], "sex": huge}]}
            )
            assert response.status_code == 200, response.text[:300]

    send(3, 0)  # warm-up: first-use allocations of the parser and the frame builder
    before = served.rss_bytes()
    send(20, 100)
    growth = served.rss_bytes() - before
    # Unbounded, the queue alone held the 20 strings: 200 MB. Bounded, 64 characters each.
    assert growth < 40 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB over 20 x 10 MB requests"

    response = served.client.get("/monitoring/drift", params={"refresh": "true"})
    assert response.status_code == 200
    assert len(response.content) < 20_000, len(response.content)
    assert "x" * 64 not in response.text  # no client value beyond a short preview
    unseen = response.json()["features"]["sex"]["unseen"]
    assert unseen["count"] == 23  # every request counted, though only 10 are named
    assert 0 < len(unseen["levels"]) <= 10
    assert all(len(level) <= 24 for level in unseen["levels"]), unseen["levels"]


# --- item: /metadata serves only what a client needs ------------------------------------------


def leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def test_metadata_has_no_training_data_no_parameters_and_no_paths(
    serve: Any, build_dir: Path
) -> None:
    served = serve({})
    response = served.client.get("/metadata")
    assert response.status_code == 200
    body = response.json()
    assert set(body) <= ALLOWED_FIELDS and {"name", "model_version", "input_schema"} <= set(body)
    assert body["notebook"]["path"] in (
        "diabetes_regression.ipynb",
        str(NOTEBOOK.relative_to(REPO)),
    )
    assert body["output"] == {"kind": "number"}
    assert set(body["metrics"]) == {"mae", "r2"}
    columns = [column["name"] for column in body["input_schema"]["columns"]]
    assert columns == list(x_train().columns)

    # No training value: every number served is a metric (or a schema flag).
    training = x_train()
    numbers = {
        value
        for value in leaves(body)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    numeric = training.select_dtypes("number").to_numpy().ravel()
    assert numbers.isdisjoint(set(numeric.tolist())), numbers & set(numeric.tolist())
    # No golden row: the rows the smoke test replays, wherever the build directory keeps them.
    card = json.loads((build_dir / "model" / "model_card.json").read_text())
    golden_file = build_dir / "model" / "golden.json"
    assert "golden" not in card
    golden = json.loads(golden_file.read_text())
    # Eight sampled training rows, plus one with a null for each column the serving code handles.
    assert len(golden["rows"]) >= 8
    for row in golden["rows"]:
        served_numbers = [v for v in row.values() if isinstance(v, float) and v in numbers]
        assert not served_numbers, row
    # No absolute path, no parameter, no profile.
    text = response.text
    for secret in (str(REPO), str(build_dir), "/work/", "n_estimators", "learning_rate"):
        assert secret not in text, secret
    assert not [v for v in leaves(body) if isinstance(v, str) and v.startswith("/")]
    for field in ("golden", "reference_profile", "parameters", "libraries", "example"):
        assert f'"{field}"' not in text, field
    # The OpenAPI description names the notebook without the build machine's path either.
    openapi = served.client.get("/openapi.json")
    assert str(REPO) not in openapi.text
    # Its examples (shown at /docs, unauthenticated) are medians and shared levels: together
    # they are no training record, and no string example is a rare (personal) value.
    properties = openapi.json()["components"]["schemas"]["InputRow"]["properties"]
    example = {name: prop["examples"][0] for name, prop in properties.items()}
    as_records = training.astype(object).to_dict(orient="records")
    assert all(example != record for record in as_records)
    for name in training.select_dtypes("number").columns:
        assert example[name] == float(np.sort(training[name].to_numpy())[len(training) // 2])


def test_admin_token_guards_metadata_monitoring_and_feedback_only(serve: Any) -> None:
    served = serve({"NB2PROD_ADMIN_TOKEN": TOKEN})
    row = x_train().iloc[:1].to_dict(orient="records")
    predicted = served.client.post("/predict", json={"instances": row})
    assert predicted.status_code == 200  # clients predict without the admin token
    assert served.client.get("/healthz").status_code == 200
    assert served.client.get("/metrics").status_code == 200
    feedback = {"request_id": predicted.headers["x-request-id"], "label": 100.0}
    good = {"Authorization": f"Bearer {TOKEN}"}
    for bad in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, path, body in (
            ("GET", "/metadata", None),
            ("GET", "/monitoring/drift", None),
            ("POST", "/feedback", feedback),
        ):
            answer = served.client.request(method, path, json=body, headers=bad)
            assert answer.status_code == 401, (method, path, bad, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
            assert TOKEN not in answer.text
    assert served.client.get("/metadata", headers=good).status_code == 200
    assert served.client.get("/monitoring/drift", headers=good).status_code == 200
    answer = served.client.post("/feedback", json=feedback, headers=good)
    assert answer.status_code == 200, answer.text  # the 401s recorded nothing
    # `nb2prod monitor` sends the token from its own environment.
    url = f"http://127.0.0.1:{served.port}"
    command = [sys.executable, "-m", "nb2prod", "monitor", url]
    env = {k: v for k, v in os.environ.items() if k != "NB2PROD_ADMIN_TOKEN"}
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
    env["NB2PROD_ADMIN_TOKEN"] = TOKEN
    allowed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


# --- item: the drift webhook keeps its token ------------------------------------------------------


class Receiver:
    """A loopback HTTP server recording (path, Authorization) of each POST; ``answer`` decides."""

    def __init__(self, answer: Any) -> None:
        self.requests: list[tuple[str, str | None]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                requests.append((self.path, self.headers.get("Authorization")))
                status, headers = answer()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_never_follows_a_redirect_and_counts_it_failed(serve: Any) -> None:
    elsewhere = Receiver(lambda: (204, {}))
    redirector = Receiver(lambda: (302, {"Location": f"{elsewhere.url}/collect"}))
    try:
        served = serve(
            {
                "NB2PROD_DRIFT_WEBHOOK": f"{redirector.url}/hook",
                "NB2PROD_DRIFT_WEBHOOK_TOKEN": "webhook-secret",
                "NB2PROD_DRIFT_WEBHOOK_RETRIES": "2",
                "NB2PROD_DRIFT_EVERY_REQUESTS": "1000000",
            }
        )
        training = x_train()
        index = np.random.default_rng(1).integers(0, len(training), 1000)
        rows = training.iloc[index].to_dict(orient="records")
        shift = 2 * float(training["bmi"].std())
        shifted = [{**row, "bmi": row["bmi"] + shift} for row in rows]
        for start in range(0, len(shifted), 50):
            answer = served.client.post("/predict", json={"instances": shifted[start : start + 50]})
            assert answer.status_code == 200, answer.text
        report = served.client.get("/monitoring/drift", params={"refresh": "true"}).json()
        assert "bmi" in report["overall"]["drifted_features"], report["overall"]

        deadline = time.monotonic() + 20
        failed = 'outcome="failed"'
        while (
            time.monotonic() < deadline
            and served.metric("nb2prod_drift_webhooks_total", failed) < 1
        ):
            time.sleep(0.2)
        assert served.metric("nb2prod_drift_webhooks_total", failed) == 1
        assert served.metric("nb2prod_drift_webhooks_total", 'outcome="sent"') == 0
        # Both attempts went to the configured URL, with the token; none followed the 302.
        assert redirector.requests == [("/hook", "Bearer webhook-secret")] * 2
        assert elsewhere.requests == []
    finally:
        redirector.close()
        elsewhere.close()


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "http://example.com/hook", "ftp://127.0.0.1/x"]
)
def test_a_webhook_that_is_not_https_stops_the_service_with_one_clear_line(
    serve: Any, url: str
) -> None:
    served = serve(
        {"NB2PROD_DRIFT_WEBHOOK": url, "NB2PROD_DRIFT_WEBHOOK_TOKEN": "webhook-secret"},
        ready=False,
    )
    assert served.process.wait(timeout=60) != 0
    log = served.log.read_text()
    refusals = [line for line in log.splitlines() if "NB2PROD_DRIFT_WEBHOOK=" in line]
    assert refusals, log
    record = json.loads(refusals[0])  # one JSON log line, at ERROR
    assert record["severity"] == "ERROR"
    assert "refused" in record["message"] and "https://" in record["message"]
    assert "webhook-secret" not in log
