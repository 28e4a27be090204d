"""``nb2prod quality`` on logs written here: metrics equal scikit-learn's, fairness equals
fairlearn's, bootstrap intervals are deterministic, thresholds exit 17, and refusals are clear.
Expected values are computed in the test with scikit-learn and fairlearn from the raw rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from helpers import run_cli
from sklearn import metrics

from nb2prod.errors import ConfigError
from nb2prod.gate.quality import QualityOptions, quality_report
from nb2prod.gate.quality_metrics import (
    CLASSIFICATION,
    REGRESSION,
    Task,
    _Prepared,
    bucket_width,
    metric_functions,
    point_values,
    with_intervals,
)

START = pd.Timestamp("2026-11-30T09:00:00Z")


def _write_log(
    path: Path,
    rows: pd.DataFrame,
    predictions: list[Any],
    versions: list[str],
    probabilities: list[Any] | None = None,
    classes: list[Any] | None = None,
) -> Path:
    """One one-row request per row, minute by minute, in the service's record shape."""
    path.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (values, prediction, version) in enumerate(
        zip(rows.to_dict("records"), predictions, versions, strict=True)
    ):
        record: dict[str, Any] = {
            "request_id": f"r{i}",
            "timestamp": (START + pd.Timedelta(minutes=i)).isoformat(),
            "model_version": version,
            "revision": f"rev-{version}",
            "sample_rate": 1.0,
            "rows": 1,
            "row_offset": 0,
            "inputs": [values],
            "predictions": [prediction],
        }
        if probabilities is not None:
            record["probabilities"] = [probabilities[i]]
            record["classes"] = classes
        lines.append(json.dumps(record))
    (path / "predictions-20261130T090000.000000Z-1-00001.jsonl").write_text(
        "\n".join(lines) + "\n", encoding="utf-8"
    )
    return path


def _labels(path: Path, labels: list[Any]) -> Path:
    pd.DataFrame({"request_id": [f"r{i}" for i in range(len(labels))], "label": labels}).to_csv(
        path, index=False
    )
    return path


@pytest.fixture
def binary(tmp_path: Path) -> dict[str, Any]:
    """A binary classifier's log: v1 fair, v2 wrong for group B half the time."""
    rng = np.random.default_rng(5)
    n = 240
    rows = pd.DataFrame({"x": rng.normal(size=n).round(3), "group": rng.choice(["A", "B"], n)})
    truth = (rows["x"] > 0).astype(int).tolist()
    versions = ["v1" if i % 2 else "v2" for i in range(n)]
    predictions = [
        1 - t if (v == "v2" and g == "B" and i % 2 == 0 and rng.random() < 0.5) else t
        for i, (t, v, g) in enumerate(zip(truth, versions, rows["group"], strict=True))
    ]
    flip = rng.random(n) < 0.1  # some noise for everyone
    predictions = [1 - p if f else p for p, f in zip(predictions, flip, strict=True)]
    scores = np.clip(np.asarray(predictions) * 0.6 + rng.random(n) * 0.4, 0, 1)
    probabilities = [[float(1 - s), float(s)] for s in scores]
    log = _write_log(tmp_path / "log", rows, predictions, versions, probabilities, [0, 1])
    return {
        "log": log,
        "labels": _labels(tmp_path / "labels.csv", truth),
        "frame": rows.assign(label=truth, prediction=predictions, version=versions, score=scores),
    }


def test_binary_metrics_and_fairness_equal_sklearn_and_fairlearn(binary: dict[str, Any]) -> None:
    report = quality_report(
        QualityOptions(str(binary["log"]), str(binary["labels"]), by=("group",), resamples=300)
    )
    assert report["task"] == "classification" and report["positive_label"] == 1
    frame = binary["frame"]
    assert [v["model_version"] for v in report["versions"]] == ["v2", "v1"]  # by first row
    for version in report["versions"]:
        rows = frame[frame["version"] == version["model_version"]]
        t, p = rows["label"].to_numpy(), rows["prediction"].to_numpy()
        expected = {
            "accuracy": metrics.accuracy_score(t, p),
            "precision": metrics.precision_score(t, p),
            "recall": metrics.recall_score(t, p),
            "f1": metrics.f1_score(t, p),
            "roc_auc": metrics.roc_auc_score(t, rows["score"]),
        }
        assert version["rows"] == len(rows)
        assert version["revisions"] == [f"rev-{version['model_version']}"]
        for name, value in expected.items():
            got = version["metrics"][name]
            assert got["value"] == pytest.approx(value, abs=1e-12), name
            assert got["low"] <= got["value"] <= got["high"], name
        fairness = version["fairness"]
        groups = rows["group"]
        assert fairness["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(t, p, sensitive_features=groups), abs=1e-12
        )
        assert fairness["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(t, p, sensitive_features=groups), abs=1e-12
        )
        for group in fairness["groups"]:
            mine = rows[groups == group["group"]["group"]]
            assert group["rows"] == len(mine)
            assert group["metrics"]["accuracy"] == pytest.approx(
                metrics.accuracy_score(mine["label"], mine["prediction"]), abs=1e-12
            )
        # 120 rows a minute apart: two hours, in 15-minute buckets holding every row.
        assert version["bucket"] == "15min"
        assert sum(bucket["rows"] for bucket in version["over_time"]) == len(rows)
        assert version["drift"] is None
    assert any("pass --build DIR" in note for note in report["notes"])
    json.dumps(report, allow_nan=False)  # plain JSON: no NaN, no timestamps objects


def test_bootstrap_draws_use_sklearns_definitions_and_are_seeded() -> None:
    rng = np.random.default_rng(3)
    for classes in ((0, 1), ("cat", "dog", "emu")):
        y_true = rng.choice(np.asarray(classes, dtype=object), 150)
        y_pred = np.where(rng.random(150) < 0.7, y_true, rng.choice(np.asarray(classes), 150))
        scores = rng.dirichlet(np.ones(len(classes)), 150)
        binary = len(classes) == 2
        task = Task(CLASSIFICATION, classes, 1 if binary else None)
        if binary:
            y_true, y_pred, scores = y_true.astype(int), y_pred.astype(int), scores[:, 1]
        functions = metric_functions(task, with_scores=True)
        full = _Prepared(task, y_true, y_pred, scores).metrics(np.arange(150))
        assert full == pytest.approx(point_values(functions, y_true, y_pred, scores), abs=1e-12)
        first = with_intervals(task, functions, y_true, y_pred, scores, 200, seed=0)
        again = with_intervals(task, functions, y_true, y_pred, scores, 200, seed=0)
        other = with_intervals(task, functions, y_true, y_pred, scores, 200, seed=1)
        assert first == again and first != other
    y = rng.normal(size=80)
    guess = y + rng.normal(scale=0.3, size=80)
    task = Task(REGRESSION)
    fast = _Prepared(task, y, guess, None).metrics(np.arange(80))
    assert fast == pytest.approx(
        point_values(metric_functions(task, False), y, guess, None), abs=1e-12
    )


def test_bucket_width_follows_the_span() -> None:
    assert bucket_width(START, START + pd.Timedelta(minutes=10)) == "1min"
    assert bucket_width(START, START + pd.Timedelta(hours=3)) == "15min"
    assert bucket_width(START, START + pd.Timedelta(days=30)) == "7D"


def test_multiclass_strings_and_positive_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    n = 150
    species = np.asarray(["setosa", "versicolor", "virginica"])
    truth = rng.choice(species, n).tolist()
    rows = pd.DataFrame({"size": rng.normal(size=n).round(2), "site": rng.choice(["n", "s"], n)})
    predictions = [t if rng.random() < 0.8 else str(rng.choice(species)) for t in truth]
    log = _write_log(tmp_path / "log", rows, predictions, ["m"] * n)
    labels = _labels(tmp_path / "labels.csv", truth)
    report = quality_report(QualityOptions(str(log), str(labels), by=("site",), resamples=50))
    version = report["versions"][0]
    assert version["metrics"]["f1"]["value"] == pytest.approx(
        metrics.f1_score(truth, predictions, average="macro"), abs=1e-12
    )
    assert "roc_auc" not in version["metrics"]  # no probabilities logged
    assert version["fairness"]["demographic_parity_difference"] is None
    assert any("--positive-label" in note for note in report["notes"])

    chosen = quality_report(
        QualityOptions(
            str(log), str(labels), by=("site",), resamples=50, positive_label="virginica"
        )
    )
    t = np.asarray(truth) == "virginica"
    p = np.asarray(predictions) == "virginica"
    fairness = chosen["versions"][0]["fairness"]
    assert fairness["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(t, p, sensitive_features=rows["site"]), abs=1e-12
    )
    # Multiclass metrics stay macro-averaged with a positive label.
    assert chosen["versions"][0]["metrics"]["f1"]["value"] == pytest.approx(
        version["metrics"]["f1"]["value"]
    )
    with pytest.raises(ConfigError, match="--positive-label daisy is not one of the classes"):
        quality_report(QualityOptions(str(log), str(labels), positive_label="daisy"))


def test_regression_metrics_thresholds_and_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 100
    rows = pd.DataFrame({"x": rng.normal(size=n).round(3), "region": rng.choice(["e", "w"], n)})
    truth = (rows["x"] * 3 + rng.normal(scale=0.2, size=n)).round(3).tolist()
    predictions = (rows["x"] * 3).round(3).tolist()
    log = _write_log(tmp_path / "log", rows, predictions, ["r1"] * n)
    labels = _labels(tmp_path / "labels.csv", truth)
    mae = metrics.mean_absolute_error(truth, predictions)

    result = run_cli("quality", "--predictions", log, "--labels", labels, "--by", "region",
                     "--json", "--resamples", "50", "--max-mae", f"{mae / 2}")  # fmt: skip
    assert result.returncode == 17, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "regression"
    got = report["versions"][0]["metrics"]
    assert got["mae"]["value"] == pytest.approx(mae, abs=1e-12)
    assert got["rmse"]["value"] == pytest.approx(
        metrics.root_mean_squared_error(truth, predictions), abs=1e-12
    )
    assert got["r2"]["value"] == pytest.approx(metrics.r2_score(truth, predictions), abs=1e-12)
    assert report["versions"][0]["fairness"]["equalized_odds_difference"] is None
    assert any("regressor" in note for note in report["notes"])
    assert report["thresholds"] == [
        {"name": "max_mae", "limit": mae / 2, "model_version": "r1", "value": got["mae"]["value"],
         "passed": False},
    ]  # fmt: skip
    assert result.error_lines == [result.error_lines[0]]
    assert "max_mae" in result.error_lines[0]

    table = run_cli("quality", "--predictions", log, "--labels", labels, "--resamples", "20",
                    "--max-mae", f"{mae * 2}")  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "model r1 (rev-r1): 100 rows" in table.stdout
    assert f"ok   max_mae {mae * 2:g} on r1" in table.stdout

    wrong = run_cli("quality", "--predictions", log, "--labels", labels, "--min-accuracy", "0.9")
    assert wrong.returncode == 2
    assert "--min-accuracy applies to classification" in wrong.error_lines[0]
    unsegmented = run_cli("quality", "--predictions", log, "--labels", labels,
                          "--max-parity-difference", "0.1")  # fmt: skip
    assert unsegmented.returncode == 2 and "add --by COLUMN" in unsegmented.error_lines[0]
    nobody = run_cli("quality", "--predictions", log, "--labels", labels, "--by", "ssn")
    assert nobody.returncode == 2 and "--by ssn: not a logged input column" in nobody.stderr


def test_html_replaces_only_its_own_report(binary: dict[str, Any], tmp_path: Path) -> None:
    args = ["quality", "--predictions", binary["log"], "--labels", binary["labels"],
            "--resamples", "20"]  # fmt: skip
    mine = tmp_path / "report.html"
    first = run_cli(*args, "--html", mine)
    assert first.returncode == 0, first.stderr
    assert "<title>Quality report" in mine.read_text(encoding="utf-8")
    assert run_cli(*args, "--html", mine).returncode == 0  # its own report: replaced
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>", encoding="utf-8")
    refused = run_cli(*args, "--html", foreign)
    assert refused.returncode == 4
    assert "nb2prod quality did not write it" in refused.error_lines[0]
    assert foreign.read_text(encoding="utf-8") == "<html>my notes</html>"


def test_missing_extra_names_it(binary: dict[str, Any]) -> None:
    """Without fairlearn installed: exit 14 and the pip command (a real import failure)."""
    code = (
        "import sys; sys.modules['fairlearn'] = None\n"  # makes `import fairlearn` fail
        "from nb2prod.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "quality", "--predictions", str(binary["log"]),
         "--labels", str(binary["labels"])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 14, result.stderr
    assert "pip install 'nb2prod[quality]'" in result.stderr


def test_no_match_is_a_clear_error(binary: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("request_id,label\nnope,1\n", encoding="utf-8")
    result = run_cli("quality", "--predictions", binary["log"], "--labels", other)
    assert result.returncode == 2
    assert "no label in" in result.error_lines[0] and "Hint:" in result.stderr


def test_multiclass_macro_averages_over_the_classes_present(tmp_path: Path) -> None:
    """A version, a group or a bootstrap draw that never sees a class is not scored as if it
    got that class wrong: macro averages run over the classes present, as scikit-learn's do."""
    rng = np.random.default_rng(12)
    n = 160
    versions = ["v1" if i < n // 2 else "v2" for i in range(n)]
    # v1 sees three species; v2 only two of them (and never predicts the third).
    truth = [str(rng.choice(["a", "b", "c"] if v == "v1" else ["a", "b"])) for v in versions]
    predictions = [t if rng.random() < 0.8 else ("a" if t != "a" else "b") for t in truth]
    rows = pd.DataFrame({"site": rng.choice(["n", "s"], n)})
    log = _write_log(tmp_path / "log", rows, predictions, versions)
    labels = _labels(tmp_path / "labels.csv", truth)
    report = quality_report(QualityOptions(str(log), str(labels), by=("site",), resamples=50))
    frame = rows.assign(label=truth, prediction=predictions, version=versions)
    for version in report["versions"]:
        mine = frame[frame["version"] == version["model_version"]]
        scores = {"precision": metrics.precision_score, "recall": metrics.recall_score,
                  "f1": metrics.f1_score}  # fmt: skip
        for name, score in scores.items():
            want = score(mine["label"], mine["prediction"], average="macro", zero_division=0)
            assert version["metrics"][name]["value"] == pytest.approx(want, abs=1e-12), name
        for group in version["fairness"]["groups"]:
            part = mine[mine["site"] == group["group"]["site"]]
            assert group["metrics"]["f1"] == pytest.approx(
                metrics.f1_score(part["label"], part["prediction"], average="macro"), abs=1e-12
            )

    # The bootstrap's fast path agrees with scikit-learn on a draw that misses a class.
    task = Task(CLASSIFICATION, ("a", "b", "c"), None)
    y_true = np.asarray(["a", "b", "a", "b", "c", "c"], dtype=object)
    y_pred = np.asarray(["a", "a", "b", "b", "c", "a"], dtype=object)
    draw = np.asarray([0, 1, 2, 3, 0])  # no "c" on either side
    functions = metric_functions(task, with_scores=False)
    assert _Prepared(task, y_true, y_pred, None).metrics(draw) == pytest.approx(
        point_values(functions, y_true[draw], y_pred[draw], None), abs=1e-12
    )


def test_multiclass_roc_auc_when_the_model_knows_more_classes(tmp_path: Path) -> None:
    """A model with four classes whose labelled rows show three: the logged probabilities of
    those three do not sum to 1, and ROC AUC is still one class against the rest."""
    rng = np.random.default_rng(13)
    n = 120
    classes = ["a", "b", "c", "d"]
    truth = [str(rng.choice(classes[:3])) for _ in range(n)]
    predictions = [t if rng.random() < 0.8 else "a" for t in truth]
    probabilities = rng.dirichlet(np.ones(4), n)
    log = _write_log(tmp_path / "log", pd.DataFrame({"x": range(n)}), predictions, ["m"] * n,
                     probabilities.tolist(), classes)  # fmt: skip
    labels = _labels(tmp_path / "labels.csv", truth)
    report = quality_report(QualityOptions(str(log), str(labels), resamples=50))
    got = report["versions"][0]["metrics"]["roc_auc"]
    t = np.asarray(truth)
    want = np.mean([metrics.roc_auc_score(t == c, probabilities[:, k]) for k, c in
                    enumerate(classes[:3])])  # fmt: skip
    assert got["value"] == pytest.approx(want, abs=1e-12)
    assert got["low"] <= got["value"] <= got["high"]

    # Where the scores do sum to 1 over the classes, it is scikit-learn's one-vs-rest AUC.
    scores = rng.dirichlet(np.ones(3), n)
    task = Task(CLASSIFICATION, ("a", "b", "c"), None)
    auc = metric_functions(task, with_scores=True)["roc_auc"]
    assert auc(t.astype(object), t.astype(object), scores) == pytest.approx(
        metrics.roc_auc_score(t, scores, multi_class="ovr"), abs=1e-12
    )


def test_null_predictions_are_left_out_and_versions_share_one_task(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    n = 60
    truth = (rng.normal(size=n) * 3).round(3).tolist()
    predictions: list[Any] = [round(t + 0.5, 3) for t in truth]
    predictions[7] = None  # the model answered null (NaN) for this row
    log = _write_log(tmp_path / "log", pd.DataFrame({"x": range(n)}), predictions, ["r"] * n)
    labels = _labels(tmp_path / "labels.csv", truth)
    report = quality_report(QualityOptions(str(log), str(labels), resamples=20))
    assert report["task"] == "regression"
    kept = [i for i in range(n) if i != 7]
    version = report["versions"][0]
    assert version["rows"] == n - 1
    assert version["metrics"]["mae"]["value"] == pytest.approx(
        metrics.mean_absolute_error([truth[i] for i in kept], [predictions[i] for i in kept]),
        abs=1e-12,
    )
    assert any("1 joined rows left out" in note for note in report["notes"])

    # Two versions whose predictions are of different types (numbers, then text) are scored
    # as one classification task; each version's accuracy is its own.
    mixed: list[Any] = [i % 2 for i in range(20)] + ["1" if i % 2 else "no" for i in range(20)]
    log = _write_log(tmp_path / "mixed", pd.DataFrame({"x": range(40)}), mixed,
                     ["v1"] * 20 + ["v2"] * 20)  # fmt: skip
    labels = _labels(tmp_path / "mixed.csv", [i % 2 for i in range(40)])
    report = quality_report(QualityOptions(str(log), str(labels), resamples=20))
    accuracy = {v["model_version"]: v["metrics"]["accuracy"]["value"] for v in report["versions"]}
    assert accuracy == {"v1": 1.0, "v2": 0.5}


def test_a_regressors_label_that_is_not_a_number_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from nb2prod.gate import quality_drift

    # The build directory's card says the model outputs a number.
    card = SimpleNamespace(model_version="r", output_kind="number", reference_profile=None)
    monkeypatch.setattr(quality_drift, "cards_by_version", lambda builds: {"r": (tmp_path, card)})
    n = 30
    predictions = [i * 1.5 for i in range(n)]
    log = _write_log(tmp_path / "log", pd.DataFrame({"x": range(n)}), predictions, ["r"] * n)
    (tmp_path / "labels.jsonl").write_text(
        "".join(json.dumps({"request_id": f"r{i}", "label": i * 1.5 if i != 4 else "n.a."})
                + "\n" for i in range(n)),
        encoding="utf-8",
    )  # fmt: skip
    options = QualityOptions(str(log), str(tmp_path / "labels.jsonl"), resamples=20)
    with pytest.raises(ConfigError, match=r"1 joined rows have a label that is not a number"):
        quality_report(options)


def test_html_refuses_a_foreign_page_titled_quality_report(
    binary: dict[str, Any], tmp_path: Path
) -> None:
    from nb2prod.cli import quality_commands
    from nb2prod.gate.quality_html import SIGNATURE

    assert quality_commands._REPORT_SIGNATURE == SIGNATURE
    page = tmp_path / "team.html"
    mine = "<html><head><title>Quality report of the data team</title></head></html>"
    page.write_text(mine, encoding="utf-8")
    refused = run_cli("quality", "--predictions", binary["log"], "--labels", binary["labels"],
                      "--resamples", "20", "--html", page)  # fmt: skip
    assert refused.returncode == 4, refused.stderr
    assert page.read_text(encoding="utf-8") == mine
