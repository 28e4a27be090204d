"""``nb2prod quality`` on the prediction log of two real services behind a round-robin.

One small notebook is built twice: the stable model, and a canary built with ``-p deny_b=1``
whose predict cell answers 0 for every row of group B (a model deliberately worse, and less
favourable, for one group). Each build is served by its own uvicorn on loopback with its own
``K_REVISION``, both writing ``NB2PROD_PREDICTION_LOG`` into one shared folder. The test sends
one row per request, stable twice as often as the canary, each with an X-Request-ID it
chose, and keeps its own record of what it sent and what came back.

- Logged predictions plus a labels CSV give each version's accuracy and row count as the test
  computes them from its own records, while the same labels posted to ``/feedback`` round-robin
  get a 404 from the instance that did not serve the request (about half of them).
- ``--by group`` shows the canary's gap for group B, equal to fairlearn's MetricFrame,
  demographic parity and equalized odds differences computed here from the raw rows; a
  ``--max-parity-difference`` the canary exceeds exits 17, a looser one exits 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from helpers import run_cli_process, write_notebook
from service_server import Uvicorn

#: Requests sent in all: stable serves two of every three.
REQUESTS = 270
STABLE_REVISION = "scoring-00007-stable"
CANARY_REVISION = "scoring-00008-canary"

NOTEBOOK_CELLS = [
    ("import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
     None),
    ("seed = 0\ndeny_b = 0  # 1: every row of group B is predicted 0", ["parameters"]),
    ("rng = np.random.default_rng(seed)\n"
     "n = 400\n"
     "df = pd.DataFrame({'x1': rng.normal(size=n), 'x2': rng.normal(size=n),\n"
     "                   'group': np.where(rng.random(n) < 0.4, 'B', 'A')})\n"
     "y = (df['x1'] + 0.5 * df['x2'] > 0).astype(int)\n"
     "X = df[['x1', 'x2', 'group']]", ["load"]),
    ("def preprocess(df):\n    return df[['x1', 'x2', 'group']]", ["preprocess"]),
    ("model = LogisticRegression().fit(preprocess(X)[['x1', 'x2']], y)", ["train"]),
    ("def predict(model, features):\n"
     "    p = model.predict(features[['x1', 'x2']])\n"
     "    denied = (features['group'] == 'B').to_numpy() & bool(deny_b)\n"
     "    return np.where(denied, 0, p)", ["predict"]),
]  # fmt: skip


def _truth(x1: float, x2: float) -> int:
    """The true label, by the rule the notebook's data follow."""
    return int(x1 + 0.5 * x2 > 0)


@dataclass(frozen=True)
class Sent:
    """One request as the test saw it: what it sent, to which instance, and the answer."""

    request_id: str
    instance: int  # 0 stable, 1 canary
    row: dict[str, Any]
    label: int
    prediction: int
    model_version: str


@dataclass(frozen=True)
class Traffic:
    builds: tuple[Path, Path]
    log: Path
    labels: Path
    sent: list[Sent]
    feedback_status: list[tuple[int, int]]  # (instance the label was posted to, status)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The stable and canary builds of one notebook (built side by side)."""
    root = tmp_path_factory.mktemp("quality-builds")
    notebook = write_notebook(root / "scoring.ipynb", NOTEBOOK_CELLS)

    def build(name: str, *options: str) -> Path:
        result = run_cli_process("build", notebook, "--no-docker", "-q", "-o", name, *options,
                                 cwd=root, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return root / name

    with ThreadPoolExecutor(2) as pool:
        stable = pool.submit(build, "stable")
        canary = pool.submit(build, "canary", "-p", "deny_b=1")
        return stable.result(), canary.result()


@pytest.fixture(scope="module")
def traffic(builds: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    """Round-robin traffic to the two instances, then the same labels to /feedback."""
    root = tmp_path_factory.mktemp("quality-traffic")
    log = root / "prediction-log"
    servers = [
        Uvicorn(build, {"NB2PROD_PREDICTION_LOG": str(log), "K_REVISION": revision})
        for build, revision in zip(builds, (STABLE_REVISION, CANARY_REVISION), strict=True)
    ]
    rng = np.random.default_rng(2026)
    sent: list[Sent] = []
    statuses: list[tuple[int, int]] = []
    try:
        clients = [httpx.Client(base_url=server.url, timeout=30) for server in servers]
        for i in range(REQUESTS):
            instance = 1 if i % 3 == 2 else 0
            row = {
                "x1": round(float(rng.normal()), 4),
                "x2": round(float(rng.normal()), 4),
                "group": "B" if rng.random() < 0.4 else "A",
            }
            request_id = f"quality-{i:04d}"
            answer = clients[instance].post(
                "/predict", json={"instances": [row]}, headers={"X-Request-ID": request_id}
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert answer.headers["x-request-id"] == request_id
            label = _truth(row["x1"], row["x2"])
            sent.append(
                Sent(request_id, instance, row, label, body["predictions"][0],
                     body["model_version"])
            )  # fmt: skip
        # /feedback round-robin: what each instance knows is only what it served.
        for i, item in enumerate(sent):
            target = i % 2
            response = clients[target].post(
                "/feedback", json={"request_id": item.request_id, "label": item.label}
            )
            statuses.append((target, response.status_code))
        for client in clients:
            client.close()
    finally:
        for server in servers:
            server.stop()  # SIGTERM: the open log file is published
    labels = root / "labels.csv"
    pd.DataFrame(
        {"request_id": [s.request_id for s in sent], "label": [s.label for s in sent]}
    ).to_csv(labels, index=False)
    return Traffic(builds, log, labels, sent, statuses)


def _quality(traffic: Traffic, *options: str) -> Any:
    return run_cli_process(
        "quality", "--predictions", traffic.log, "--labels", traffic.labels,
        "--resamples", "200", *options, timeout=300,
    )  # fmt: skip


def _versions(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {version["model_version"]: version for version in report["versions"]}


def _by_version(sent: list[Sent]) -> Iterator[tuple[str, list[Sent]]]:
    for version in sorted({s.model_version for s in sent}):
        yield version, [s for s in sent if s.model_version == version]


def test_logged_predictions_give_each_versions_accuracy_where_feedback_404s_half(
    traffic: Traffic,
) -> None:
    from sklearn.metrics import accuracy_score

    result = _quality(traffic, "--json", "--build", traffic.builds[0], "--build",
                      traffic.builds[1])  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "classification"
    assert report["rows"] == {
        "logged": REQUESTS,
        "labelled": REQUESTS,
        "joined": REQUESTS,
        "unmatched_labels": 0,
        "unmatched_predictions": 0,
    }
    versions = _versions(report)
    cards = [json.loads((b / "model" / "model_card.json").read_text()) for b in traffic.builds]
    stable_version, canary_version = (card["model_version"] for card in cards)
    assert stable_version != canary_version
    assert set(versions) == {stable_version, canary_version}
    assert versions[stable_version]["revisions"] == [STABLE_REVISION]
    assert versions[canary_version]["revisions"] == [CANARY_REVISION]
    for version, records in _by_version(traffic.sent):
        expected = accuracy_score([s.label for s in records], [s.prediction for s in records])
        accuracy = versions[version]["metrics"]["accuracy"]
        assert versions[version]["rows"] == len(records)
        assert accuracy["value"] == pytest.approx(expected, abs=1e-12)
        assert accuracy["low"] <= accuracy["value"] <= accuracy["high"]
    assert versions[stable_version]["rows"] == 2 * versions[canary_version]["rows"]
    # The canary is worse: it denies group B outright.
    stable_accuracy = versions[stable_version]["metrics"]["accuracy"]["value"]
    assert versions[canary_version]["metrics"]["accuracy"]["value"] < stable_accuracy - 0.1
    for version in versions.values():
        assert {f["name"] for f in version["drift"]["features"]} == {"x1", "x2", "group"}

    # /feedback on two instances: a label reaches the one that served it or gets a 404.
    for item, (target, status) in zip(traffic.sent, traffic.feedback_status, strict=True):
        assert status == (200 if target == item.instance else 404), item
    missed = sum(status == 404 for _, status in traffic.feedback_status)
    assert 0.4 * REQUESTS <= missed <= 0.6 * REQUESTS


def test_by_group_shows_the_canarys_gap_as_fairlearn_measures_it(traffic: Traffic) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
    )
    from sklearn.metrics import accuracy_score

    result = _quality(traffic, "--by", "group", "--json")
    assert result.returncode == 0, result.stderr
    versions = _versions(json.loads(result.stdout))
    measured: dict[str, dict[str, float]] = {}
    for version, records in _by_version(traffic.sent):
        y_true = np.asarray([s.label for s in records])
        y_pred = np.asarray([s.prediction for s in records])
        groups = pd.Series([s.row["group"] for s in records], name="group")
        frame = MetricFrame(
            metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=groups
        )
        fairness = versions[version]["fairness"]
        assert fairness["by"] == ["group"]
        reported = {g["group"]["group"]: g for g in fairness["groups"]}
        assert set(reported) == {"A", "B"}
        for group, accuracy in frame.by_group.items():
            assert reported[group]["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
            assert reported[group]["rows"] == int((groups == group).sum())
        parity = demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
        odds = equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
        assert fairness["demographic_parity_difference"] == pytest.approx(parity, abs=1e-12)
        assert fairness["equalized_odds_difference"] == pytest.approx(odds, abs=1e-12)
        measured[version] = {
            "gap": frame.by_group["A"] - frame.by_group["B"],
            "parity": parity,
        }
    canary = next(s.model_version for s in traffic.sent if s.instance == 1)
    stable = next(s.model_version for s in traffic.sent if s.instance == 0)
    # Denying group B: far worse for B than for A, and far less often positive.
    assert measured[canary]["gap"] > 0.3
    assert abs(measured[stable]["gap"]) < 0.15
    assert measured[canary]["parity"] > measured[stable]["parity"] + 0.2

    between = (measured[canary]["parity"] + measured[stable]["parity"]) / 2
    failing = _quality(traffic, "--by", "group", "--max-parity-difference", f"{between:.4f}")
    assert failing.returncode == 17, failing.stderr
    assert "max_parity_difference" in failing.stderr and canary in failing.stderr
    assert f"FAIL max_parity_difference {float(f'{between:.4f}'):g} on {canary}" in failing.stdout
    passing = _quality(
        traffic, "--by", "group", "--max-parity-difference", "0.95", "--version", canary
    )
    assert passing.returncode == 0, passing.stderr
    assert f"ok   max_parity_difference 0.95 on {canary}" in passing.stdout
