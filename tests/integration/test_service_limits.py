"""Request limits and validation of the generated service, through a real uvicorn on loopback.

Each case is a request from the reliability review, sent to a build directory made by
``nb2prod build example_notebooks/iris_function.ipynb --no-docker``; the expected statuses come
from the review and HTTP, not from the code. The same body and blocking cases run against a
memory-limited container in test_service_container.py.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import build_example
from service_server import (
    HealthzPoller,
    Uvicorn,
    assert_fast,
    chunked_head,
    chunks_of,
    healthz_ms,
    post_raw,
    rows_body,
    send_and_hang_up,
)
from sklearn.datasets import load_iris

pytestmark = pytest.mark.slow

MB = 1_000_000
DEFAULT_MAX_BODY = 4 * 1024 * 1024  # the documented default of NB2PROD_MAX_BODY_BYTES
ROW = {
    "sepal length (cm)": 5.1,
    "sepal width (cm)": 3.5,
    "petal length (cm)": 1.4,
    "petal width (cm)": 0.2,
}
IRIS_CLASSES = [str(name) for name in load_iris().target_names]


@pytest.fixture(scope="module")
def iris_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("service") / "iris"
    build_example("iris_function", out, "--no-docker", "-q")
    return out


@pytest.fixture(scope="module")
def service(iris_build: Path) -> Iterator[Uvicorn]:
    server = Uvicorn(iris_build)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(service: Uvicorn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


def metrics_lines(http: httpx.Client) -> list[str]:
    return [
        line
        for line in http.get("/metrics").text.splitlines()
        if line.startswith("nb2prod_requests_total{")
    ]


# --- 1. body and row limits -----------------------------------------------------------------------


def test_content_length_over_the_limit_is_413_before_the_body_is_sent(service: Uvicorn) -> None:
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {40 * MB}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    status, body, sent = post_raw(service.url, head, iter([b""]), timeout=10)
    assert status == 413, body
    assert sent == 0 and time.monotonic() - started < 5  # answered without reading a byte
    assert b"NB2PROD_MAX_BODY_BYTES" in body
    assert healthz_ms(service.url) < 100


def test_40mb_post_is_413_and_the_service_lives_on(http: httpx.Client, service: Uvicorn) -> None:
    response = http.post(
        "/predict", content=b"[" + b" " * (40 * MB) + b"]", headers={"content-type": _JSON}
    )
    assert response.status_code == 413
    assert http.post("/predict", json={"instances": [ROW]}).status_code == 200


def test_chunked_body_is_cut_off_once_it_passes_the_limit(service: Uvicorn) -> None:
    status, body, sent = post_raw(service.url, chunked_head(), chunks_of(194 * MB))
    assert status == 413, body
    # The answer came while the client was still sending: a few MiB, not 194 MB.
    assert sent < DEFAULT_MAX_BODY + 16 * MB  # the limit, plus what socket buffers held
    assert healthz_ms(service.url) < 100


def test_row_limit_is_413_on_both_parsing_paths(iris_build: Path) -> None:
    server = Uvicorn(iris_build, env={"NB2PROD_MAX_ROWS": "1000"})
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            small = http.post("/predict", json={"instances": [ROW] * 1000})
            assert small.status_code == 200 and len(small.json()["predictions"]) == 1000
            over = rows_body(ROW, 1001)
            assert len(over) > 64 * 1024  # the off-loop path
            response = http.post("/predict", content=over, headers={"content-type": _JSON})
            assert response.status_code == 413
            assert "NB2PROD_MAX_ROWS" in response.json()["detail"]
            # Small and invalid: the row limit answers, not 1001 x 4 missing-field errors.
            empty = http.post("/predict", json={"instances": [{}] * 1001})
            assert empty.status_code == 413
    finally:
        server.stop()


def test_openapi_documents_the_limits_and_every_body(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    assert "NB2PROD_MAX_BODY_BYTES" in schema["info"]["description"]
    assert "NB2PROD_MAX_ROWS" in schema["info"]["description"]
    assert "413" in schema["paths"]["/predict"]["post"]["responses"]
    metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    feedback = schema["paths"]["/feedback"]["post"]
    assert feedback["requestBody"]["content"][_JSON]["schema"]
    assert {"404", "409", "422"} <= set(feedback["responses"])


# --- 3. large requests do not block ---------------------------------------------------------------


def test_healthz_answers_fast_while_large_requests_are_in_flight(
    http: httpx.Client, service: Uvicorn
) -> None:
    body = rows_body(ROW, 9_000)  # ~0.9 MB: parsed, validated and predicted off the loop
    answers: list[int] = []

    def large() -> None:
        with httpx.Client(base_url=service.url, timeout=120) as client:
            for _ in range(3):
                response = client.post("/predict", content=body, headers={"content-type": _JSON})
                answers.append(response.status_code)

    def flood() -> None:
        post_raw(service.url, chunked_head(), chunks_of(194 * MB))

    workers = [threading.Thread(target=large), threading.Thread(target=flood)]
    with HealthzPoller(service.url) as poller:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
    assert answers == [200, 200, 200]
    assert len(poller.latencies_ms) >= 10, "the large requests ended before they were measured"
    assert_fast(poller.latencies_ms)


def test_sigterm_during_a_large_request_exits_promptly(iris_build: Path) -> None:
    server = Uvicorn(iris_build)
    body = rows_body(ROW, 9_000)
    statuses: list[int] = []

    def large() -> None:
        try:
            statuses.append(
                httpx.post(f"{server.url}/predict", content=body, timeout=60).status_code
            )
        except httpx.HTTPError:
            statuses.append(0)

    flood = threading.Thread(
        target=post_raw, args=(server.url, chunked_head(), chunks_of(194 * MB))
    )
    request = threading.Thread(target=large)
    flood.start()
    request.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=15)
    took = time.monotonic() - started
    request.join(timeout=30)
    flood.join(timeout=30)
    # uvicorn re-raises the signal once it has shut down cleanly: -SIGTERM, after our lifespan
    # shutdown logged its line (a SIGKILL would leave no such line).
    assert code in (0, -signal.SIGTERM)
    assert "shutting down" in server.log.read_text()
    assert took < 5, f"SIGTERM took {took:.1f}s"  # Docker and Cloud Run kill after 10 s
    assert statuses in ([200], [0])  # finished in the grace period, or cut by the exit


# --- 4. every bad request is a 4xx ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/predict", b'{"dataframe_split": {"columns": [[1], {"a": 1}], "data": [[1, 2]]}}'),
        ("/feedback", b"{" * 100_000),
        ("/feedback", b"[" * 100_000),
        ("/feedback", b'{"a":' * 100_000),
        ("/predict", b"[" * 100_000),
        ("/predict", b'{"instances": ' + b"[" * 100_000),
        ("/predict", b'{"instances": [' + b'{"a":' * 100_000),
        ("/predict", b"\xff\xfe not utf-8"),
    ],
)
def test_bad_bodies_are_422_never_500(http: httpx.Client, path: str, content: bytes) -> None:
    response = http.post(path, content=content, headers={"content-type": _JSON})
    assert response.status_code == 422, response.text


def test_client_disconnect_mid_body_is_not_counted_as_500(
    http: httpx.Client, service: Uvicorn
) -> None:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    for _ in range(3):
        send_and_hang_up(service.url, head + b'{"instances": [')
    time.sleep(0.5)
    lines = metrics_lines(http)
    assert not [line for line in lines if 'status="500"' in line], lines
    disconnects = [line for line in lines if 'path="/predict",status="499"' in line]
    assert disconnects and float(disconnects[0].split()[-1]) >= 3


# --- 5. validation that protects monitoring -------------------------------------------------------


def predict_one(http: httpx.Client, request_id: str) -> dict[str, Any]:
    response = http.post(
        "/predict", json={"instances": [ROW]}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize("value", [False, True])
def test_a_boolean_is_not_a_number(http: httpx.Client, value: bool) -> None:
    response = http.post("/predict", json={"instances": [dict(ROW, **{"sepal width (cm)": value})]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "instances", 0, "sepal width (cm)"]


@pytest.mark.parametrize("label", ['{"a": 1}', "NaN", '"zzz"', "[1]", "null"])
def test_feedback_refuses_labels_the_model_cannot_produce(http: httpx.Client, label: str) -> None:
    request_id = f"label-{uuid.uuid4().hex}"
    predicted = predict_one(http, request_id)["predictions"][0]
    body = f'{{"request_id": "{request_id}", "label": {label}}}'.encode()
    response = http.post("/feedback", content=body, headers={"content-type": _JSON})
    assert response.status_code == 422, response.text
    if label == '"zzz"':
        assert all(name in response.json()["detail"] for name in IRIS_CLASSES)
    # Nothing was consumed: the right label is still accepted.
    good = http.post("/feedback", json={"request_id": request_id, "label": predicted})
    assert good.status_code == 200, good.text
    assert good.json()["quality"]["metric"] == "accuracy"


def test_a_reused_request_id_is_409_at_feedback(http: httpx.Client) -> None:
    predict_one(http, "reused-id")
    predict_one(http, "reused-id")
    response = http.post("/feedback", json={"request_id": "reused-id", "label": "setosa"})
    assert response.status_code == 409, response.text


# --- 6. small things ------------------------------------------------------------------------------


def test_head_healthz_and_readyz(http: httpx.Client) -> None:
    for path in ("/healthz", "/readyz"):
        response = http.head(path)
        assert response.status_code == 200
        assert response.content == b""


def test_metrics_is_text_and_labels_stay_bounded(http: httpx.Client, service: Uvicorn) -> None:
    response = http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    head = (
        f"POST /made-up-path-123 HTTP/1.1\r\nHost: x\r\nContent-Length: {40 * MB}\r\n\r\n"
    ).encode()
    assert post_raw(service.url, head, iter([b""]), timeout=10)[0] == 413
    assert "made-up-path-123" not in http.get("/metrics").text


_JSON = "application/json"
