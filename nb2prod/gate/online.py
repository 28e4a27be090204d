"""The online gate's statistics: is the canary's live quality worse than the stable revision's?

Pure functions of the labelled rows each side served; no I/O. Every test is one-sided, because
the gate only asks "is the canary worse?" (a better canary and an equal one are both promoted):

- accuracy: a two-proportion test. With at least 5 expected successes and failures in every
  cell, a one-sided z-test on the pooled proportion (``scipy.stats.norm``); below that the
  normal approximation is poor, so Fisher's exact test (``scipy.stats.fisher_exact``,
  ``alternative="less"`` on the canary's odds of a correct prediction).
- mae / rmse: a seeded percentile bootstrap (``scipy.stats.bootstrap``, two independent samples)
  of canary error minus stable error. The one-sided ``1 - alpha`` interval's lower bound and
  the bootstrap p-value (the share of resampled differences at or below zero) agree by
  construction: the canary is significantly worse exactly when the lower bound is above zero.

How many rows are enough comes from the usual power calculation at ``alpha`` and power 0.8 for
the smallest difference worth detecting (``min_effect``): without that many rows per side, a
canary that is not significantly worse is not yet shown to be as good, so the gate waits.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Decision = Literal["promote", "rollback", "wait"]
Metric = Literal["accuracy", "mae", "rmse"]

#: The power the row counts are computed for: the chance of detecting a canary worse by
#: ``min_effect`` (the common default of power analyses).
POWER = 0.8
#: The default smallest difference worth detecting: 2 points of accuracy, or this share of the
#: stable revision's error for mae and rmse.
DEFAULT_ACCURACY_EFFECT = 0.02
DEFAULT_RELATIVE_ERROR_EFFECT = 0.10
#: Below this many expected counts in a cell, the z-test gives way to Fisher's exact test.
_MIN_EXPECTED = 5
_BOOTSTRAP_RESAMPLES = 9999
_BOOTSTRAP_SEED = 20240613
#: Resampled values held at once per side (8 bytes each): scipy resamples every draw at once
#: by default, 9999 x rows, which is 8 GB per side at 100,000 labelled rows.
_BOOTSTRAP_CELLS = 1_000_000
#: SciPy 1.15 named the generator argument ``rng``; older releases (>= 1.10) ``random_state``.
_SEED_ARGUMENT = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


@dataclass(frozen=True)
class Side:
    """One side of the comparison: how many labelled rows, and its metric on them."""

    rows: int
    value: float


@dataclass(frozen=True)
class GateStatistics:
    """What the gate decided and why: the evidence ``promote --gate`` prints."""

    metric: Metric
    test: str
    stable: Side
    canary: Side
    difference: float  # canary minus stable, in the metric's units
    p_value: float  # one-sided: the chance of a difference this bad if the canary were as good
    # One-sided 1 - alpha interval for the difference, bounded on the better side. For mae and
    # rmse (the bootstrap) it excludes 0 exactly when the canary is significantly worse; for
    # accuracy it is the unpooled Wald bound, shown for scale: the decision is the test's p.
    ci_low: float
    ci_high: float
    alpha: float
    min_effect: float
    required_rows: int  # per side
    decision: Decision

    @property
    def more_rows_needed(self) -> dict[str, int]:
        """How many more labelled rows each side needs before the gate can promote."""
        return {
            "stable": max(0, self.required_rows - self.stable.rows),
            "canary": max(0, self.required_rows - self.canary.rows),
        }


def higher_is_better(metric: Metric) -> bool:
    """Accuracy grows with quality; errors shrink."""
    return metric == "accuracy"


# -- accuracy ------------------------------------------------------------------------------


def proportion_test(
    stable_correct: int, stable_rows: int, canary_correct: int, canary_rows: int
) -> tuple[float, str]:
    """One-sided p-value that the canary's accuracy is lower than the stable one's, and the test.

    The z-test's statistic is (p_stable - p_canary) / sqrt(p(1-p)(1/n_s + 1/n_c)) with p the
    pooled proportion; Fisher's exact test takes over when any expected count is under 5.
    """
    if stable_rows <= 0 or canary_rows <= 0:
        raise ValueError("both sides need at least one row")
    total = stable_rows + canary_rows
    pooled = (stable_correct + canary_correct) / total
    expected = [n * share for n in (stable_rows, canary_rows) for share in (pooled, 1 - pooled)]
    if min(expected) < _MIN_EXPECTED:
        table = [
            [canary_correct, canary_rows - canary_correct],
            [stable_correct, stable_rows - stable_correct],
        ]
        result = stats.fisher_exact(table, alternative="less")
        return float(result.pvalue), "Fisher exact (one-sided)"
    spread = math.sqrt(pooled * (1 - pooled) * (1 / stable_rows + 1 / canary_rows))
    z = (stable_correct / stable_rows - canary_correct / canary_rows) / spread
    return float(stats.norm.sf(z)), "two-proportion z-test (one-sided, pooled)"


def rows_for_proportions(stable_accuracy: float, min_effect: float, alpha: float) -> int:
    """Rows per side for a one-sided two-proportion z-test to detect a drop of ``min_effect``.

    The textbook sample size (Fleiss, no continuity correction), with p1 the stable accuracy,
    p2 = p1 - min_effect and p the mean of the two:
    n = (z_(1-alpha) sqrt(2 p (1-p)) + z_power sqrt(p1 (1-p1) + p2 (1-p2)))^2 / min_effect^2.
    """
    p1 = min(max(stable_accuracy, min_effect), 1.0)
    p2 = p1 - min_effect
    mean = (p1 + p2) / 2
    z_alpha, z_power = stats.norm.ppf(1 - alpha), stats.norm.ppf(POWER)
    root = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return max(2, math.ceil(root**2 / min_effect**2))


# -- errors --------------------------------------------------------------------------------


def error_of(metric: Metric, errors: np.ndarray) -> float:
    """MAE or RMSE of absolute errors."""
    if metric == "rmse":
        return float(np.sqrt(np.mean(errors**2)))
    return float(np.mean(errors))


def bootstrap_difference(
    metric: Metric,
    stable_errors: Sequence[float],
    canary_errors: Sequence[float],
    alpha: float,
    seed: int = _BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(p-value, lower bound, upper bound) for canary error minus stable error, bootstrapped.

    The interval is one-sided at ``1 - alpha`` (its upper bound is infinite): the canary is
    significantly worse when its lower bound is above zero.
    """
    stable = np.abs(np.asarray(stable_errors, dtype=float))
    canary = np.abs(np.asarray(canary_errors, dtype=float))

    def difference(canary_sample: np.ndarray, stable_sample: np.ndarray, axis: int) -> np.ndarray:
        if metric == "rmse":
            return np.sqrt(np.mean(canary_sample**2, axis=axis)) - np.sqrt(
                np.mean(stable_sample**2, axis=axis)
            )
        return np.mean(canary_sample, axis=axis) - np.mean(stable_sample, axis=axis)

    result = stats.bootstrap(
        (canary, stable),
        difference,
        n_resamples=_BOOTSTRAP_RESAMPLES,
        vectorized=True,
        confidence_level=1 - alpha,
        alternative="greater",
        method="percentile",
        batch=max(1, _BOOTSTRAP_CELLS // max(len(canary), len(stable), 1)),
        **{_SEED_ARGUMENT: np.random.default_rng(seed)},
    )
    at_or_below_zero = int(np.sum(result.bootstrap_distribution <= 0))
    p_value = (at_or_below_zero + 1) / (_BOOTSTRAP_RESAMPLES + 1)
    interval = result.confidence_interval
    return p_value, float(interval.low), float(interval.high)


def rows_for_errors(
    metric: Metric, stable_errors: Sequence[float], min_effect: float, alpha: float
) -> int:
    """Rows per side to detect a canary error higher by ``min_effect`` (one-sided, power 0.8).

    The two-sample mean comparison n = 2 ((z_(1-alpha) + z_power) sigma / delta)^2, on the
    absolute errors (mae) or on the squared errors (rmse, with delta the change in mean squared
    error that raises the stable RMSE by ``min_effect``); sigma is the stable side's spread.
    """
    errors = np.abs(np.asarray(stable_errors, dtype=float))
    if metric == "rmse":
        rmse = error_of("rmse", errors)
        errors, delta = errors**2, (rmse + min_effect) ** 2 - rmse**2
    else:
        delta = min_effect
    sigma = float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0
    if sigma == 0.0 or delta <= 0:
        return 2
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(POWER)
    return max(2, math.ceil(2 * (z * sigma / delta) ** 2))


# -- the decision --------------------------------------------------------------------------


def default_min_effect(metric: Metric, stable_value: float) -> float:
    """2 points of accuracy, or 10% of the stable revision's error."""
    if metric == "accuracy":
        return DEFAULT_ACCURACY_EFFECT
    return DEFAULT_RELATIVE_ERROR_EFFECT * stable_value


def decide_accuracy(
    stable_correct: Sequence[bool],
    canary_correct: Sequence[bool],
    alpha: float,
    min_effect: float | None = None,
) -> GateStatistics:
    """The gate on accuracy: one bool per labelled row, True where the prediction was right."""
    ns, nc = len(stable_correct), len(canary_correct)
    ks, kc = int(sum(stable_correct)), int(sum(canary_correct))
    stable = Side(ns, ks / ns if ns else math.nan)
    canary = Side(nc, kc / nc if nc else math.nan)
    effect = min_effect if min_effect is not None else DEFAULT_ACCURACY_EFFECT
    required = rows_for_proportions(stable.value if ns else 0.5, effect, alpha)
    if ns and nc:
        p_value, test = proportion_test(ks, ns, kc, nc)
        difference = canary.value - stable.value
        # The one-sided Wald bound on how much worse the canary may be.
        spread = math.sqrt(
            stable.value * (1 - stable.value) / ns + canary.value * (1 - canary.value) / nc
        )
        low, high = -math.inf, float(difference + stats.norm.ppf(1 - alpha) * spread)
    else:
        p_value, test, difference, low, high = math.nan, "none (no rows)", math.nan, *[math.nan] * 2
    return _decision(
        "accuracy", test, stable, canary, difference, p_value, (low, high), alpha, effect, required
    )


def decide_errors(
    metric: Metric,
    stable_errors: Sequence[float],
    canary_errors: Sequence[float],
    alpha: float,
    min_effect: float | None = None,
    seed: int = _BOOTSTRAP_SEED,
) -> GateStatistics:
    """The gate on mae or rmse: prediction minus label per labelled row, on each side."""
    ns, nc = len(stable_errors), len(canary_errors)
    stable_abs = np.abs(np.asarray(stable_errors, dtype=float))
    canary_abs = np.abs(np.asarray(canary_errors, dtype=float))
    stable = Side(ns, error_of(metric, stable_abs) if ns else math.nan)
    canary = Side(nc, error_of(metric, canary_abs) if nc else math.nan)
    effect = min_effect if min_effect is not None else default_min_effect(metric, stable.value)
    required = rows_for_errors(metric, stable_abs, effect, alpha) if ns else 2
    # A bootstrap of one row per side has nothing to resample.
    if ns >= 2 and nc >= 2:
        p_value, low, high = bootstrap_difference(metric, stable_abs, canary_abs, alpha, seed)
        test = "bootstrap of the difference (one-sided, percentile, seeded)"
        difference = canary.value - stable.value
    else:
        p_value, test, difference, low, high = math.nan, "none (too few rows)", *[math.nan] * 3
    return _decision(
        metric, test, stable, canary, difference, p_value, (low, high), alpha, effect, required
    )


def _decision(
    metric: Metric,
    test: str,
    stable: Side,
    canary: Side,
    difference: float,
    p_value: float,
    interval: tuple[float, float],
    alpha: float,
    min_effect: float,
    required: int,
) -> GateStatistics:
    """Rollback when significantly worse; promote when not, with enough rows; else wait."""
    if not math.isnan(p_value) and p_value < alpha:
        decision: Decision = "rollback"
    elif stable.rows >= required and canary.rows >= required and not math.isnan(p_value):
        decision = "promote"
    else:
        decision = "wait"
    return GateStatistics(
        metric=metric,
        test=test,
        stable=stable,
        canary=canary,
        difference=difference,
        p_value=p_value,
        ci_low=interval[0],
        ci_high=interval[1],
        alpha=alpha,
        min_effect=min_effect,
        required_rows=required,
        decision=decision,
    )
