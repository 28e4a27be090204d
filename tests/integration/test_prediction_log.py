"""The prediction log of a real service: uvicorn on loopback serving the iris example build.

- stdout (the default): one Cloud Logging entry per request, labelled ``nb2prod_log:
  predictions``, with the X-Request-ID, K_REVISION, the rows sent and the answers returned,
  also when concurrent requests are micro-batched together; a sensitive column's name and
  values appear nowhere in the service's output.
- NB2PROD_PREDICTION_LOG_SAMPLE: 0 logs nothing, 0.5 about half of a few hundred requests.
- NB2PROD_PREDICTION_LOG=DIR: rotating JSON Lines files, each complete whenever it is visible;
  after SIGTERM every request is in a published file and no temporary file is left.
- A sink that does not keep up (stdout into a pipe nobody reads) and a tiny queue: requests
  keep their speed, the rows that did not fit are dropped and counted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port
from service_server import Uvicorn, metric, prediction_log_settled, wait_ready

IRIS = "iris_function"
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SENSITIVE = "petal width (cm)"
#: A value sent only in the sensitive column: it must never show up in the output.
SECRET_VALUE = 0.918273645


@pytest.fixture(scope="module")
def iris(built_examples: Callable[[str], Path]) -> Path:
    return built_examples(IRIS)


def _rows(rng: random.Random, n: int) -> list[dict[str, float]]:
    """``n`` iris-like rows with distinct values (two decimals, as a client would send)."""
    return [
        {
            COLUMNS[0]: round(rng.uniform(4.3, 7.9), 2),
            COLUMNS[1]: round(rng.uniform(2.0, 4.4), 2),
            COLUMNS[2]: round(rng.uniform(1.0, 6.9), 2),
            COLUMNS[3]: round(rng.uniform(0.1, 2.5), 2),
        }
        for _ in range(n)
    ]


def _entries(log_text: str) -> list[dict[str, Any]]:
    """The prediction log entries among the service's JSON log lines."""
    entries = []
    for line in log_text.splitlines():
        record = json.loads(line)  # every line the service writes is JSON
        if record.get("logging.googleapis.com/labels", {}).get("nb2prod_log") == "predictions":
            entries.append(record)
    return entries


def _assert_graceful(returncode: int | None, log_text: str) -> None:
    """uvicorn ran the lifespan shutdown, then exited 0 or re-raised the SIGTERM."""
    assert returncode in (0, -signal.SIGTERM), log_text[-2000:]
    assert "Application shutdown complete." in log_text


def _post(client: httpx.Client, rows: list[dict[str, float]], request_id: str) -> Any:
    response = client.post(
        "/predict", json={"instances": rows}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_stdout_entries_carry_the_request_and_never_a_sensitive_column(iris: Path) -> None:
    server = Uvicorn(iris, {"K_REVISION": "iris-00042-abc", "NB2PROD_SENSITIVE_COLUMNS": SENSITIVE})
    rng = random.Random(7)
    sent = {f"req-{i:03d}": _rows(rng, 1 + i % 3) for i in range(48)}
    sent["req-secret"] = [{**_rows(rng, 1)[0], SENSITIVE: SECRET_VALUE}]
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # 16 at once: the service joins concurrent requests into one batch; each request
            # must still get its own entry.
            with ThreadPoolExecutor(16) as pool:
                futures = {rid: pool.submit(_post, client, rows, rid) for rid, rows in sent.items()}
                answers = {rid: future.result() for rid, future in futures.items()}
    finally:
        server.stop()
    _assert_graceful(server.process.returncode, server.log.read_text())
    output = server.log.read_text()
    entries = {entry["request_id"]: entry for entry in _entries(output)}
    assert sorted(entries) == sorted(sent)  # each request once, none twice
    for request_id, rows in sent.items():
        entry = entries[request_id]
        assert entry["severity"] == "INFO"
        assert entry["revision"] == "iris-00042-abc"
        assert entry["model_version"] == answers[request_id]["model_version"]
        assert entry["predictions"] == answers[request_id]["predictions"]
        assert entry["rows"] == len(rows) and entry["row_offset"] == 0
        expected = [{c: row[c] for c in COLUMNS if c != SENSITIVE} for row in rows]
        assert entry["inputs"] == expected
    assert str(SECRET_VALUE) not in output
    assert not any(SENSITIVE in json.dumps(entry) for entry in entries.values())


def test_sampling_zero_logs_nothing_and_a_half_logs_about_half(iris: Path) -> None:
    rng = random.Random(11)
    counts = {}
    for sample, requests in (("0", 50), ("0.5", 400)):
        server = Uvicorn(iris, {"NB2PROD_PREDICTION_LOG_SAMPLE": sample})
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for i in range(requests):
                    _post(client, _rows(rng, 1), f"s{sample}-{i}")
            logged_rows = None if sample == "0" else prediction_log_settled(server.url)[0]
        finally:
            server.stop()
        counts[sample] = (len(_entries(server.log.read_text())), logged_rows)
    assert counts["0"] == (0, None)
    logged, metric = counts["0.5"]
    # Binomial(400, 0.5): mean 200, sd 10; 150..250 is five sd either way.
    assert 150 <= logged <= 250, logged
    assert metric == logged  # one row a request


def test_the_file_sink_publishes_complete_rotated_files(iris: Path, tmp_path: Path) -> None:
    folder = tmp_path / "predictions"
    server = Uvicorn(
        iris, {"NB2PROD_PREDICTION_LOG": str(folder), "NB2PROD_PREDICTION_LOG_ROTATE_BYTES": "3000"}
    )
    rng = random.Random(3)
    sent = [f"file-{i:03d}" for i in range(120)]
    answers = {}
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i, request_id in enumerate(sent):
                answers[request_id] = _post(client, _rows(rng, 2), request_id)["predictions"]
                if i % 20 == 19:
                    # While the service writes: every visible file is whole JSON Lines.
                    for path in folder.glob("*.jsonl"):
                        [json.loads(line) for line in path.read_text().splitlines()]
    finally:
        server.stop()
    _assert_graceful(server.process.returncode, server.log.read_text())
    assert _entries(server.log.read_text()) == []  # not on stdout as well
    leftovers = [p.name for p in folder.iterdir() if not p.name.endswith(".jsonl")]
    assert leftovers == []  # the open file was published at shutdown
    files = sorted(folder.glob("*.jsonl"))
    assert len(files) >= 5, [p.name for p in files]  # ~120 records of ~300 bytes, 3000 a file
    records = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    assert [r["request_id"] for r in records] == sent  # name order is write order
    assert all(r["predictions"] == answers[r["request_id"]] for r in records)
    assert all(f"-{server.process.pid}-" in p.name for p in files)


def test_a_full_queue_drops_and_counts_instead_of_slowing_requests(iris: Path) -> None:
    """stdout is a pipe the test does not read: once its buffer is full the writer thread
    blocks, the 5-row queue fills, and later requests must neither wait nor fail."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "LOG_LEVEL"}}
    env.update(LOG_LEVEL="WARNING", NB2PROD_PREDICTION_LOG_QUEUE_ROWS="5")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving:app", "--host", "127.0.0.1", "--port",
         str(port), "--no-access-log", "--timeout-graceful-shutdown", "8"],
        cwd=iris, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    drained: list[bytes] = []
    try:
        wait_ready(url, process.poll, None, timeout=90)
        rng = random.Random(5)
        latencies = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(600):  # ~600 bytes an entry: the 64 KiB pipe fills after ~110
                started = time.perf_counter()
                _post(client, _rows(rng, 1), f"full-{i}")
                latencies.append(time.perf_counter() - started)
        dropped = metric(url, "nb2prod_prediction_log_dropped_total")
        logged = metric(url, "nb2prod_prediction_log_rows_total")
        assert dropped >= 300, (dropped, logged)
        assert logged < 300
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.05 and latencies[-1] < 1.0, latencies[-5:]
    finally:
        # Read the pipe again so the writer can finish, and stop the service as a platform does.
        reader = threading.Thread(target=lambda: drained.append(process.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        reader.join(timeout=20)
    assert process.returncode in (0, -signal.SIGTERM)
    entries = _entries(b"".join(drained).decode())
    # Drained at shutdown: every request was either written or counted as dropped.
    assert len(entries) + dropped == 600, (len(entries), dropped)


@pytest.mark.parametrize(
    "env",
    [{"NB2PROD_PREDICTION_LOG_SAMPLE": "2"}, {"NB2PROD_PREDICTION_LOG": "nosuchscheme://bucket"}],
)
def test_a_bad_setting_stops_the_service_with_one_clear_line(
    iris: Path, env: dict[str, str]
) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "LOG_LEVEL"}}
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "serving:app", "--port", str(free_port())],
        cwd=iris, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    ((name, value),) = env.items()
    refusals = [json.loads(line) for line in done.stdout.splitlines() if f"{name}={value}" in line]
    assert refusals, done.stdout + done.stderr
    assert refusals[0]["severity"] == "ERROR"
    assert refusals[0]["message"].startswith("refusing to start:")


def test_a_build_never_logs_the_golden_rows_it_checks(tmp_path: Path) -> None:
    """The parity check sends the golden rows (training rows) through the service in process:
    none of them may reach the build's output as prediction log records."""
    from helpers import build_example

    result = build_example("iris_function", tmp_path / "build", "--no-docker")
    output = result.stdout + result.stderr
    assert "nb2prod_log" not in output and '"inputs"' not in output, output[-2000:]
    golden = json.loads((tmp_path / "build" / "model" / "golden.json").read_text())
    assert golden["rows"]  # the rows that were checked exist, and are not in the output:
    assert not any(json.dumps(row) in output for row in golden["rows"])
