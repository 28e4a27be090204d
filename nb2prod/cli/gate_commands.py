"""Gate commands: compare a challenger build with the champion before it replaces it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import pipeline
from ..errors import ChallengerWorse
from ..gate.compare import format_table
from ..models import CompareOptions
from .group import BUILD_DIR, EXIT_CODE_HELP, cli, say


@cli.command(epilog=EXIT_CODE_HELP)
@click.argument("champion", type=BUILD_DIR)
@click.argument("challenger", type=BUILD_DIR)
@click.option(
    "--metric",
    metavar="NAME",
    help="Gate on this metric only. Default: every metric both cards hold whose direction of "
    "better is known from its name.",
)
@click.option(
    "--higher-is-better/--lower-is-better",
    "higher_is_better",
    default=None,
    help="The direction of better for --metric (default: known from common names).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="How much worse the challenger may be, in the metric's own units (absolute).",
)
@click.option(
    "--allow-different-data",
    is_flag=True,
    help="Compare even when the evaluation data differ (e.g. a retrain on fresh data); the "
    "report says they differ.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def compare(
    champion: Path,
    challenger: Path,
    metric: str | None,
    higher_is_better: bool | None,
    tolerance: float,
    allow_different_data: bool,
    as_json: bool,
) -> None:
    """Gate CHALLENGER on CHAMPION's evaluate metrics (two build directories).

    \b
    Compares the metrics in DIR/model/model_card.json: every finite number
    the notebook's evaluate cells bind. Refuses (exit 16) to compare apples
    with oranges:
      - different metric names (with --metric: that metric missing on a side);
      - different evaluation data: the raw training frames' fingerprints
        differ, or a parameter that can shape the train/test split (seed,
        random_state, test_size, split, fold...) differs;
      - a --metric whose direction of better is unknown, without a flag.
    Higher is better for accuracy, f1*, precision*, recall*, (roc_)auc, r2,
    balanced_accuracy, average_precision; lower for mae, mse, rmse, mape,
    log_loss and any name with "error" or "loss". Without --metric, every
    metric with a known direction is gated; the others are listed, not gated.
    Exits 0 when the challenger is at least as good on each gated metric,
    within --tolerance (challenger >= champion - X when higher is better,
    <= champion + X when lower is better), and 15 when it is worse.
    """
    options = CompareOptions(
        champion=champion,
        challenger=challenger,
        metric=metric,
        higher_is_better=higher_is_better,
        tolerance=tolerance,
        allow_different_data=allow_different_data,
    )
    report = pipeline.compare(options)
    for note in report.notes:
        say(f"note: {note}")
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else format_table(report))
    if not report.passed:
        raise ChallengerWorse(report.summary)
