"""The review's OOM and blocking cases against the real image, in a memory-limited container.

One image per module, built by ``nb2prod build example_notebooks/iris_function.ipynb -o DIR``
(which also smoke-tests it); containers run as a restricted platform runs them: 512 MiB,
read-only root, a tmpfs at /tmp, published on a loopback port. Before the limits, a 40 MB
POST OOM-killed a 1 GiB container and a 194 MB one kept SIGTERM waiting 13 s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import reference
from helpers import assert_same_predictions, build_example, example_notebook
from service_server import (
    HealthzPoller,
    assert_fast,
    chunked_head,
    chunks_of,
    healthz_ms,
    post_raw,
    rows_body,
    wait_ready,
)

pytestmark = pytest.mark.docker

MB = 1_000_000
MEMORY = "512m"
ROW = {
    "sepal length (cm)": 5.1,
    "sepal width (cm)": 3.5,
    "petal length (cm)": 1.4,
    "petal width (cm)": 0.2,
}


@pytest.fixture(scope="module")
def image_ref(tmp_path_factory: pytest.TempPathFactory, docker_engine: Any) -> str:
    out = tmp_path_factory.mktemp("image") / "iris_function"
    build_example("iris_function", out, "-q")
    record = json.loads((out / ".nb2prod" / "image.json").read_text())
    return str(record["tags"][0])


class Running:
    """A container of the image, limited as above; ``url`` is its loopback address."""

    def __init__(self, client: Any, image: str) -> None:
        self.container = client.containers.run(
            image,
            detach=True,
            mem_limit=MEMORY,
            memswap_limit=MEMORY,  # no swap: over the limit means killed, as on a platform
            read_only=True,
            tmpfs={"/tmp": ""},
            ports={"8080/tcp": ("127.0.0.1", None)},
        )
        self.container.reload()
        port = self.container.ports["8080/tcp"][0]["HostPort"]
        self.url = f"http://127.0.0.1:{port}"
        wait_ready(self.url, self.exited, None, timeout=120)

    def exited(self) -> int | None:
        self.container.reload()
        return None if self.container.status in ("created", "running") else 1

    def state(self) -> dict[str, Any]:
        self.container.reload()
        return dict(self.container.attrs["State"])

    def remove(self) -> None:
        self.container.remove(force=True)


@pytest.fixture(scope="module")
def service(image_ref: str, docker_engine: Any) -> Iterator[Running]:
    running = Running(docker_engine.client, image_ref)
    yield running
    running.remove()


def assert_alive_and_fast(running: Running) -> None:
    state = running.state()
    assert state["Status"] == "running" and not state["OOMKilled"], state
    assert min(healthz_ms(running.url) for _ in range(5)) < 100


def test_40mb_and_194mb_bodies_leave_the_container_alive(service: Running) -> None:
    response = httpx.post(
        f"{service.url}/predict",
        content=b"[" + b" " * (40 * MB) + b"]",
        headers={"content-type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 413
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {194 * MB}\r\n\r\n"
    ).encode()
    assert post_raw(service.url, head, (b" " * MB for _ in range(194)))[0] == 413
    assert_alive_and_fast(service)


def test_a_chunked_194mb_body_is_cut_off(service: Running) -> None:
    status, _, sent = post_raw(service.url, chunked_head(), chunks_of(194 * MB))
    assert status == 413
    assert sent < 30 * MB  # the 4 MiB limit plus what the socket buffers and docker-proxy held
    assert_alive_and_fast(service)


def test_healthz_answers_fast_during_a_large_request(service: Running) -> None:
    body = rows_body(ROW, 9_000)
    answers: list[int] = []

    def large() -> None:
        for _ in range(3):
            answers.append(
                httpx.post(f"{service.url}/predict", content=body, timeout=120).status_code
            )

    workers = [
        threading.Thread(target=large),
        threading.Thread(target=post_raw, args=(service.url, chunked_head(), chunks_of(194 * MB))),
    ]
    with HealthzPoller(service.url) as poller:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=180)
    assert answers == [200, 200, 200]
    assert len(poller.latencies_ms) >= 10
    assert_fast(poller.latencies_ms)
    assert_alive_and_fast(service)


def post_quietly(url: str, body: bytes) -> None:
    """POST, ignoring a connection the stopping container drops (a thread must not raise)."""
    try:
        httpx.post(url, content=body, timeout=60)
    except httpx.HTTPError:
        pass


def test_sigterm_during_a_large_request_exits_promptly(image_ref: str, docker_engine: Any) -> None:
    running = Running(docker_engine.client, image_ref)
    try:
        flood = threading.Thread(
            target=post_raw, args=(running.url, chunked_head(), chunks_of(194 * MB))
        )
        body = rows_body(ROW, 9_000)
        large = threading.Thread(target=post_quietly, args=(f"{running.url}/predict", body))
        flood.start()
        large.start()
        time.sleep(0.3)
        started = time.monotonic()
        running.container.stop(timeout=10)  # SIGTERM, then SIGKILL after 10 s as Docker does
        took = time.monotonic() - started
        state = running.state()
        logs = running.container.logs().decode()
        flood.join(timeout=30)
        large.join(timeout=30)
    finally:
        running.remove()
    assert took < 5, f"the container took {took:.1f}s to stop"
    assert state["ExitCode"] != 137 and not state["OOMKilled"], state  # 137: SIGKILL
    assert "shutting down" in logs


def test_the_image_scores_a_file_in_batch(
    image_ref: str, docker_engine: Any, tmp_path: Path
) -> None:
    """`python -m nb2prod_runtime.batch` in the image, as a Cloud Run Job or a cron runs it:
    read-only root, the non-root user, the data on a mounted volume."""
    rows = reference.example_rows("iris_function", 12)
    expected = reference.reference_predictions(example_notebook("iris_function"), rows)
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image's user (10001) writes the output here
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", range(len(frame)))
    frame.to_csv(data / "in.csv", index=False)
    command = ["python", "-m", "nb2prod_runtime.batch", "/data/in.csv", "-o", "/data/out.csv"]
    container = docker_engine.client.containers.run(
        image_ref,
        command=[*command, "--keep", "id", "--json"],
        detach=True,
        mem_limit=MEMORY,
        read_only=True,
        tmpfs={"/tmp": ""},
        volumes={str(data): {"bind": "/data", "mode": "rw"}},
    )
    try:
        status = container.wait(timeout=120)
        logs = container.logs().decode()
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, logs
    scored = pd.read_csv(data / "out.csv")
    assert list(scored["id"]) == list(range(len(rows)))
    assert_same_predictions(expected, list(scored["prediction"]))
    assert json.loads((data / "out.csv.nb2prod.json").read_text())["rows_scored"] == len(rows)
