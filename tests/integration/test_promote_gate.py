"""``nb2prod promote DIR --gate`` as a user types it, against the local fake of Cloud Run.

A stable build is deployed, a challenger build is deployed beside it with ``--canary 10``, and
the prediction log that the two revisions would have written (JSON Lines files in the log's
own record format, revision = the fake's revision names) is joined with labels. Each outcome
of the gate is checked on the fake's actual traffic: a better canary gets 100%, a worse one is
rolled back to stable, an undecided one changes nothing and exits 18 with the rows it needs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest
from fake_build import BUILT_IMAGE_ID, make_card, write_image_record, write_model_dir
from fake_build import write_push_record as record_push
from fake_cloudrun import PROJECT, REGION, FakeCloudRun
from helpers import run_cli

WHERE = ("--project", PROJECT, "--region", REGION)
REPOSITORY = f"{REGION}-docker.pkg.dev/{PROJECT}/models/iris_classifier"
SERVICE = f"projects/{PROJECT}/locations/{REGION}/services/iris-classifier"


def built(directory: Path, model_version: str, digest_byte: str) -> Path:
    """A built and pushed iris_classifier build directory of ``model_version``."""
    write_model_dir(directory, make_card(name="iris_classifier", model_version=model_version))
    write_image_record(directory, f"iris_classifier:{model_version}", BUILT_IMAGE_ID)
    record_push(directory, f"{REPOSITORY}@sha256:{digest_byte * 32}", BUILT_IMAGE_ID)
    return directory


def served(fake: FakeCloudRun) -> dict[str, int]:
    """The fake's actual traffic: {revision: percent}, for the revisions with a share."""
    statuses = fake.services[SERVICE]["trafficStatuses"]
    return {s["revision"]: s["percent"] for s in statuses if s.get("percent")}


@pytest.fixture
def canary(tmp_path: Path, fake: FakeCloudRun) -> dict[str, Any]:
    """Stable deployed, challenger deployed as a 10% canary; their revision names by the fake."""
    stable_dir = built(tmp_path / "champion", "1111aaaa2222", "ab")
    challenger = built(tmp_path / "challenger", "3333bbbb4444", "cd")
    for directory, extra in ((stable_dir, ()), (challenger, ("--canary", "10"))):
        result = run_cli("deploy", directory, *WHERE, "--endpoint", fake.endpoint, *extra)
        assert result.returncode == 0, result.stderr
    statuses = fake.services[SERVICE]["trafficStatuses"]
    canary_revision = next(s["revision"] for s in statuses if s.get("tag") == "canary")
    stable_revision = next(s["revision"] for s in statuses if not s.get("tag"))
    assert served(fake) == {canary_revision: 10, stable_revision: 90}
    return {"dir": challenger, "canary": canary_revision, "stable": stable_revision}


def write_traffic(
    folder: Path, sides: dict[str, tuple[str, int, int]], regression: bool = False
) -> tuple[Path, Path]:
    """Prediction log files and a labels CSV: per revision (model version, rows, right ones).

    Classes: a right row predicts its label; a wrong one predicts another class. Regression: a
    "right" row is off by 0.5, a wrong one by 3.0.
    """
    log_dir, labels = folder / "log", folder / "labels.csv"
    log_dir.mkdir(parents=True)
    start = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    lines = ["request_id,label"]
    for revision, (version, rows, right) in sides.items():
        records = []
        for i in range(rows):
            request_id = f"{revision}-{i}"
            label = float(i % 7) if regression else ["setosa", "versicolor", "virginica"][i % 3]
            if regression:
                prediction: Any = label + (0.5 if i < right else 3.0) * (-1) ** i
            else:
                prediction = (
                    label if i < right else ("virginica" if label != "virginica" else "setosa")
                )
            records.append(
                {
                    "request_id": request_id,
                    "timestamp": (start + dt.timedelta(seconds=i)).isoformat(),
                    "model_version": version,
                    "revision": revision,
                    "sample_rate": 1.0,
                    "rows": 1,
                    "row_offset": 0,
                    "inputs": [{"a": float(i), "b": 2.0}],
                    "predictions": [prediction],
                }
            )
            lines.append(f"{request_id},{label}")
        text = "".join(json.dumps(record) + "\n" for record in records)
        (log_dir / f"predictions-20260501T000000Z-{len(revision)}-{version}.jsonl").write_text(text)
    labels.write_text("\n".join(lines) + "\n")
    return log_dir, labels


def gate(directory: Path, log_dir: Path, labels: Path, fake: FakeCloudRun, *extra: str) -> Any:
    return run_cli(
        "promote", directory, "--gate", "--predictions", log_dir, "--labels", labels,
        "--endpoint", fake.endpoint, *extra,
    )  # fmt: skip


def test_a_better_canary_is_promoted(
    tmp_path: Path, fake: FakeCloudRun, canary: dict[str, Any]
) -> None:
    log_dir, labels = write_traffic(
        tmp_path,
        {
            canary["stable"]: ("1111aaaa2222", 400, 320),
            canary["canary"]: ("3333bbbb4444", 400, 380),
        },
    )

    result = gate(canary["dir"], log_dir, labels, fake, "--min-effect", "0.1", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is the JSON alone; the deployment on stderr
    assert f"traffic {canary['canary']}=100%" in result.stderr, result.stderr
    assert report["decision"] == "promote"
    assert report["canary"] == {"name": canary["canary"], "rows": 400, "value": 0.95}
    assert report["stable"]["rows"] == 400 and report["stable"]["value"] == 0.8
    assert report["p_value"] > 0.5  # "canary worse" is not supported at all
    assert served(fake) == {canary["canary"]: 100}


def test_a_worse_canary_is_rolled_back(
    tmp_path: Path, fake: FakeCloudRun, canary: dict[str, Any]
) -> None:
    log_dir, labels = write_traffic(
        tmp_path,
        {
            canary["stable"]: ("1111aaaa2222", 200, 180),
            canary["canary"]: ("3333bbbb4444", 200, 140),
        },
    )

    result = gate(canary["dir"], log_dir, labels, fake)

    assert result.returncode == 19, result.stderr
    assert "decision: ROLLBACK" in result.stdout
    assert "0.9" in result.stdout and "0.7" in result.stdout
    # The one-sided z-test on 180/200 vs 140/200, by hand.
    pooled = 320 / 400
    z = 0.2 / math.sqrt(pooled * (1 - pooled) * (2 / 200))
    assert f"p = {1 - NormalDist().cdf(z):.4g}" in result.stdout
    assert "the canary is worse on accuracy" in result.stderr and "rolled back" in result.stderr
    assert served(fake) == {canary["stable"]: 100}


def test_an_undecided_canary_keeps_waiting_and_traffic_stays(
    tmp_path: Path, fake: FakeCloudRun, canary: dict[str, Any]
) -> None:
    log_dir, labels = write_traffic(
        tmp_path,
        {canary["stable"]: ("1111aaaa2222", 30, 27), canary["canary"]: ("3333bbbb4444", 30, 27)},
    )
    before = len(fake.bodies("PATCH"))

    result = gate(canary["dir"], log_dir, labels, fake)

    # Rows per side to see 90% -> 88% (the default 2 points), one-sided 5%, power 0.8 (Fleiss).
    p1, p2 = 0.9, 0.88
    normal = NormalDist()
    root = normal.inv_cdf(0.95) * math.sqrt(2 * 0.89 * 0.11) + normal.inv_cdf(0.8) * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    needed = math.ceil(root**2 / 0.02**2)
    assert result.returncode == 18, result.stderr
    assert "decision: WAIT" in result.stdout
    assert f"canary 30, stable 30; {needed} needed per side" in result.stderr
    assert f"{needed - 30} more for the canary" in result.stderr
    assert len(fake.bodies("PATCH")) == before
    assert served(fake) == {canary["canary"]: 10, canary["stable"]: 90}


def test_a_dry_run_on_a_worse_regressor_moves_nothing(
    tmp_path: Path, fake: FakeCloudRun, canary: dict[str, Any]
) -> None:
    log_dir, labels = write_traffic(
        tmp_path,
        {
            canary["stable"]: ("1111aaaa2222", 300, 280),
            canary["canary"]: ("3333bbbb4444", 300, 200),
        },
        regression=True,
    )

    result = gate(canary["dir"], log_dir, labels, fake, "--metric", "mae", "--dry-run")

    stable_mae = (280 * 0.5 + 20 * 3.0) / 300
    canary_mae = (200 * 0.5 + 100 * 3.0) / 300
    assert result.returncode == 19, result.stderr
    assert f"{stable_mae:.4g}" in result.stdout and f"{canary_mae:.4g}" in result.stdout
    assert "bootstrap" in result.stdout
    assert "would roll back" in result.stderr
    assert served(fake) == {canary["canary"]: 10, canary["stable"]: 90}


def test_gate_refusals_are_clear(
    tmp_path: Path, fake: FakeCloudRun, canary: dict[str, Any]
) -> None:
    log_dir, labels = write_traffic(tmp_path, {canary["stable"]: ("1111aaaa2222", 10, 9)})

    # Right after deploy --canary only stable has served: not enough rows yet, not an error.
    no_canary_rows = gate(canary["dir"], log_dir, labels, fake)
    assert no_canary_rows.returncode == 18, no_canary_rows.stderr
    assert "canary 0, stable 10" in no_canary_rows.stderr
    assert served(fake) == {canary["canary"]: 10, canary["stable"]: 90}

    # Labels of other requests (a wrong file or --key): an error, not an endless wait.
    others = tmp_path / "other-labels.csv"
    others.write_text("request_id,label\nsomeone-else-1,setosa\nsomeone-else-2,virginica\n")
    unmatched = gate(canary["dir"], log_dir, others, fake)
    assert unmatched.returncode == 2, unmatched.stderr
    assert "none of the 2 labels matches a logged prediction by request_id" in unmatched.stderr

    missing = gate(canary["dir"], log_dir, tmp_path / "nowhere.csv", fake)
    assert missing.returncode == 2 and "--labels" in missing.stderr

    without_gate = run_cli("promote", canary["dir"], "--labels", labels)
    assert without_gate.returncode == 2 and "--labels applies to --gate only" in without_gate.stderr

    stable_dir = tmp_path / "champion"
    not_a_canary = gate(stable_dir, log_dir, labels, fake)
    assert not_a_canary.returncode == 2 and "no canary to gate" in not_a_canary.stderr
