"""Experiment tracking: ``build --mlflow`` and ``nb2prod track``, which logs a build to MLflow."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import pipeline
from ..errors import ConfigError
from ..models import TrackOptions, TrackRecord
from .group import BUILD_DIR, EXIT_CODE_HELP, cli, say

F = TypeVar("F", bound=Callable[..., Any])

#: What a run holds, for ``build --help`` (``track --help`` says it in its own words).
LOGGED_HELP = (
    "the notebook's parameters as built (with -p overrides) as params; every finite "
    "number in the model card's metrics as metrics; the model version, the notebook's path "
    "and sha256 and the nb2prod version as tags; model_card.json and the build directory "
    "(under build/) as artifacts. Then a new version of the registered model named after "
    "the notebook, tagged nb2prod_model_version."
)


def mlflow_options(what: str = "") -> Callable[[F], F]:
    """``--mlflow URI`` (or MLFLOW_TRACKING_URI) and ``--mlflow-experiment NAME``; ``what``
    ends the first one's help."""

    def decorate(command: F) -> F:
        decorators = [
            click.option(
                "--mlflow",
                "mlflow_uri",
                metavar="URI",
                envvar="MLFLOW_TRACKING_URI",
                show_envvar=True,
                help="The MLflow tracking server to log to (http://host:5000, databricks, "
                f"...). Needs pip install 'nb2prod[mlflow]'.{what}",
            ),
            click.option(
                "--mlflow-experiment",
                metavar="NAME",
                help="The MLflow experiment (created when missing). Default: the notebook's name.",
            ),
        ]
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return decorate


def tracking_uri(uri: str | None, experiment: str | None, off: bool = False) -> str | None:
    """The URI to log to, or None; a ConfigError for an option that would do nothing."""
    uri = (uri or "").strip() or None
    if off and uri is not None and _given("mlflow_uri"):
        raise ConfigError(
            "--mlflow and --no-mlflow contradict each other", hint="Pass one of them."
        )
    if off:
        uri = None  # MLFLOW_TRACKING_URI set for other tools: --no-mlflow overrides it
    if experiment is not None and uri is None:
        raise ConfigError(
            "--mlflow-experiment names where a run goes, but no run is logged"
            + (" (--no-mlflow)" if off else ""),
            hint="Pass --mlflow URI (or set MLFLOW_TRACKING_URI) too.",
        )
    if uri is not None:
        from ..track import check_tracking_uri

        check_tracking_uri(uri)  # a malformed URI is a usage error before anything runs
    return uri


def _given(name: str) -> bool:
    """True when the option was typed on the command line (not read from the environment)."""
    context = click.get_current_context(silent=True)
    source = context.get_parameter_source(name) if context is not None else None
    return source is click.core.ParameterSource.COMMANDLINE


@cli.command(epilog=EXIT_CODE_HELP)
@click.argument("directory", type=BUILD_DIR)
@mlflow_options()
@click.option("--json", "as_json", is_flag=True, help="Print where the run went as JSON.")
def track(
    directory: Path, mlflow_uri: str | None, mlflow_experiment: str | None, as_json: bool
) -> None:
    """Log a built DIRECTORY to MLflow and register its model version.

    What `nb2prod build --mlflow URI` does as its last step, for a build
    directory that is already there: to retry when the tracking server was
    down (build exits 20 and keeps the directory), or to log a build made
    without --mlflow. Each call makes one more run and one more registered
    version. The run is recorded in DIR/.nb2prod/mlflow.json.

    \b
    Logged: the notebook's parameters as built (with -p overrides) as
    params; every finite number in the model card's metrics as metrics;
    the model version, the notebook's path and sha256 and the nb2prod
    version as tags; model_card.json and the build directory (under
    build/) as artifacts (when the card marks sensitive columns, the golden
    rows and the training log are left out). Then a new version of the
    registered model named after the notebook, tagged nb2prod_model_version.
    The URI's password is never shown: it prints as user:***@host.
    """
    uri = tracking_uri(mlflow_uri, mlflow_experiment)
    if uri is None:
        raise ConfigError(
            "no MLflow tracking server to log to",
            hint="Pass --mlflow URI or set MLFLOW_TRACKING_URI.",
        )
    record = pipeline.track(TrackOptions(directory.resolve(), uri, mlflow_experiment), say)
    click.echo(json.dumps(record.to_json(), indent=2) if as_json else describe(record))


def describe(record: TrackRecord) -> str:
    """One line: the run, the registered version and where they are."""
    return (
        f"logged run {record.run_id} (experiment {record.experiment!r}) and registered "
        f"{record.registered_model} version {record.registered_version} at {record.tracking_uri}"
    )
