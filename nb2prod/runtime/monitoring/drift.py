"""Drift statistics: a window of serving values against the reference profile (``profile.py``).

Pure functions of numpy arrays; the monitor (``monitoring.py``) calls them off the request path.
scipy is imported on first use, so that loading the service does not pay for it.

- numeric: PSI over the reference's decile bins (plus a missing-value bucket) and the two-sample
  Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) against the reference rebuilt from its
  percentiles (:func:`reference_points`);
- categorical: PSI over the reference levels (plus ``other``, ``unseen`` and missing buckets) and
  a chi-square test of homogeneity (``scipy.stats.chi2_contingency``) on reference counts vs
  window counts, so that levels never seen in training count as evidence of drift.

The verdict rule (:func:`judge`, ``NB2PROD_DRIFT_RULE``, default ``and``): a column drifts when
its PSI >= the PSI threshold (the shift is material) AND its test's p-value < alpha, Bonferroni-
corrected across the tested columns as alibi-detect does (the shift is not sampling noise).
Either alone misfires: PSI is biased upwards on small windows (about (bins - 1) / rows under no
drift, so at 100 rows each of ten columns has a ~7% chance of PSI >= 0.2), and with large windows
the tests flag shifts too small to matter. ``or``, ``psi`` and ``test`` select the other rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .profile import QUANTILE_PROBS, bin_counts, level_counts, numeric_values

__all__ = ["Thresholds", "compare", "judge", "preview", "psi", "psi_level", "reference_points"]

#: Shares are clipped to this before the PSI logarithm (an empty bucket would give infinity).
PSI_EPSILON = 1e-4
#: At most this many unseen levels are named in a report (their count is always exact).
MAX_UNSEEN_NAMED = 10
#: An unseen level is named by at most this many characters of what the client sent.
PREVIEW_CHARS = 24
#: The rebuilt KS reference has as many points as training had values, up to this many.
REFERENCE_POINTS = 1000


@dataclass(frozen=True)
class Thresholds:
    """When a statistic means drift (see the module docstring for the rule)."""

    psi: float = 0.2
    psi_moderate: float = 0.1
    p_value: float = 0.05
    min_rows: int = 100
    share: float = 0.5
    bonferroni: bool = True
    rule: str = "and"


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two share vectors: sum((c - r) * ln(c / r)).

    Shares are clipped to :data:`PSI_EPSILON`, so a bucket empty on one side adds a large but
    finite term, and a bucket empty on both sides adds nothing.
    """
    ref = np.clip(np.asarray(reference, dtype=np.float64), PSI_EPSILON, None)
    cur = np.clip(np.asarray(current, dtype=np.float64), PSI_EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi_level(value: float, thresholds: Thresholds) -> str:
    """``stable`` (< moderate), ``moderate`` or ``drift`` (>= the PSI threshold)."""
    if value >= thresholds.psi:
        return "drift"
    return "moderate" if value >= thresholds.psi_moderate else "stable"


def reference_points(profile: Mapping[str, Any]) -> np.ndarray:
    """The reference distribution for the KS test, rebuilt from the profile's percentiles.

    Why KS against a rebuilt reference rather than a binned test: the profile keeps no raw
    training values, but its 1st..99th percentiles pin the reference CDF to within about 1% at
    every point (less than the KS critical value of a window of 1000 rows, ~0.06), so
    ``scipy.stats.ks_2samp`` against ``n`` evenly spaced quantile points (the quantile function
    interpolated linearly, ``n`` = training values up to :data:`REFERENCE_POINTS`) keeps the
    same statistic, and the same reference size in the p-value, as a sample of the raw values
    would. A chi-square on the deciles would only see shifts large enough to move rows across
    a decile edge, which PSI already measures. The outer 1% on each side is put at the 1st and
    99th percentiles (the profile leaves out the extremes).
    """
    quantiles = profile.get("quantiles") or []
    size = min(int(profile.get("present", REFERENCE_POINTS)), REFERENCE_POINTS)
    if not quantiles or size <= 0:
        return np.empty(0)
    probabilities = (np.arange(size) + 0.5) / size
    return np.interp(probabilities, QUANTILE_PROBS, np.asarray(quantiles, dtype=np.float64))


def preview(level: str) -> str:
    """A short preview of a client's value for a report (never the whole value)."""
    return level if len(level) <= PREVIEW_CHARS else level[: PREVIEW_CHARS - 3] + "..."


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def compare_numeric(
    profile: Mapping[str, Any], values: Sequence[Any] | np.ndarray
) -> dict[str, Any]:
    """PSI (deciles + missing) and KS for one numeric column's window."""
    from scipy.stats import ks_2samp

    current = numeric_values(np.asarray(values))
    present = current[~np.isnan(current)]
    missing_share = float(1 - present.size / current.size) if current.size else 0.0
    ref_shares = np.asarray(profile["shares"]) * (1 - profile["missing_share"])
    cur_shares = _shares(bin_counts(present, profile["edges"])) * (1 - missing_share)
    result: dict[str, Any] = {
        "test": "ks",
        "psi": psi([*ref_shares, profile["missing_share"]], [*cur_shares, missing_share]),
        "statistic": None,
        "p_value": None,
        "mean": float(present.mean()) if present.size else None,
        "reference_mean": profile["mean"],
    }
    reference = reference_points(profile)
    if present.size and reference.size:
        test = ks_2samp(reference, present)
        result["statistic"] = float(test.statistic)
        result["p_value"] = float(test.pvalue)
    return result


def compare_categorical(
    profile: Mapping[str, Any], values: Sequence[Any] | np.ndarray
) -> dict[str, Any]:
    """PSI over levels and a chi-square test for one categorical column's window."""
    from scipy.stats import chi2_contingency

    counts, missing = level_counts(values)
    levels: list[str] = profile["levels"]
    known = set(levels)
    unseen = {level: n for level, n in counts.items() if level not in known}
    has_other = profile["other"] > 0
    # With an `other` bucket (more levels than kept), a new value may be one of the rarer
    # training levels: it counts there. Without one, it is a level training never saw.
    buckets_ref = [*profile["counts"], profile["other"], 0, profile["missing"]]
    buckets_cur = [
        *(counts.get(level, 0) for level in levels),
        sum(unseen.values()) if has_other else 0,
        0 if has_other else sum(unseen.values()),
        missing,
    ]
    ref, cur = np.asarray(buckets_ref, dtype=np.float64), np.asarray(buckets_cur, dtype=np.float64)
    table = np.vstack([ref, cur])[:, (ref + cur) > 0]
    statistic, p_value = 0.0, 1.0
    if table.shape[1] > 1 and cur.sum() > 0:
        test = chi2_contingency(table, correction=False)
        statistic, p_value = float(test.statistic), float(test.pvalue)
    named = sorted(unseen.items(), key=lambda item: (-item[1], item[0]))[:MAX_UNSEEN_NAMED]
    return {
        "test": "chi2",
        "psi": psi(_shares(ref), _shares(cur)),
        "statistic": statistic,
        "p_value": p_value,
        "unseen": {
            "count": 0 if has_other else sum(unseen.values()),
            "levels": [] if has_other else [preview(level) for level, _ in named],
        },
    }


def compare(
    profile: Mapping[str, Any], values: Sequence[Any] | np.ndarray
) -> dict[str, Any] | None:
    """The statistics of a window against one profile entry; None for skipped entries."""
    kind = profile.get("kind")
    if kind == "numeric":
        return compare_numeric(profile, values)
    if kind == "categorical":
        return compare_categorical(profile, values)
    return None


def judge(result: dict[str, Any], window: int, alpha: float, thresholds: Thresholds) -> None:
    """Add the verdict fields (threshold, psi_level, drifted, window) to a ``compare`` result.

    Below ``thresholds.min_rows`` rows there is no verdict (``drifted`` is False).
    """
    p_value = result.get("p_value")
    enough = window >= thresholds.min_rows
    by_psi = result["psi"] >= thresholds.psi
    by_test = p_value is not None and not math.isnan(p_value) and p_value < alpha
    verdict = {
        "and": by_psi and by_test,
        "or": by_psi or by_test,
        "psi": by_psi,
        "test": by_test,
    }.get(thresholds.rule, by_psi and by_test)
    result.update(
        threshold={"psi": thresholds.psi, "p_value": alpha, "rule": thresholds.rule},
        psi_level=psi_level(result["psi"], thresholds),
        drifted=bool(enough and verdict),
        window=window,
    )
