"""``nb2prod compare``: the offline champion/challenger gate, on real builds of one notebook.

One small regression notebook is built for real (``nb2prod build --no-docker``) in five
variants that differ only by a ``-p`` parameter override: the champion, a weaker model (a
heavy ridge penalty), fewer rows of data, no ``rmse`` metric, and another split seed. The
expected verdicts come from the notebook's own code run here in plain Python, not from
nb2prod: the test computes each variant's metrics itself and decides which side is better
from the metrics' meaning (lower error, higher R²).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import CliResult, run_cli, run_cli_process, write_notebook

from nb2prod.errors import ChallengerWorse, ConfigError, NotComparableError
from nb2prod.gate.compare import direction_of

CELLS: list[tuple[str, list[str]]] = [
    (
        "import numpy as np\n"
        "import pandas as pd\n"
        "from sklearn.linear_model import Ridge\n"
        "from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score\n"
        "from sklearn.model_selection import train_test_split",
        [],
    ),
    ("alpha = 1.0\nrows = 300\nseed = 0\nreport_rmse = True", ["parameters"]),
    (
        "rng = np.random.default_rng(2024)\n"
        'raw = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])\n'
        "noise = rng.normal(scale=0.5, size=rows)\n"
        'raw["target"] = 3 * raw["a"] - 2 * raw["b"] + 0.5 * raw["c"] + noise',
        ["load"],
    ),
    (
        'features = raw[["a", "b", "c"]].copy()\nfeatures["ab"] = features["a"] * features["b"]',
        ["preprocess"],
    ),
    (
        "X_train, X_test, y_train, y_test = train_test_split(\n"
        '    features, raw["target"], test_size=0.25, random_state=seed\n'
        ")\n"
        "model = Ridge(alpha=alpha).fit(X_train, y_train)",
        ["train"],
    ),
    (
        "test_predictions = model.predict(X_test)\n"
        "mae = mean_absolute_error(y_test, test_predictions)\n"
        "r2 = r2_score(y_test, test_predictions)\n"
        "n_test = len(y_test)\n"
        "if report_rmse:\n"
        "    rmse = float(np.sqrt(mean_squared_error(y_test, test_predictions)))",
        ["evaluate"],
    ),
    ("predictions = model.predict(features)", ["predict"]),
]

#: Each variant's parameter overrides; the champion keeps the notebook's own values.
VARIANTS: dict[str, dict[str, Any]] = {
    "champion": {},
    "weak": {"alpha": 1000.0},
    "fewer_rows": {"rows": 250},
    "no_rmse": {"report_rmse": False},
    "reseeded": {"seed": 1},
}
#: What these metrics mean, as any statistics text says; not nb2prod's table.
LOWER_IS_BETTER = {"mae": True, "rmse": True, "r2": False}


def notebook_metrics(overrides: dict[str, Any]) -> dict[str, float]:
    """The notebook's evaluate numbers, computed by running its cells here in plain Python."""
    namespace: dict[str, Any] = {}
    for source, tags in CELLS:
        if "predict" in tags:
            break
        exec(source, namespace)  # noqa: S102 - our own test notebook's cells
        if "parameters" in tags:
            namespace.update(overrides)
    return {
        name: float(namespace[name])
        for name in ("mae", "r2", "n_test", "rmse")
        if name in namespace
    }


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every variant built for real, two at a time (the machine has two cores)."""
    root = tmp_path_factory.mktemp("compare")
    notebook = write_notebook(root / "regression.ipynb", CELLS)

    def build(name: str) -> tuple[str, Path]:
        out = root / name
        params = [arg for k, v in VARIANTS[name].items() for arg in ("-p", f"{k}={v!r}")]
        result = run_cli_process("build", notebook, "--no-docker", "-q", "-o", out, *params)
        assert result.returncode == 0, f"build {name}:\n{result.stdout}\n{result.stderr}"
        return name, out

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(build, VARIANTS))


@pytest.fixture(scope="module")
def expected() -> dict[str, dict[str, float]]:
    """Each variant's metrics, as the notebook computes them without nb2prod."""
    return {name: notebook_metrics(overrides) for name, overrides in VARIANTS.items()}


def compare(builds: dict[str, Path], champion: str, challenger: str, *args: str) -> CliResult:
    return run_cli("compare", builds[champion], builds[challenger], *args)


def assert_refused(result: CliResult, code: int, *fragments: str) -> str:
    """One ``Error:`` line holding each fragment, no traceback, nothing on stdout."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert len(result.error_lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.error_lines[0], result.stderr
    return result.error_lines[0]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The metric table's rows by metric name (the line after the header up to a blank)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = line.split(maxsplit=5)
        rows[cells[0]] = cells[1:]
    return rows


def test_the_weak_variant_is_really_worse(expected: dict[str, dict[str, float]]) -> None:
    """The premise of the gate tests, checked on the notebook's own numbers."""
    champion, weak = expected["champion"], expected["weak"]
    assert weak["mae"] > champion["mae"] and weak["rmse"] > champion["rmse"]
    assert weak["r2"] < champion["r2"]
    assert expected["no_rmse"]["mae"] == champion["mae"] and "rmse" not in expected["no_rmse"]


def test_the_cards_hold_the_notebooks_metrics(
    builds: dict[str, Path], expected: dict[str, dict[str, float]]
) -> None:
    for name, path in builds.items():
        card = json.loads((path / "model" / "model_card.json").read_text())
        assert card["metrics"] == pytest.approx(expected[name], rel=1e-9), name


def test_a_better_challenger_passes(
    builds: dict[str, Path], expected: dict[str, dict[str, float]]
) -> None:
    result = compare(builds, "weak", "champion")
    assert result.returncode == 0, result.stderr
    assert result.error_lines == []
    rows = table_rows(result.stdout)
    for metric, lower in LOWER_IS_BETTER.items():
        champion, challenger = expected["weak"][metric], expected["champion"][metric]
        assert (challenger < champion) == lower  # the notebook's numbers say: better
        assert rows[metric][3:] == ["lower" if lower else "higher", "better"]
        assert float(rows[metric][0]) == pytest.approx(champion, rel=1e-5)
        assert float(rows[metric][1]) == pytest.approx(challenger, rel=1e-5)
    # A count has no direction of better: listed, never gated.
    assert rows["n_test"][3:] == ["unknown", "not gated"]
    assert result.stdout.splitlines()[-1].startswith("the challenger passes")


def test_a_worse_challenger_fails_with_its_own_exit_code(
    builds: dict[str, Path], expected: dict[str, dict[str, float]]
) -> None:
    result = compare(builds, "champion", "weak")
    assert result.returncode == ChallengerWorse.exit_code == 15
    assert "Traceback" not in result.stderr
    assert len(result.error_lines) == 1 and "worse than the champion" in result.error_lines[0]
    rows = table_rows(result.stdout)
    assert {metric: rows[metric][4] for metric in LOWER_IS_BETTER} == dict.fromkeys(
        LOWER_IS_BETTER, "WORSE"
    )
    difference = expected["weak"]["r2"] - expected["champion"]["r2"]
    assert float(rows["r2"][2]) == pytest.approx(difference, rel=1e-5)


def test_the_same_model_passes(builds: dict[str, Path]) -> None:
    result = compare(builds, "champion", "champion")
    assert result.returncode == 0, result.stderr
    assert {row[4] for row in table_rows(result.stdout).values()} == {"same", "not gated"}


def test_tolerance_is_absolute_in_the_metrics_units(
    builds: dict[str, Path], expected: dict[str, dict[str, float]]
) -> None:
    loss = expected["champion"]["r2"] - expected["weak"]["r2"]  # how much R² the weak one loses
    assert loss > 0.01
    passed = compare(builds, "champion", "weak", "--metric", "r2", "--tolerance", str(loss + 0.01))
    assert passed.returncode == 0, passed.stderr
    assert table_rows(passed.stdout)["r2"][4] == "within tolerance"
    assert "within the tolerance" in passed.stdout.splitlines()[-1]
    failed = compare(builds, "champion", "weak", "--metric", "r2", "--tolerance", str(loss - 0.01))
    assert failed.returncode == 15
    # Lower is better: the allowance is added to the champion's error.
    mae_gap = expected["weak"]["mae"] - expected["champion"]["mae"]
    assert (
        compare(
            builds, "champion", "weak", "--metric", "mae", "--tolerance", str(mae_gap * 1.01)
        ).returncode
        == 0
    )
    assert (
        compare(
            builds, "champion", "weak", "--metric", "mae", "--tolerance", str(mae_gap * 0.99)
        ).returncode
        == 15
    )


def test_a_missing_metric_is_refused_naming_where(builds: dict[str, Path]) -> None:
    result = compare(builds, "champion", "no_rmse")
    line = assert_refused(result, NotComparableError.exit_code, "`rmse`", "champion's")
    assert "challenger's card" not in line
    # Both report r2, from the same data and model: gating on it works.
    assert compare(builds, "champion", "no_rmse", "--metric", "r2").returncode == 0
    assert_refused(
        compare(builds, "no_rmse", "champion", "--metric", "rmse"), 16, "`rmse`", "champion's"
    )


def test_different_data_is_refused_with_both_fingerprints(builds: dict[str, Path]) -> None:
    result = compare(builds, "champion", "fewer_rows")
    # The load cell's frame: `rows` rows of a, b, c and target.
    assert_refused(result, 16, "different data", "300 rows x 4 columns", "250 rows x 4 columns")
    assert "--allow-different-data" in result.stderr  # the hint names the escape hatch


def test_a_different_split_seed_is_refused_though_the_frame_is_the_same(
    builds: dict[str, Path],
) -> None:
    cards = [
        json.loads((builds[n] / "model/model_card.json").read_text())
        for n in ("champion", "reseeded")
    ]
    # The fingerprint covers the raw frame, which the seed does not change...
    assert cards[0]["data_fingerprint"] == cards[1]["data_fingerprint"]
    # ...but the rows the model was evaluated on differ.
    assert_refused(compare(builds, "champion", "reseeded"), 16, "`seed`", "split")


def test_allow_different_data_compares_and_says_so(builds: dict[str, Path]) -> None:
    result = compare(builds, "champion", "fewer_rows", "--allow-different-data", "--json")
    assert result.returncode in (0, 15)
    report = json.loads(result.stdout)
    assert report["same_data"] is False
    assert report["challenger"]["data_fingerprint"]["rows"] == 250
    assert "note: the models were trained and evaluated on different data" in result.stderr


def test_an_unknown_direction_is_refused_naming_the_flags(builds: dict[str, Path]) -> None:
    result = compare(builds, "champion", "weak", "--metric", "n_test")
    assert_refused(result, 16, "`n_test`")
    assert "--higher-is-better" in result.stderr and "--lower-is-better" in result.stderr
    # Told which way is better, the gate runs: both test splits hold the same number of rows.
    told = compare(builds, "champion", "weak", "--metric", "n_test", "--higher-is-better")
    assert told.returncode == 0, told.stderr
    direction, verdict = table_rows(told.stdout)["n_test"][3:]
    assert (direction, verdict.split()) == ("higher", ["(flag)", "same"])


def test_a_direction_flag_without_a_metric_is_a_usage_error(builds: dict[str, Path]) -> None:
    result = compare(builds, "champion", "weak", "--lower-is-better")
    assert_refused(result, ConfigError.exit_code, "--metric")


def test_a_flag_overrides_the_direction_a_name_implies(builds: dict[str, Path]) -> None:
    # Told (wrongly, on purpose) that higher mae is better, the weak model wins on mae.
    result = compare(builds, "champion", "weak", "--metric", "mae", "--higher-is-better")
    assert result.returncode == 0, result.stderr


def test_json_report_shape(builds: dict[str, Path], expected: dict[str, dict[str, float]]) -> None:
    result = compare(builds, "champion", "weak", "--json")
    assert result.returncode == 15
    assert len(result.error_lines) == 1
    report = json.loads(result.stdout)  # stdout holds the JSON report and nothing else
    assert set(report) == {
        "passed",
        "summary",
        "tolerance",
        "same_data",
        "champion",
        "challenger",
        "metrics",
        "changed_parameters",
        "notes",
    }
    assert report["passed"] is False and report["same_data"] is True
    assert report["tolerance"] == 0
    assert report["changed_parameters"] == {"alpha": {"champion": 1.0, "challenger": 1000.0}}
    assert report["champion"]["directory"] == str(builds["champion"])
    assert set(report["champion"]) == {"directory", "name", "model_version", "data_fingerprint"}
    assert report["champion"]["data_fingerprint"]["rows"] == 300
    by_name = {m["name"]: m for m in report["metrics"]}
    assert set(by_name) == {"mae", "r2", "n_test", "rmse"}
    for name, metric in by_name.items():
        assert metric["champion"] == pytest.approx(expected["champion"][name], rel=1e-9)
        assert metric["challenger"] == pytest.approx(expected["weak"][name], rel=1e-9)
        assert math.isclose(metric["difference"], metric["challenger"] - metric["champion"])
    assert by_name["mae"]["direction"] == "lower" and by_name["r2"]["direction"] == "higher"
    assert by_name["n_test"]["direction"] is None and by_name["n_test"]["verdict"] == "not gated"
    assert {by_name[m]["verdict"] for m in LOWER_IS_BETTER} == {"worse"}


def test_a_directory_without_a_model_is_a_usage_error(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    result = run_cli("compare", builds["champion"], tmp_path)
    assert_refused(result, 2, "no usable model card")


def test_help_says_what_is_compared() -> None:
    result = run_cli("compare", "--help")
    assert result.returncode == 0
    for words in ("model_card.json", "fingerprint", "--tolerance", "15", "16"):
        assert words in result.stdout


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        *(
            (name, "higher")
            for name in (
                *("accuracy", "balanced_accuracy", "f1", "f1_macro", "precision_weighted"),
                *("recall", "roc_auc", "auc", "r2", "average_precision", "test_accuracy"),
            )
        ),
        *(
            (name, "lower")
            for name in ("mae", "mse", "rmse", "log_loss", "mean_absolute_error", "val_loss")
        ),
        # Counts, spreads and unrelated numbers: no direction, so never gated by name.
        *((name, None) for name in ("n_test", "accuracy_std", "coverage", "threshold")),
    ],
)
def test_direction_of_common_metric_names(name: str, direction: str | None) -> None:
    assert direction_of(name) == direction
