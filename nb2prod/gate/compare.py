"""The offline champion/challenger gate: two build directories' model cards, metric by metric.

A model card holds every finite scalar the notebook's evaluate cells bound. Comparing two
cards only means something between like and like, so :func:`compare` refuses
(``NotComparableError``) when:

- the metric names differ (with a chosen metric: when it is missing on one side);
- the evaluation data differ. A card fingerprints the raw frame the model was trained from,
  not the evaluation split drawn from it; a split drawn from the same frame with the same
  fixed parameters is the same split. So the data count as the same when the fingerprints
  are equal and no parameter whose name says it can shape the split (``seed``,
  ``random_state``, ``test_size``, ``split``, ``fold``...) differs;
- a chosen metric's direction of "better" is neither known from its name nor given.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..builddir import BuildDir
from ..errors import ConfigError, NotComparableError
from ..models import ComparedModel, CompareOptions, ComparisonReport, MetricComparison
from ..runtime.card import ModelCard

__all__ = ["compare", "direction_of", "format_table"]

HIGHER = "higher"
LOWER = "lower"

#: Name tokens of metrics where higher is better: accuracy, balanced_accuracy, f1_macro,
#: precision, recall, roc_auc, auc, r2, average_precision (and test_accuracy, val_f1, ...).
_HIGHER_TOKENS = frozenset({"accuracy", "acc", "auc", "r2", "f1", "precision", "recall"})
#: Name tokens of metrics where lower is better; any name with "error" or "loss" is one too.
_LOWER_TOKENS = frozenset({"mae", "mse", "rmse", "msle", "rmsle", "mape", "logloss"})
#: Tokens that make a metric's name say nothing about its direction: the spread, count or
#: gap of a metric (accuracy_std, n_test, f1_gap) is not better when higher.
_NEUTRAL_TOKENS = frozenset(
    {"std", "stdev", "sd", "var", "variance", "sem", "ci", "n", "count", "support"}
    | {"diff", "delta", "gap", "lower", "upper"}
)
#: Parameter names that can shape the train/test split without changing the raw frame.
_SPLIT_PARAMETER = re.compile(
    r"seed|random_?state|split|holdout|fold|shuffle|stratif"
    r"|(^|_)(test|val|valid|validation|eval|train)_?(size|frac|fraction|ratio|share|rows)",
    re.IGNORECASE,
)


def direction_of(name: str) -> str | None:
    """``"higher"`` or ``"lower"`` when ``name`` is a common metric name, else None.

    Higher: names with a token accuracy, acc, auc, r2, f1 (f1score, f1_macro), precision
    or recall. Lower: mae, mse, rmse, msle, rmsle, mape, logloss, or "error" or "loss"
    anywhere in the name. None when both match, or when a token such as std, n, count or
    gap says the number is about a metric rather than the metric itself.
    """
    lowered = name.lower()
    tokens = {token for token in re.split(r"[^0-9a-z]+", lowered) if token}
    if tokens & _NEUTRAL_TOKENS:
        return None
    higher = bool(tokens & _HIGHER_TOKENS) or any(t.startswith("f1") for t in tokens)
    lower = bool(tokens & _LOWER_TOKENS) or "error" in lowered or "loss" in lowered
    if higher == lower:
        return None
    return HIGHER if higher else LOWER


def compare(options: CompareOptions) -> ComparisonReport:
    """Compare the challenger's metrics with the champion's (``nb2prod compare``).

    Raises NotComparableError when the cards can't be compared and ConfigError when a build
    directory has no usable card; a worse challenger is a verdict in the report, not an error.
    """
    if options.tolerance < 0 or not math.isfinite(options.tolerance):
        raise ConfigError(f"--tolerance must be a finite number >= 0, not {options.tolerance}")
    if options.metric is None and options.higher_is_better is not None:
        raise ConfigError(
            "--higher-is-better/--lower-is-better sets the direction of the --metric compared; "
            "pass --metric NAME too"
        )
    champion_card = BuildDir(options.champion).card()
    challenger_card = BuildDir(options.challenger).card()
    champion = _side(options.champion, champion_card)
    challenger = _side(options.challenger, challenger_card)
    changed = _changed_parameters(champion_card.parameters, challenger_card.parameters)
    notes = _check_same_data(champion, challenger, changed, options.allow_different_data)
    before = _metric_values(champion_card, options.champion)
    after = _metric_values(challenger_card, options.challenger)
    metrics = tuple(
        MetricComparison(
            name=name,
            champion=before[name],
            challenger=after[name],
            direction=direction,
            direction_from=source,
            verdict=_verdict(before[name], after[name], direction, options.tolerance),
        )
        for name, direction, source in _chosen_metrics(options, before, after)
    )
    return ComparisonReport(
        champion=champion,
        challenger=challenger,
        metrics=metrics,
        tolerance=options.tolerance,
        same_data=not notes,
        summary=_summary(metrics, options.tolerance),
        changed_parameters=changed,
        notes=tuple(notes),
    )


def _side(directory: Any, card: ModelCard) -> ComparedModel:
    return ComparedModel(
        directory=directory,
        name=card.name,
        model_version=card.model_version,
        data_fingerprint=dict(card.data_fingerprint),
    )


def _metric_values(card: ModelCard, directory: Any) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, value in card.metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{BuildDir(directory).card_path}: metric `{name}` is {value!r}, not a number",
                hint="The card was edited by hand; rebuild the directory with nb2prod build.",
            )
        values[name] = float(value)
    return values


def _changed_parameters(
    before: dict[str, Any], after: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    names = [*before, *(name for name in after if name not in before)]
    return {
        name: (before.get(name), after.get(name))
        for name in names
        if before.get(name) != after.get(name)
    }


def _describe(fingerprint: dict[str, Any]) -> str:
    rows, columns = fingerprint.get("rows", "?"), fingerprint.get("columns", "?")
    return f"{rows} rows x {columns} columns (sha256 {str(fingerprint.get('sha256', '?'))[:12]})"


def _check_same_data(
    champion: ComparedModel,
    challenger: ComparedModel,
    changed: dict[str, tuple[Any, Any]],
    allow_different_data: bool,
) -> list[str]:
    """Refuse unless both were evaluated on the same data; with the escape hatch, a note."""
    before, after = champion.data_fingerprint, challenger.data_fingerprint
    if before.get("sha256") != after.get("sha256"):
        problem = (
            "the models were trained and evaluated on different data: the champion's raw "
            f"training frame is {_describe(before)}, the challenger's {_describe(after)}"
        )
    else:
        split = [name for name in changed if _SPLIT_PARAMETER.search(name)]
        if not split:
            return []
        differences = ", ".join(
            f"`{name}` is {changed[name][0]!r} on the champion and {changed[name][1]!r} on "
            "the challenger"
            for name in split
        )
        problem = (
            f"the evaluation split may differ: parameter {differences}. The data fingerprints "
            f"are equal, {_describe(before)}, but cover the raw frame, not the split drawn "
            "from it"
        )
    if not allow_different_data:
        raise NotComparableError(
            problem,
            hint=(
                "Build both from the same data with the same split parameters; to compare "
                "anyway (a retrain on fresh data, a seed that only the model uses), pass "
                "--allow-different-data."
            ),
        )
    return [f"{problem}; compared anyway (--allow-different-data)"]


def _missing(before: dict[str, float], after: dict[str, float]) -> str:
    parts = []
    only_champion = [name for name in before if name not in after]
    only_challenger = [name for name in after if name not in before]
    if only_champion:
        parts.append(f"{_names(only_champion)} only in the champion's card")
    if only_challenger:
        parts.append(f"{_names(only_challenger)} only in the challenger's card")
    return "; ".join(parts)


def _names(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names) if names else "none"


def _chosen_metrics(
    options: CompareOptions, before: dict[str, float], after: dict[str, float]
) -> list[tuple[str, str | None, str]]:
    """(name, direction, where the direction comes from) for each metric compared."""
    if options.metric is None:
        return _every_shared_metric(before, after)
    name = options.metric
    sides = [
        side for side, values in (("champion", before), ("challenger", after)) if name not in values
    ]
    if sides:
        reported = _names(sorted(set(before) & set(after)))
        raise NotComparableError(
            f"metric `{name}` is missing from the {' and the '.join(sides)}'s model card "
            f"(both report: {reported})",
            hint="Pick a metric both evaluate cells bind with --metric NAME.",
        )
    if options.higher_is_better is not None:
        return [(name, HIGHER if options.higher_is_better else LOWER, "flag")]
    direction = direction_of(name)
    if direction is None:
        raise NotComparableError(
            f"which way is better for metric `{name}` is unknown",
            hint=f"Say it: --metric {name} --higher-is-better (or --lower-is-better).",
        )
    return [(name, direction, "name")]


def _every_shared_metric(
    before: dict[str, float], after: dict[str, float]
) -> list[tuple[str, str | None, str]]:
    if set(before) != set(after):
        raise NotComparableError(
            f"the models report different metrics: {_missing(before, after)}",
            hint="Gate on a metric both report with --metric NAME, or make both notebooks' "
            "evaluate cells bind the same metrics.",
        )
    if not before:
        raise NotComparableError(
            "neither model card holds a metric: the evaluate cells bind no finite number",
            hint="Bind each metric to a name in an evaluate cell, e.g. "
            "accuracy = accuracy_score(y_test, predictions).",
        )
    chosen = [(name, direction_of(name)) for name in before]
    if all(direction is None for _, direction in chosen):
        first = chosen[0][0]
        raise NotComparableError(
            f"no metric has a direction of better known from its name: {_names(list(before))}",
            hint=f"Gate on one and say which way is better: --metric {first} "
            "--higher-is-better (or --lower-is-better).",
        )
    return [(name, direction, "name" if direction else "unknown") for name, direction in chosen]


def _verdict(champion: float, challenger: float, direction: str | None, tolerance: float) -> str:
    if direction is None:
        return "not gated"
    if math.isclose(champion, challenger, rel_tol=1e-9, abs_tol=1e-12):
        return "same"
    gain = challenger - champion if direction == HIGHER else champion - challenger
    if gain > 0:
        return "better"
    # isclose: 0.9 - 0.05 is 0.8500000000000001, and a loss of exactly the tolerance passes.
    if -gain <= tolerance or math.isclose(-gain, tolerance, rel_tol=1e-9, abs_tol=1e-12):
        return "within tolerance"
    return "worse"


def _number(value: float) -> str:
    return f"{value:.6g}"


def _summary(metrics: tuple[MetricComparison, ...], tolerance: float) -> str:
    gated = [m for m in metrics if m.direction is not None]
    worse = [m for m in gated if m.verdict == "worse"]
    allowed = [m for m in gated if m.verdict == "within tolerance"]
    limit = f"tolerance {_number(tolerance)}"
    if worse:
        detail = ", ".join(
            f"{m.name} {_number(m.champion)} -> {_number(m.challenger)} ({m.direction} is better)"
            for m in worse
        )
        return f"the challenger is worse than the champion: {detail} ({limit})"
    names = ", ".join(m.name for m in gated)
    if not allowed:
        return f"the challenger passes: at least as good as the champion on {names} ({limit})"
    within = ", ".join(f"{m.name} worse by {_number(abs(m.difference))}" for m in allowed)
    return f"the challenger passes on {names} ({limit}): {within}, within the tolerance"


def format_table(report: ComparisonReport) -> str:
    """The human-readable report: both models, the data, one row per metric, the verdict."""
    before, after = report.champion.data_fingerprint, report.challenger.data_fingerprint
    if report.same_data:
        data = f"same raw training frame, {_describe(before)}"
    elif before.get("sha256") == after.get("sha256"):
        data = f"same raw training frame, {_describe(before)}; the split may differ (see note)"
    else:
        data = f"DIFFERENT: champion {_describe(before)}; challenger {_describe(after)}"
    lines = [
        f"champion:   {report.champion.name} {report.champion.model_version} "
        f"({report.champion.directory})",
        f"challenger: {report.challenger.name} {report.challenger.model_version} "
        f"({report.challenger.directory})",
        f"data:       {data}",
    ]
    if report.changed_parameters:
        lines.append(
            "parameters: "
            + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in report.changed_parameters.items())
        )
    rows = [("metric", "champion", "challenger", "difference", "direction", "verdict")]
    for m in report.metrics:
        direction = m.direction or "unknown"
        rows.append(
            (
                m.name,
                _number(m.champion),
                _number(m.challenger),
                f"{m.difference:+.6g}",
                f"{direction} (flag)" if m.direction_from == "flag" else direction,
                m.verdict.upper() if m.verdict == "worse" else m.verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join([*lines, "", *table, "", report.summary])
