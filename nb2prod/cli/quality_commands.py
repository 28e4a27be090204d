"""``nb2prod quality``: per model version quality and fairness of logged predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, MissingExtraError, OutputExistsError, QualityBelowThreshold
from ..gate.quality import THRESHOLDS, QualityOptions, format_table, quality_report
from .group import BUILD_DIR, EXIT_CODE_HELP, cli

#: How an existing --html file is recognised as an earlier quality report: the generator tag
#: in the page's head (quality_html.SIGNATURE; a title alone is what any "Quality report" has).
_REPORT_SIGNATURE = '<meta name="generator" content="nb2prod quality">'

_THRESHOLD_HELP = {
    "min_accuracy": "Fail (exit 17) when a version's accuracy is below X.",
    "min_f1": "Fail when F1 (positive class, or macro for multiclass) is below X.",
    "min_roc_auc": "Fail when ROC AUC is below X (or cannot be computed: no probabilities).",
    "max_mae": "Fail when a regressor's mean absolute error is above X.",
    "max_rmse": "Fail when a regressor's root mean squared error is above X.",
    "min_r2": "Fail when a regressor's R² is below X.",
    "max_parity_difference": "Fail when the demographic parity difference between --by "
    "groups is above X.",
    "max_equalized_odds_difference": "Fail when the equalized odds difference between --by "
    "groups is above X.",
}


#: Thresholds on a share or a rate: a limit outside [0, 1] is a typo, not a gate.
_FRACTIONS = frozenset(
    {"min_accuracy", "min_f1", "min_roc_auc", "max_parity_difference",
     "max_equalized_odds_difference"}
)  # fmt: skip


def _threshold_options(command: click.Command) -> click.Command:
    for name in reversed(THRESHOLDS):
        flag = "--" + name.replace("_", "-")
        kind = click.FloatRange(0, 1) if name in _FRACTIONS else float
        command = click.option(flag, name, type=kind, metavar="X", help=_THRESHOLD_HELP[name])(
            command
        )
    return command


@cli.command(epilog=EXIT_CODE_HELP)
@click.option(
    "--predictions",
    required=True,
    metavar="PATH",
    help="The prediction log: the NB2PROD_PREDICTION_LOG folder (or a file in it), a saved "
    "stdout or Cloud Logging export, gs://BUCKET/DIR, or bq://PROJECT.DATASET.TABLE.",
)
@click.option(
    "--labels",
    required=True,
    metavar="PATH",
    help="Ground truth: CSV, Parquet or JSON Lines (local, gs:// or bq://) with the key column "
    "and a `label` column.",
)
@click.option(
    "--key",
    default="request_id",
    show_default=True,
    metavar="request_id|COL",
    help="How labels find their prediction: the request id, or a logged input column.",
)
@click.option(
    "--by", multiple=True, metavar="COL", help="Fairness segments: a logged input column."
)
@click.option(
    "--build",
    "builds",
    multiple=True,
    type=BUILD_DIR,
    metavar="DIR",
    help="A build directory: its model card gives the task and the drift reference of the "
    "version it built. Repeatable (stable and canary).",
)
@click.option("--version", "version", metavar="V", help="Apply thresholds to this version only.")
@click.option(
    "--positive-label",
    metavar="CLASS",
    help="The positive class (default: 1, True, or the second of two classes in order); with "
    "more than two classes, fairness differences measure this class against the rest.",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Bootstrap draws for the 95% intervals (seeded: the same rows give the same report).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option(
    "--html",
    "html",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="REPORT",
    help="Also write a self-contained HTML report with plots (replaces only an earlier "
    "nb2prod quality report).",
)
@_threshold_options
def quality(
    predictions: str,
    labels: str,
    key: str,
    by: tuple[str, ...],
    builds: tuple[Path, ...],
    version: str | None,
    positive_label: str | None,
    resamples: int,
    as_json: bool,
    html: Path | None,
    **limits: float | None,
) -> None:
    """Quality and fairness per model version, from logged predictions and later labels.

    \b
    Joins the service's prediction log with ground truth and reports, per
    model version (stable, canary...): accuracy, precision, recall, F1 and
    ROC AUC (when probabilities are logged) for classifiers, MAE, RMSE and R²
    for regressors, each with a 95% bootstrap interval and the row count;
    the metrics over time; with --by, per-group metrics and the demographic
    parity and equalized odds differences (fairlearn); with --build, drift of
    the logged inputs against the training reference (the service's tests).
    \b
    Keys (--key):
      request_id  the X-Request-ID each /predict call carried (or got back);
                  a labels file with a `row` column (0-based row in the
                  request) labels multi-row requests, without one only
                  one-row requests are labelled.
      COL         a logged input column identifying the row (e.g. order_id).
    \b
    Labels file: CSV with a header, Parquet or JSON Lines:
      request_id,row,label
      7f3a...,0,setosa
    \b
    Thresholds (--min-accuracy, --max-parity-difference, ...) apply to every
    version (or to --version V). The report is printed first; then exit 17
    when a threshold fails, 0 when all pass.
    """
    thresholds = {name: limit for name, limit in limits.items() if limit is not None}
    options = QualityOptions(
        predictions=predictions,
        labels=labels,
        key=key,
        by=by,
        builds=builds,
        thresholds=thresholds,
        version=version,
        positive_label=positive_label,
        resamples=resamples,
    )
    if html is not None:
        _refuse_foreign(html)
    report = quality_report(options)
    if html is not None:
        _refuse_foreign(html)  # again: a file may have appeared there while the report ran
        _write_html(report, html)
    click.echo(json.dumps(report, indent=2) if as_json else format_table(report))
    _exit_on_failed_thresholds(report)


def _exit_on_failed_thresholds(report: dict[str, Any]) -> None:
    """QualityBelowThreshold (exit 17) naming each failed threshold, after the report."""
    failed = [item for item in report["thresholds"] if not item["passed"]]
    if failed:
        shown = ", ".join(
            f"{item['name']} {item['limit']:g} on {item['model_version']} "
            f"({'n/a' if item['value'] is None else format(item['value'], '.4f')})"
            for item in failed
        )
        raise QualityBelowThreshold(f"quality below a threshold: {shown}")


def _refuse_foreign(path: Path) -> None:
    """An existing file at --html is replaced only when it is an earlier quality report."""
    if not path.exists():
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError as err:
        raise ConfigError(f"--html {path}: cannot read it ({err})") from err
    if _REPORT_SIGNATURE not in head:
        raise OutputExistsError(
            f"--html {path} exists and nb2prod quality did not write it",
            hint="Choose another path; nb2prod never overwrites a file it did not write.",
        )


def _write_html(report: dict[str, Any], path: Path) -> None:
    try:
        from ..gate.quality_html import write_html
    except ImportError as err:
        raise MissingExtraError("quality", "nb2prod quality --html", err) from err
    write_html(report, path)
