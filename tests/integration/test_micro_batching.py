"""Micro-batching in the service, for real: a uvicorn server on loopback, 32 concurrent HTTP
clients, answers checked against the notebook run in Jupyter (nbclient).

- Hundreds of distinct rows, one (or a few) per request, from 32 clients at once, are joined
  into batches (the batch-size histogram says so) and each request gets exactly its own
  answers, equal to the notebook's.
- One poisoned request in a batch of good ones gets its 422; the others their answers.
- A notebook whose answers depend on the request's rows is refused by the build, built with
  ``--batch-dependent``, then served unbatched (the startup log says why), and
  ``NB2PROD_BATCHING=on`` is refused at startup with the reason.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import reference
from helpers import assert_same_predictions, example_notebook, run_cli_process, write_notebook
from service_server import Uvicorn

CLIENTS = 32


async def _send_all(
    url: str, bodies: list[list[dict[str, Any]]], tolerate: bool = False
) -> list[Any]:
    """POST each body to /predict, 32 clients at once (one connection each), in order
    (``tolerate``: a transport error is returned in the request's place)."""
    responses: list[Any] = [None] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(bodies)):
        queue.put_nowait(index)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                try:
                    responses[index] = await client.post(
                        "/predict", json={"instances": bodies[index]}
                    )
                except httpx.TransportError as err:
                    if not tolerate:
                        raise
                    responses[index] = err

        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    assert all(r is not None for r in responses)
    return responses


def send_all(url: str, bodies: list[list[dict[str, Any]]]) -> list[httpx.Response]:
    return asyncio.run(_send_all(url, bodies))


def histogram_count(metrics: str, name: str, le: str | None = None) -> float:
    """``name_count`` (or the ``le`` bucket) from a Prometheus exposition."""
    if le is None:
        pattern = rf"^{name}_count (\S+)$"
    else:
        pattern = rf'^{name}_bucket\{{le="{re.escape(le)}"\}} (\S+)$'
    match = re.search(pattern, metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_concurrent_requests_are_batched_and_each_gets_the_notebooks_answers(
    built_examples: Callable[[str], Path],
) -> None:
    name = "diabetes_regression"
    build = built_examples(name)
    rows = reference.example_rows(name, 300)
    expected = reference.reference_predictions(example_notebook(name), rows)
    # Mostly one row per request, with a few requests of 2 and 3 rows among them.
    bodies: list[list[dict[str, Any]]] = []
    start = 0
    while start < len(rows):
        size = (1, 1, 1, 2, 1, 3)[len(bodies) % 6]
        bodies.append(rows[start : start + size])
        start += size
    server = Uvicorn(build)
    try:
        responses = send_all(server.url, bodies)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        # Monitoring saw each request under its own id with its own predictions: labelling
        # every request with the notebook's answers for its rows is accepted whole and scores
        # a perfect fit (a request that got another's rows would add an error).
        labels, start = [], 0
        for response, body in zip(responses, bodies, strict=True):
            mine = expected[start : start + len(body)]
            labels.append({"request_id": response.headers["x-request-id"], "labels": mine})
            start += len(body)
        feedback = httpx.post(f"{server.url}/feedback", json=labels, timeout=30)
    finally:
        server.stop()
    assert feedback.status_code == 200, feedback.text
    assert feedback.json()["accepted_rows"] == len(rows)
    quality = feedback.json()["quality"]
    assert quality["value"] == pytest.approx(0.0, abs=1e-6), quality
    assert [r.status_code for r in responses] == [200] * len(bodies)
    got = [p for response in responses for p in response.json()["predictions"]]
    assert [len(r.json()["predictions"]) for r in responses] == [len(b) for b in bodies]
    assert_same_predictions(expected, got)
    log = server.log.read_text()
    assert "batching on: up to 64 rows" in log, log
    # The requests really were joined: batches holding more than one request happened,
    # and every request went through a batch.
    batches = histogram_count(metrics, "nb2prod_batch_requests")
    assert 0 < batches < len(bodies)
    assert histogram_count(metrics, "nb2prod_batch_requests", "1.0") < batches
    assert re.search(rf"^nb2prod_batch_rows_sum {len(rows)}\.0$", metrics, re.MULTILINE)


PICKY = [
    (
        "import time\n"
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "iris = load_iris(as_frame=True)\n"
        "X, y = iris.data, iris.target",
        ["load"],
    ),
    (
        "def preprocess(df):\n"
        "    if (df['sepal length (cm)'] <= 0).any():\n"
        "        raise ValueError('sepal length must be positive')\n"
        "    time.sleep(0.05)  # a costly feature step: requests queue up behind it\n"
        "    return df",
        ["preprocess"],
    ),
    ("model = LogisticRegression(max_iter=500).fit(preprocess(X), y)", ["train"]),
    ("predictions = model.predict(preprocess(X))", ["predict"]),
]


PICKY_RECIPE = "__out = [int(p) for p in model.predict(preprocess(__like(X)))]"


@pytest.fixture(scope="module")
def picky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("picky")
    notebook = write_notebook(folder / "picky.ipynb", PICKY)
    build = folder / "build"
    result = run_cli_process("build", notebook, "-o", build, "--no-docker", "-q", cwd=folder)
    assert result.returncode == 0, result.stderr
    return notebook, build


def test_a_poisoned_request_fails_alone_and_the_others_in_its_batch_get_their_answers(
    picky: tuple[Path, Path],
) -> None:
    notebook, build = picky
    rows = reference.example_rows("iris_function", CLIENTS)
    expected = reference.reference_predictions(notebook, rows, PICKY_RECIPE)
    poisoned = dict(rows[17], **{"sepal length (cm)": -1.0})
    bodies = [[row] for row in rows]
    bodies[17] = [poisoned]
    server = Uvicorn(build)
    try:
        # Each batch takes 50 ms: the requests that arrive meanwhile are joined.
        responses = send_all(server.url, bodies)
    finally:
        server.stop()
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 17 + [422] + [200] * 14, statuses
    assert "sepal length must be positive" in responses[17].json()["detail"]
    good = [responses[i].json()["predictions"][0] for i in range(CLIENTS) if i != 17]
    assert_same_predictions([p for i, p in enumerate(expected) if i != 17], good)
    # The poisoned request was in a batch with others, which were then predicted one by one.
    log = server.log.read_text()
    sizes = [int(n) for n in re.findall(r"a batch of (\d+) requests failed", log)]
    assert sizes and max(sizes) > 1, log


def test_sigterm_with_batches_in_flight_answers_every_accepted_request(
    picky: tuple[Path, Path],
) -> None:
    notebook, build = picky
    rows = reference.example_rows("iris_function", 96)
    expected = reference.reference_predictions(notebook, rows, PICKY_RECIPE)
    server = Uvicorn(build)
    threading.Timer(0.3, server.process.send_signal, (signal.SIGTERM,)).start()
    responses = asyncio.run(_send_all(server.url, [[row] for row in rows], tolerate=True))
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM.
    assert server.process.wait(timeout=20) in (0, -signal.SIGTERM)
    assert "Finished server process" in server.log.read_text()
    answered = [(i, r) for i, r in enumerate(responses) if isinstance(r, httpx.Response)]
    # Requests in flight when SIGTERM came were answered (the batch finished); later ones
    # were refused at the connection, never answered with an error status.
    assert answered, "no request was answered before the shutdown"
    assert all(r.status_code == 200 for _, r in answered), [r.status_code for _, r in answered]
    assert_same_predictions(
        [expected[i] for i, _ in answered], [r.json()["predictions"][0] for _, r in answered]
    )
    assert len(answered) < len(rows), "SIGTERM came after every request: nothing was tested"


RANKED = [
    (
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "iris = load_iris(as_frame=True)\n"
        "X, y = iris.data, iris.target",
        ["load"],
    ),
    (
        "def preprocess(df):\n"
        "    out = df.copy()\n"
        "    out['petal_rank'] = out['petal length (cm)'].rank(pct=True)\n"
        "    return out",
        ["preprocess"],
    ),
    ("model = LogisticRegression(max_iter=500).fit(preprocess(X), y)", ["train"]),
    ("predictions = model.predict(preprocess(X))", ["predict"]),
]


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ranked")
    notebook = write_notebook(folder / "ranked.ipynb", RANKED)
    build = folder / "build"
    refused = run_cli_process("build", notebook, "-o", build, "--no-docker", "-q", cwd=folder)
    assert refused.returncode == 6, refused.stderr
    assert "petal_rank" in refused.stderr and "--batch-dependent" in refused.stderr
    assert not build.exists()
    result = run_cli_process(
        "build", notebook, "-o", build, "--no-docker", "-q", "--batch-dependent", cwd=folder
    )
    assert result.returncode == 0, result.stderr
    return notebook, build


def test_a_batch_dependent_build_is_served_unbatched_and_says_why(
    ranked: tuple[Path, Path],
) -> None:
    notebook, build = ranked
    rows = reference.example_rows("iris_function", 40)
    # Each request's rows ranked among themselves, as the notebook's code ranks them.
    bodies = [rows[i : i + 4] for i in range(0, len(rows), 4)]
    expected = reference.reference_predictions(
        notebook,
        rows,
        "__raw = __like(X)\n"
        "__out = [int(p) for start in range(0, len(__raw), 4)\n"
        "         for p in model.predict(preprocess(__raw.iloc[start:start + 4]))]",
    )
    server = Uvicorn(build)
    try:
        responses = send_all(server.url, bodies)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [200] * len(bodies)
    got = [p for r in responses for p in r.json()["predictions"]]
    assert_same_predictions(expected, got)
    log = server.log.read_text()
    assert "batching off: a row's answer depends on the other rows of its request" in log, log
    assert histogram_count(metrics, "nb2prod_batch_requests") == 0


def test_batching_on_for_a_batch_dependent_build_is_refused_at_startup(
    ranked: tuple[Path, Path],
) -> None:
    _, build = ranked
    with pytest.raises(AssertionError, match="the server exited"):
        Uvicorn(build, env={"NB2PROD_BATCHING": "on"})
    text = "\n".join(p.read_text() for p in build.parent.glob("uvicorn-*.log"))
    assert "refusing to start: NB2PROD_BATCHING=on, but this build can't be batched" in text
    assert "depends on the other rows of its request" in text
