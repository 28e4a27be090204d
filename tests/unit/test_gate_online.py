"""The online gate's statistics (nb2prod.gate.online) and how the canary's rows are found
(nb2prod.gate.canary), checked against independent computations: the textbook formulas by hand
with the standard library's NormalDist, scipy's chi-square test of the 2x2 table, and the
hypergeometric tail summed with math.comb."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from nb2prod.errors import ConfigError
from nb2prod.gate import canary as gate_canary
from nb2prod.gate import online

NORMAL = NormalDist()


def flags(correct: int, rows: int) -> list[bool]:
    return [True] * correct + [False] * (rows - correct)


# -- the two-proportion test ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stable", "canary"),
    [((180, 200), (160, 200)), ((450, 500), (440, 500)), ((70, 100), (75, 120))],
)
def test_z_test_matches_the_textbook_formula_and_the_chi_square_test(
    stable: tuple[int, int], canary: tuple[int, int]
) -> None:
    (ks, ns), (kc, nc) = stable, canary
    p_value, test = online.proportion_test(ks, ns, kc, nc)

    pooled = (ks + kc) / (ns + nc)
    z = (ks / ns - kc / nc) / math.sqrt(pooled * (1 - pooled) * (1 / ns + 1 / nc))
    assert test.startswith("two-proportion z-test")
    assert p_value == pytest.approx(1 - NORMAL.cdf(z), rel=1e-9)
    # Without Yates' correction, chi-square on the 2x2 table is the two-sided z-test (chi2 = z^2).
    table = [[ks, ns - ks], [kc, nc - kc]]
    chi2, two_sided, _, _ = chi2_contingency(table, correction=False)
    assert chi2 == pytest.approx(z**2, rel=1e-9)
    one_sided = two_sided / 2 if z > 0 else 1 - two_sided / 2
    assert p_value == pytest.approx(one_sided, rel=1e-9)


def test_small_counts_use_fishers_exact_test_the_hypergeometric_tail() -> None:
    ks, ns, kc, nc = 9, 10, 5, 10  # expected failures 3 per side: too few for the z-test
    p_value, test = online.proportion_test(ks, ns, kc, nc)

    # P(canary has kc or fewer right | the margins): the hypergeometric lower tail.
    right, total = ks + kc, ns + nc
    tail = sum(
        math.comb(nc, k) * math.comb(ns, right - k) for k in range(max(0, right - ns), kc + 1)
    ) / math.comb(total, right)
    assert test.startswith("Fisher exact")
    assert p_value == pytest.approx(tail, rel=1e-9)


@pytest.mark.parametrize(
    ("p1", "effect", "alpha"), [(0.9, 0.02, 0.05), (0.5, 0.1, 0.05), (0.8, 0.05, 0.01)]
)
def test_rows_needed_is_the_fleiss_sample_size(p1: float, effect: float, alpha: float) -> None:
    p2 = p1 - effect
    mean = (p1 + p2) / 2
    root = NORMAL.inv_cdf(1 - alpha) * math.sqrt(2 * mean * (1 - mean)) + NORMAL.inv_cdf(
        0.8
    ) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    assert online.rows_for_proportions(p1, effect, alpha) == math.ceil(root**2 / effect**2)


def test_rows_needed_for_90_percent_and_2_points_is_about_3000() -> None:
    # A published order of magnitude: detecting 90% -> 88% one-sided at 5% with power 0.8.
    assert 2900 < online.rows_for_proportions(0.9, 0.02, 0.05) < 3100


def test_accuracy_decisions() -> None:
    worse = online.decide_accuracy(flags(90, 100), flags(70, 100), alpha=0.05)
    assert worse.decision == "rollback" and worse.p_value < 0.05
    assert worse.difference == pytest.approx(-0.2)
    assert worse.ci_high < 0  # the one-sided interval excludes "as good"

    enough = online.decide_accuracy(flags(900, 1000), flags(915, 1000), 0.05, min_effect=0.05)
    assert enough.required_rows <= 1000
    assert enough.decision == "promote" and enough.ci_high > 0

    few = online.decide_accuracy(flags(9, 10), flags(9, 10), alpha=0.05)
    assert few.decision == "wait"
    assert few.more_rows_needed == {
        "stable": few.required_rows - 10,
        "canary": few.required_rows - 10,
    }

    none = online.decide_accuracy(flags(9, 10), [], alpha=0.05)
    assert none.decision == "wait" and none.canary.rows == 0 and math.isnan(none.p_value)


# -- errors: the bootstrap -------------------------------------------------------------------


def test_bootstrap_agrees_with_a_welch_interval_and_is_seeded() -> None:
    rng = np.random.default_rng(7)
    stable, canary = rng.normal(0, 1.0, 800), rng.normal(0, 1.2, 800)

    p_value, low, high = online.bootstrap_difference("mae", stable, canary, alpha=0.05)
    again = online.bootstrap_difference("mae", stable, canary, alpha=0.05)

    a, b = np.abs(canary), np.abs(stable)
    difference = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    welch_low = difference - NORMAL.inv_cdf(0.95) * se
    assert (p_value, low, high) == again
    assert high == math.inf
    assert low == pytest.approx(welch_low, abs=0.25 * se)
    assert p_value == pytest.approx(1 - NORMAL.cdf(difference / se), abs=0.01)
    assert (p_value < 0.05) == (low > 0)


def test_rows_needed_for_errors_is_the_two_sample_formula() -> None:
    errors = np.random.default_rng(3).normal(0, 2.0, 400)
    absolute = np.abs(errors)
    delta = 0.1 * absolute.mean()
    z = NORMAL.inv_cdf(0.95) + NORMAL.inv_cdf(0.8)
    want = math.ceil(2 * (z * absolute.std(ddof=1) / delta) ** 2)
    assert online.rows_for_errors("mae", errors, delta, 0.05) == want


@pytest.mark.parametrize("metric", ["mae", "rmse"])
def test_error_decisions(metric: online.Metric) -> None:
    rng = np.random.default_rng(11)
    stable = rng.normal(0, 1.0, 1500)
    assert online.decide_errors(metric, stable, rng.normal(0, 1.5, 1500), 0.05).decision == (
        "rollback"
    )
    same = online.decide_errors(metric, stable, rng.normal(0, 1.0, 1500), 0.05)
    assert same.decision == "promote", same
    assert same.stable.value == pytest.approx(
        np.sqrt(np.mean(stable**2)) if metric == "rmse" else np.mean(np.abs(stable))
    )
    assert same.min_effect == pytest.approx(0.1 * same.stable.value)
    few = online.decide_errors(metric, stable[:20], rng.normal(0, 1.0, 20), 0.05)
    assert few.decision == "wait" and few.required_rows > 20


# -- which rows are the canary's ---------------------------------------------------------------

STATE = {
    "target": "cloudrun",
    "canary": {"revision": "svc-new", "percent": 10},
    "traffic": [
        {"revision": "svc-new", "percent": 10, "tag": "canary"},
        {"revision": "svc-old", "percent": 90, "tag": None},
    ],
}


def logged(revisions: list[str], versions: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"revision": revisions, "model_version": versions})


def test_sides_come_from_the_deploy_record_by_revision() -> None:
    sides = gate_canary.find_sides(
        STATE, logged(["svc-new", "svc-old"], ["b", "a"]), "b", Path("d")
    )
    assert sides == gate_canary.Sides("revision", "svc-new", ("svc-old",))


def test_a_log_without_revisions_is_split_by_model_version() -> None:
    sides = gate_canary.find_sides(STATE, logged(["", ""], ["v2", "v1"]), "v2", Path("d"))
    assert sides == gate_canary.Sides("model_version", "v2", ("v1",))
    with pytest.raises(ConfigError, match="do not tell"):
        gate_canary.find_sides(STATE, logged(["", ""], ["v2", "v2"]), "v2", Path("d"))


def test_no_canary_and_a_log_of_neither_revision_are_errors() -> None:
    with pytest.raises(ConfigError, match="no canary to gate"):
        gate_canary.find_sides({**STATE, "canary": None}, logged(["x"], ["v"]), "v", Path("d"))
    with pytest.raises(ConfigError, match="no rows from the canary revision svc-new nor"):
        gate_canary.find_sides(STATE, logged(["svc-other"], ["a"]), "b", Path("d"))


def test_a_canary_that_has_not_served_yet_is_a_side_with_no_rows_so_a_wait() -> None:
    """Right after deploy --canary the log holds only stable's rows: not enough rows yet."""
    sides = gate_canary.find_sides(STATE, logged(["svc-old"], ["a"]), "b", Path("d"))
    assert sides == gate_canary.Sides("revision", "svc-new", ("svc-old",))
    by_version = gate_canary.find_sides(STATE, logged(["", ""], ["v1", "v1"]), "v2", Path("d"))
    assert by_version == gate_canary.Sides("model_version", "v2", ("v1",))
    statistics = online.decide_accuracy([True] * 50, [], 0.05)
    assert statistics.decision == "wait" and statistics.more_rows_needed["canary"] > 0


def test_null_regression_predictions_are_left_out_and_counted() -> None:
    frame = pd.DataFrame({"prediction": [1.5, None, float("nan"), 4.0], "label": [1, 2, 3, 5]})
    assert gate_canary.errors(frame) == ([0.5, -1.0], 2)


def test_correct_treats_one_and_one_point_zero_as_one_class() -> None:
    frame = pd.DataFrame({"prediction": [1, "setosa", 2.0, "a"], "label": [1.0, "setosa", 3, "b"]})
    assert gate_canary.correct(frame) == [True, True, False, False]
    with pytest.raises(ConfigError, match="not numbers"):
        gate_canary.errors(frame)


def test_the_bootstrap_holds_a_bounded_number_of_resamples_in_memory() -> None:
    """scipy resamples all 9999 draws at once unless told otherwise: 9999 x rows values per
    side (8 GB per side at 100,000 labelled rows). The gate resamples in batches."""
    import tracemalloc

    rng = np.random.default_rng(5)
    stable, canary = rng.normal(0, 1.0, 4000), rng.normal(0, 1.0, 4000)
    tracemalloc.start()
    try:
        online.bootstrap_difference("rmse", stable, canary, alpha=0.05)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    all_at_once = 9999 * 4000 * 8  # one side's resamples, about 320 MB
    assert peak < all_at_once / 4, f"{peak / 1e6:.0f} MB"


def test_a_min_effect_of_a_whole_accuracy_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--min-effect 2 (meant as 2 points?) cannot be a drop in a share: a clear error before the
    log is read, not a math domain error in the power calculation."""
    from types import SimpleNamespace

    from nb2prod.models import GateOptions

    class Build:
        def __init__(self, root: Path) -> None:
            pass

        def deployment(self) -> dict[str, object]:
            return STATE

        def card(self) -> SimpleNamespace:
            return SimpleNamespace(model_version="b", output_kind="label")

    monkeypatch.setattr(gate_canary, "BuildDir", Build)
    options = GateOptions(tmp_path, str(tmp_path / "no-log"), str(tmp_path / "no.csv"),
                          min_effect=2.0)  # fmt: skip
    with pytest.raises(ConfigError, match="--min-effect 2 is not a drop in accuracy"):
        gate_canary.evaluate(options)
