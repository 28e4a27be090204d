"""``nb2prod quality``: the quality of each model version on logged traffic, once labels arrive.

Reads the prediction log and ground truth (:mod:`.log_reader`) and joins them
(:mod:`.joined`), then per model version: the metrics with bootstrap intervals and over time
(:mod:`.quality_metrics`), fairness over ``--by`` segments (:mod:`.quality_fairness`), drift
against the training reference (:mod:`.quality_drift`), and the thresholds CI gates on.
:func:`quality_report` returns the report as a JSON-ready dict (the shape ``--json`` prints
and the HTML report renders); :func:`format_table` renders it for a terminal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, MissingExtraError
from .joined import join
from .log_reader import load_labels, load_predictions
from .quality_metrics import (
    CLASSIFICATION,
    REGRESSION,
    Task,
    aligned,
    bucket_width,
    detect_task,
    metric_functions,
    over_time,
    positive_class,
    with_intervals,
)

__all__ = ["THRESHOLDS", "QualityOptions", "format_table", "quality_report"]

#: Threshold name -> (where its value is, higher-or-lower limit, the task it needs or None).
THRESHOLDS: dict[str, tuple[str, str, str | None]] = {
    "min_accuracy": ("accuracy", "min", CLASSIFICATION),
    "min_f1": ("f1", "min", CLASSIFICATION),
    "min_roc_auc": ("roc_auc", "min", CLASSIFICATION),
    "max_mae": ("mae", "max", REGRESSION),
    "max_rmse": ("rmse", "max", REGRESSION),
    "min_r2": ("r2", "min", REGRESSION),
    "max_parity_difference": ("demographic_parity_difference", "max", None),
    "max_equalized_odds_difference": ("equalized_odds_difference", "max", None),
}
_FAIRNESS_VALUES = ("demographic_parity_difference", "equalized_odds_difference")


@dataclass(frozen=True)
class QualityOptions:
    """What ``nb2prod quality`` was asked (see its --help)."""

    predictions: str
    labels: str
    key: str = "request_id"
    by: tuple[str, ...] = ()
    builds: tuple[Path, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)  # THRESHOLDS name -> limit
    version: str | None = None  # thresholds apply to this model version only
    positive_label: str | None = None
    resamples: int = 1000
    seed: int = 0


def quality_report(options: QualityOptions) -> dict[str, Any]:
    """The quality report (module docstring); ConfigError for unusable inputs or options."""
    try:
        import fairlearn  # noqa: F401 - checked up front: a missing extra fails before the work
        import sklearn  # noqa: F401
    except ImportError as err:
        raise MissingExtraError("quality", "nb2prod quality", err) from err
    _check_options(options)
    from .quality_drift import cards_by_version

    cards = cards_by_version(options.builds)
    predictions = load_predictions(options.predictions)
    labels = load_labels(options.labels, options.key)
    joined = join(predictions, labels, options.key)
    notes: list[str] = []
    frame = joined.frame
    if frame.empty:
        raise ConfigError(
            f"no label in {options.labels} matches a logged prediction in "
            f"{options.predictions} on {options.key} ({joined.counts['logged']} predictions, "
            f"{joined.counts['labelled']} labels)",
            hint="Check --key: labels keyed by request_id carry the X-Request-ID each /predict "
            "call was sent (or answered) with.",
        )
    missing_by = [name for name in options.by if name not in frame.columns]
    if missing_by:
        raise ConfigError(
            f"--by {', '.join(missing_by)}: not a logged input column",
            hint="Segment on an input column the log holds (sensitive columns are never logged).",
        )
    frame = _without_missing_predictions(frame, notes)
    task = _task(frame, cards, options, notes)
    # Aligned once for all versions, so every version's values are classes of one task.
    y_true, y_pred = aligned(frame["label"], frame["prediction"], task.kind)
    if task.kind == REGRESSION:
        _refuse_text(frame, y_true, "label")
        _refuse_text(frame, y_pred, "prediction")
    versions = [
        _version_report(frame, (y_true, y_pred), predictions, version, task, cards, options, notes)
        for version in _versions_in_order(frame)
    ]
    checked = _thresholds(versions, options, task, notes)
    return {
        "predictions": options.predictions,
        "labels": options.labels,
        "key": options.key,
        "task": task.kind,
        "positive_label": _plain(task.positive),
        "rows": joined.counts,
        "versions": versions,
        "thresholds": checked,
        "passed": all(item["passed"] for item in checked),
        "notes": notes,
    }


def _check_options(options: QualityOptions) -> None:
    unknown = sorted(set(options.thresholds) - set(THRESHOLDS))
    if unknown:
        raise ConfigError(f"unknown thresholds {unknown}; known: {sorted(THRESHOLDS)}")
    fairness = [name for name in options.thresholds if THRESHOLDS[name][2] is None]
    if fairness and not options.by:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in fairness)
        raise ConfigError(
            f"{flags} needs segments: add --by COLUMN",
            hint="Fairness differences are measured between the groups of --by columns.",
        )
    if options.resamples < 1:
        raise ConfigError("--resamples must be at least 1")


def _without_missing_predictions(frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """The joined rows whose prediction was logged (a model that returned null or NaN for a
    row has no prediction to score), with a note of how many were left out."""
    missing = frame["prediction"].isna()
    if not missing.any():
        return frame
    if missing.all():
        raise ConfigError(
            f"all {len(frame)} joined rows have a null or NaN prediction: nothing to score",
            hint="The logged predictions are empty; check the model's output on these inputs.",
        )
    notes.append(
        f"{int(missing.sum())} joined rows left out: their logged prediction is null or NaN"
    )
    return frame[~missing].reset_index(drop=True)


def _refuse_text(frame: pd.DataFrame, values: np.ndarray, column: str) -> None:
    """A regressor's labels and predictions are numbers: ConfigError naming one that is not."""
    bad = np.isnan(values)
    if bad.any():
        example = frame[column].to_numpy()[bad][0]
        raise ConfigError(
            f"{int(bad.sum())} joined rows have a {column} that is not a number "
            f"(e.g. {example!r}), and a regressor's errors need numbers",
            hint="Fix or drop those labels; a classifier's build directory (--build) makes "
            "it a classification report.",
        )


def _versions_in_order(frame: pd.DataFrame) -> list[str]:
    firsts = frame.groupby("model_version")["timestamp"].min().sort_values()
    return [str(version) for version in firsts.index]


def _task(
    frame: pd.DataFrame, cards: dict[str, Any], options: QualityOptions, notes: list[str]
) -> Task:
    """The task (from a matching card, else the data), its classes and positive class."""
    served = [cards[v][1] for v in frame["model_version"].unique() if v in cards]
    output_kind = served[0].output_kind if served else None
    kind = detect_task(frame["label"], frame["prediction"], output_kind)
    if output_kind is None:
        notes.append(
            f"task: {kind}, taken from the labels and predictions (pass --build DIR to take it "
            "from the model card)"
        )
    if kind == REGRESSION:
        return Task(REGRESSION)
    y_true, y_pred = aligned(frame["label"], frame["prediction"], kind)
    classes = tuple(sorted(set(y_true.tolist()) | set(y_pred.tolist()), key=_class_order))
    positive = positive_class(classes, options.positive_label)
    if options.positive_label is not None and positive is None:
        raise ConfigError(
            f"--positive-label {options.positive_label} is not one of the classes "
            f"({', '.join(map(str, classes[:20]))})"
        )
    if positive is not None and options.positive_label is None:
        notes.append(f"positive class: {_plain(positive)} (set another with --positive-label)")
    return Task(CLASSIFICATION, classes, positive)


def _class_order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _version_report(
    frame: pd.DataFrame,
    values: tuple[np.ndarray, np.ndarray],
    logged: pd.DataFrame,
    version: str,
    task: Task,
    cards: dict[str, Any],
    options: QualityOptions,
    notes: list[str],
) -> dict[str, Any]:
    """One entry of the report's ``versions`` (``values``: every joined row's aligned label
    and prediction)."""
    mine = (frame["model_version"] == version).to_numpy()
    rows = frame[mine].reset_index(drop=True)
    y_true, y_pred = values[0][mine], values[1][mine]
    scores = _scores(rows, task, version, notes) if task.kind == CLASSIFICATION else None
    functions = metric_functions(task, with_scores=scores is not None)
    metrics = with_intervals(
        task, functions, y_true, y_pred, scores, options.resamples, options.seed
    )
    first, last = rows["timestamp"].min(), rows["timestamp"].max()
    width = bucket_width(first, last)
    report: dict[str, Any] = {
        "model_version": version,
        "revisions": sorted(r for r in rows["revision"].unique() if r),
        "rows": len(rows),
        "first": None if pd.isna(first) else first.isoformat(),
        "last": None if pd.isna(last) else last.isoformat(),
        "metrics": metrics,
        "bucket": width,
        "over_time": over_time(rows["timestamp"], functions, y_true, y_pred, scores, width),
        "fairness": None,
        "drift": None,
    }
    if options.by:
        from .quality_fairness import fairness

        report["fairness"] = fairness(rows, options.by, task, y_true, y_pred, notes)
    if version in cards:
        from .quality_drift import drift

        reference, card = cards[version]
        version_logged = logged[logged["model_version"] == version]
        report["drift"] = drift(version_logged, reference, card, notes)
    elif options.builds:
        notes.append(f"drift of {version}: no --build directory holds this model version")
    else:
        notes.append(f"drift of {version}: pass --build DIR (its build directory) to compare")
    return report


def _scores(rows: pd.DataFrame, task: Task, version: str, notes: list[str]) -> np.ndarray | None:
    """The probabilities in the classes' order (binary: the positive class's), or None."""
    if rows["probabilities"].isna().any() or rows["classes"].isna().any():
        return None
    matrix = []
    for probabilities, classes in zip(rows["probabilities"], rows["classes"], strict=True):
        index = {str(_plain(c)): i for i, c in enumerate(classes)}
        wanted = [task.positive] if task.binary else list(task.classes)
        try:
            matrix.append([float(probabilities[index[_class_text(c)]]) for c in wanted])
        except (KeyError, IndexError, TypeError, ValueError):
            notes.append(
                f"roc_auc of {version}: the logged classes ({', '.join(map(str, classes))}) do "
                "not cover the labels' classes, so it is not computed"
            )
            return None
    scores = np.asarray(matrix, dtype=np.float64)
    return scores[:, 0] if task.binary else scores


def _class_text(value: Any) -> str:
    """A class as the log writes it: 1.0 (a label read as a number) is the class 1."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _thresholds(
    versions: list[dict[str, Any]], options: QualityOptions, task: Task, notes: list[str]
) -> list[dict[str, Any]]:
    """Each threshold checked on each version (or on --version only)."""
    chosen = versions
    if options.version is not None:
        chosen = [v for v in versions if v["model_version"] == options.version]
        if not chosen:
            raise ConfigError(
                f"--version {options.version} has no labelled rows; versions: "
                f"{', '.join(v['model_version'] for v in versions)}"
            )
    checked = []
    for name, limit in sorted(options.thresholds.items()):
        metric, side, needs = THRESHOLDS[name]
        if needs is not None and needs != task.kind:
            raise ConfigError(
                f"--{name.replace('_', '-')} applies to {needs}; this is {task.kind}",
                hint="Use --min-accuracy/--min-f1/--min-roc-auc for classifiers, "
                "--max-mae/--max-rmse/--min-r2 for regressors.",
            )
        for version in chosen:
            if metric in _FAIRNESS_VALUES:
                value = (version["fairness"] or {}).get(metric)
            else:
                value = (version["metrics"].get(metric) or {}).get("value")
            passed = value is not None and (value >= limit if side == "min" else value <= limit)
            if value is None:
                notes.append(
                    f"threshold {name} fails for {version['model_version']}: {metric} could "
                    "not be computed"
                )
            checked.append(
                {
                    "name": name,
                    "limit": limit,
                    "model_version": version["model_version"],
                    "value": value,
                    "passed": bool(passed),
                }
            )
    return checked


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- the terminal table ----------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    """The report for a terminal: rows, one line per version and metric, fairness, drift,
    thresholds and notes."""
    rows = report["rows"]
    lines = [
        f"{report['task']} quality of {report['predictions']} against {report['labels']} "
        f"(key {report['key']})",
        f"rows: {rows['logged']} logged, {rows['labelled']} labelled, {rows['joined']} joined "
        f"({rows['unmatched_labels']} labels and {rows['unmatched_predictions']} predictions "
        "unmatched)",
    ]
    for version in report["versions"]:
        revisions = ", ".join(version["revisions"]) or "-"
        lines += ["", f"model {version['model_version']} ({revisions}): {version['rows']} rows"]
        for name, metric in version["metrics"].items():
            lines.append(f"  {name:<10} {_interval(metric)}")
        fairness = version.get("fairness")
        if fairness:
            lines.append(f"  by {', '.join(fairness['by'])}:")
            for group in fairness["groups"]:
                label = ", ".join(f"{k}={v}" for k, v in group["group"].items())
                shown = "  ".join(
                    f"{k} {_number(v)}" for k, v in group["metrics"].items() if k != "count"
                )
                lines.append(f"    {label:<20} {group['rows']:>7} rows  {shown}")
            lines.append(
                "    demographic parity difference "
                f"{_number(fairness['demographic_parity_difference'])}, equalized odds "
                f"difference {_number(fairness['equalized_odds_difference'])}"
            )
        drift = version.get("drift")
        if drift:
            drifted = [f["name"] for f in drift["features"] if f["drifted"]]
            lines.append(
                f"  drift vs {drift['reference']}: "
                + (f"DRIFTED ({', '.join(drifted)})" if drift["drifted"] else "none")
            )
    if report["thresholds"]:
        lines.append("")
        for item in report["thresholds"]:
            verdict = "ok  " if item["passed"] else "FAIL"
            lines.append(
                f"{verdict} {item['name']} {item['limit']:g} on {item['model_version']}: "
                f"{_number(item['value'])}"
            )
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def _interval(metric: dict[str, Any]) -> str:
    if metric.get("value") is None:
        return "n/a"
    return f"{metric['value']:.4f}  [{_number(metric['low'])}, {_number(metric['high'])}]"


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
