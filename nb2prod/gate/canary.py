"""The online gate's inputs and report: the canary's and the stable revision's labelled rows.

Reads who is the canary and who is stable from ``DIR/.nb2prod/deploy.json`` (as the last
``nb2prod deploy --canary`` left it), reads the prediction log and the labels
(:mod:`.log_reader`), joins them (:mod:`.joined`), splits the joined rows by the
``revision`` each was served by, and hands them to :mod:`.online` for the test. Moving
traffic is not done here: the gate is a verdict, and ``pipeline`` acts on it.

A log without revisions (a service run outside Cloud Run, where ``K_REVISION`` is unset) is
split by ``model_version`` instead: the canary is DIR's model version, stable every other one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..builddir import BuildDir
from ..errors import ConfigError
from ..models import GateOptions
from . import joined as joined_rows
from . import log_reader, online

_METRICS = ("accuracy", "mae", "rmse")


@dataclass(frozen=True)
class Sides:
    """Who the canary and the stable side are, and by which column the log tells them apart."""

    column: str  # "revision" or "model_version"
    canary: str
    stable: tuple[str, ...]


@dataclass(frozen=True)
class GateReport:
    """The online gate's verdict with its evidence."""

    build_dir: Path
    sides: Sides
    counts: dict[str, int]
    statistics: online.GateStatistics

    @property
    def decision(self) -> online.Decision:
        return self.statistics.decision

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON (``promote --gate --json``); NaN and infinities are null."""
        s = self.statistics
        return {
            "build_dir": str(self.build_dir),
            "by": self.sides.column,
            "canary": {
                "name": self.sides.canary,
                "rows": s.canary.rows,
                "value": _finite(s.canary.value),
            },
            "stable": {
                "names": list(self.sides.stable),
                "rows": s.stable.rows,
                "value": _finite(s.stable.value),
            },
            "metric": s.metric,
            "test": s.test,
            "difference": _finite(s.difference),
            "p_value": _finite(s.p_value),
            "interval": [_finite(s.ci_low), _finite(s.ci_high)],
            "alpha": s.alpha,
            "min_effect": s.min_effect,
            "required_rows": s.required_rows,
            "more_rows_needed": s.more_rows_needed,
            "rows": self.counts,
            "decision": s.decision,
        }

    def table(self) -> str:
        """The evidence as a small table, then the decision."""
        s = self.statistics
        stable_name = ", ".join(self.sides.stable)
        lines = [
            f"{'side':<8} {self.sides.column:<36} {'rows':>7} {s.metric:>10}",
            f"{'stable':<8} {stable_name[:36]:<36} {s.stable.rows:>7} {_num(s.stable.value):>10}",
            f"{'canary':<8} {self.sides.canary[:36]:<36} {s.canary.rows:>7} "
            f"{_num(s.canary.value):>10}",
            f"difference (canary - stable): {_num(s.difference)}; "
            f"one-sided {1 - s.alpha:.0%} interval [{_num(s.ci_low)}, {_num(s.ci_high)}]",
            f"test: {s.test}; p = {_num(s.p_value)} (alpha {s.alpha:g})",
            f"rows needed per side: {s.required_rows} (min effect {_num(s.min_effect)}, "
            f"power {online.POWER:g})",
            f"decision: {s.decision.upper()}",
        ]
        if self.counts.get("null_predictions"):
            lines.insert(-1, f"left out: {self.counts['null_predictions']} rows the model "
                         "answered null for")  # fmt: skip
        return "\n".join(lines)

    @property
    def summary(self) -> str:
        """One line for the error message of a wait or a rollback."""
        s = self.statistics
        if s.decision == "wait":
            more = s.more_rows_needed
            return (
                f"not enough labelled rows yet: canary {s.canary.rows}, stable {s.stable.rows}; "
                f"{s.required_rows} needed per side ({more['canary']} more for the canary, "
                f"{more['stable']} more for stable)"
            )
        verdict = "worse" if s.decision == "rollback" else "not worse"
        return (
            f"the canary is {verdict} on {s.metric}: {_num(s.canary.value)} vs "
            f"{_num(s.stable.value)} (p = {_num(s.p_value)}, alpha {s.alpha:g})"
        )


def evaluate(options: GateOptions) -> GateReport:
    """Join the logged traffic with its labels and test the canary against stable."""
    build = BuildDir(Path(options.build_dir))
    state = build.deployment()
    if state.get("target") != "cloudrun":
        raise ConfigError(f"{options.build_dir} was not deployed to Cloud Run by nb2prod")
    metric = choose_metric(options.metric, build.card().output_kind)
    if metric == "accuracy" and options.min_effect is not None and options.min_effect >= 1:
        raise ConfigError(
            f"--min-effect {options.min_effect:g} is not a drop in accuracy (a share below 1)",
            hint="Give the smallest drop worth detecting as a share: 0.02 is 2 points.",
        )
    predictions = log_reader.load_predictions(options.predictions)
    labels = log_reader.load_labels(options.labels, options.key)
    rows = joined_rows.join(predictions, labels, options.key)
    if rows.counts["labelled"] and not rows.counts["joined"]:
        # Waiting would hide a wrong --key or labels file until the retries run out.
        raise ConfigError(
            f"none of the {rows.counts['labelled']} labels matches a logged prediction "
            f"by {options.key}",
            hint="Check that --labels holds labels for this service's requests, and that "
            "--key names the column both files share (request_id: the X-Request-ID).",
        )
    sides = find_sides(state, predictions, build.card().model_version, options.build_dir)
    frame = rows.frame
    stable = frame[frame[sides.column].isin(sides.stable)]
    canary = frame[frame[sides.column] == sides.canary]
    counts = dict(rows.counts)
    if metric == "accuracy":
        statistics = online.decide_accuracy(
            correct(stable), correct(canary), options.alpha, options.min_effect
        )
    else:
        stable_errors, stable_null = errors(stable)
        canary_errors, canary_null = errors(canary)
        counts["null_predictions"] = stable_null + canary_null
        statistics = online.decide_errors(
            metric, stable_errors, canary_errors, options.alpha, options.min_effect
        )
    return GateReport(Path(options.build_dir), sides, counts, statistics)


def find_sides(
    state: dict[str, Any], predictions: pd.DataFrame, model_version: str, build_dir: Path
) -> Sides:
    """The canary and stable revisions from deploy.json, checked against the log."""
    canary = (state.get("canary") or {}).get("revision")
    if not canary:
        raise ConfigError(
            f"{build_dir} has no canary to gate: its last deploy was not a --canary deploy "
            "(or the canary was already promoted or rolled back)",
            hint=f"Deploy it with: nb2prod deploy {build_dir} --target cloudrun --canary 10",
        )
    stable = tuple(
        split["revision"]
        for split in state.get("traffic") or []
        if split.get("revision") and split["revision"] != canary and split.get("percent")
    )
    if not stable:
        raise ConfigError(f"{build_dir}'s deploy record names no stable revision beside the canary")
    logged = set(predictions["revision"]) - {""}
    if not logged:
        return _by_model_version(predictions, model_version, build_dir)
    # One side without rows yet (a canary just deployed) is a wait; neither side is a log of
    # another service.
    if not logged.intersection((canary, *stable)):
        raise ConfigError(
            f"the prediction log has no rows from the canary revision {canary} nor from "
            f"stable ({', '.join(stable)}); revisions logged: {', '.join(sorted(logged)[:8])}",
            hint="Point --predictions at this service's log.",
        )
    return Sides("revision", canary, stable)


def _by_model_version(predictions: pd.DataFrame, model_version: str, build_dir: Path) -> Sides:
    """Without revisions in the log: the canary is DIR's model version, stable the others."""
    versions = set(predictions["model_version"]) - {""}
    others = tuple(sorted(versions - {model_version}))
    if not others:  # the canary may not have served yet (a wait); stable must have
        raise ConfigError(
            f"the prediction log has no revisions, and its model versions "
            f"({', '.join(sorted(versions)) or 'none'}) do not tell {build_dir}'s "
            f"({model_version}) from another one",
            hint="Log from Cloud Run (which sets K_REVISION), or from two different model "
            "versions.",
        )
    return Sides("model_version", model_version, others)


def choose_metric(metric: str | None, output_kind: str) -> online.Metric:
    """--metric, or accuracy for a label output and mae for a number."""
    chosen = metric or ("mae" if output_kind == "number" else "accuracy")
    if chosen not in _METRICS:
        raise ConfigError(f"--metric {chosen} is not one of {', '.join(_METRICS)}")
    return cast(online.Metric, chosen)


def correct(frame: pd.DataFrame) -> list[bool]:
    """Whether each prediction equals its label (1, 1.0 and "1" are one class)."""
    return [_same(p, y) for p, y in zip(frame["prediction"], frame["label"], strict=True)]


def _same(prediction: Any, label: Any) -> bool:
    try:
        return math.isclose(float(prediction), float(label), rel_tol=0, abs_tol=1e-9)
    except (TypeError, ValueError):
        return str(prediction) == str(label)


def errors(frame: pd.DataFrame) -> tuple[list[float], int]:
    """Prediction minus label per row, and how many rows were left out because the model
    answered null (NaN) for them, as ``quality`` leaves them out; ConfigError when a
    prediction or a label is not a number."""
    null = frame["prediction"].isna()
    frame = frame[~null]
    predicted = pd.to_numeric(frame["prediction"], errors="coerce")
    actual = pd.to_numeric(frame["label"], errors="coerce")
    bad = predicted.isna() | actual.isna()
    if bad.any():
        example = frame.loc[bad].iloc[0]
        raise ConfigError(
            f"{int(bad.sum())} joined rows are not numbers (e.g. prediction "
            f"{example['prediction']!r}, label {example['label']!r}): mae and rmse need numbers",
            hint="Use --metric accuracy for a classifier.",
        )
    return list(np.asarray(predicted - actual, dtype=float)), int(null.sum())


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _num(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"
