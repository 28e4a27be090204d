"""Commands that start from a notebook: check, generate, build; and serve, for what build made."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import pipeline
from ..builddir import BuildDir
from ..errors import ConfigError, Nb2ProdError
from ..models import BuildOptions, NotebookSpec, PreprocessCheck
from ..runtime.plan import ServingPlan
from . import check_report
from .group import (
    EXIT_CODE_HELP,
    PARAM_HELP,
    ROLE_MAP_HELP,
    STRICT_HELP,
    cli,
    context_options,
    parameters,
    role_map,
    say,
    sensitive,
)
from .track_commands import LOGGED_HELP, mlflow_options, tracking_uri


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option("--role-map", "role_map_text", metavar="BLOCK=ROLE,...", help=ROLE_MAP_HELP)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the findings as JSON on stdout: {"ok": ..., "cells": [{"cell", "role", '
    '"runs_in_training", "from", "first_line"}, ...], ...}; on a refusal also "error" and '
    '"hint" (and the same exit code). With --run, also "run": what ran and what it found.',
)
@click.option(
    "--run",
    "run_cells",
    is_flag=True,
    help="Also run the cells up to the model's train cells (here, in a fresh Python, as "
    "`build --train-on-host` does), then the preprocess step on one sample row and on a "
    "batch: catches what only data shows (a column the step needs, a statistic over the "
    "request's rows) without training. Needs the notebook's libraries and data here.",
)
def check(
    notebook: Path,
    params: tuple[str, ...],
    strict: bool,
    role_map_text: str | None,
    as_json: bool,
    run_cells: bool,
) -> None:
    """Validate NOTEBOOK against the contract; print cell roles and the serving state.

    Writes nothing. Exits 0 when `nb2prod build` would accept the notebook,
    with exit code 3 (and the cell, line and fix) when it would not. Lists
    the fits and statistics over the input rows that training will record
    and serving will replay (cell, line, expression), and how Kubeflow
    Kale blocks map to roles.

    Without --run the check reads the code only (it takes about a second).
    With --run it also runs the notebook up to its train cells and the
    preprocess step on sample rows, and exits with the code build would
    (3 contract, 5 a cell failed, 6 a row's features depend on its batch).
    """
    mapping = role_map(role_map_text)
    run: PreprocessCheck | None = None
    try:
        if run_cells:
            spec, plan, run = pipeline.check_run(
                notebook, parameters(params), strict=strict, role_map=mapping, progress=say
            )
        else:
            spec, plan = pipeline.check_plan(
                notebook, parameters(params), strict=strict, role_map=mapping
            )
    except Nb2ProdError as err:
        if as_json:
            click.echo(json.dumps(check_report.refusal(notebook, err, mapping), indent=2))
        raise
    if as_json:
        found = check_report.findings(spec, plan)
        if run is not None:
            found["run"] = run.to_json()
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(_describe(spec))
    click.echo(_describe_sites(plan))
    if run is not None:
        click.echo(check_report.describe_run(run))


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option(
    "--write",
    is_flag=True,
    help="Add the proposed roles to the notebook as Jupyter tags (atomically; outputs, "
    "metadata, code and other tags stay byte-for-byte as they were), then run `nb2prod check`.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON on stdout.")
@click.option("--role-map", "role_map_text", metavar="BLOCK=ROLE,...", help=ROLE_MAP_HELP)
def tag(notebook: Path, write: bool, as_json: bool, role_map_text: str | None) -> None:
    """Propose a role for every code cell of NOTEBOOK, and say why.

    \b
    From the code alone:
      reads a file or loads a dataset        -> load
      literal settings near the top          -> parameters
      changes the data the model reads       -> preprocess
      fits the model the predictions use     -> train
      .predict( on held-out rows             -> predict
      metrics and scores                     -> evaluate
      only shows things (head, plots, info)  -> skip
    Cells that only import or define functions and constants are left
    untagged: nb2prod runs them when a tagged cell uses them. Cells already
    tagged (nb2prod's roles, or Kubeflow Kale's) keep their role.

    Without --write nothing is changed. With --write the tags are added and
    `nb2prod check` runs on the result (its exit code is tag's).
    """
    report = pipeline.tag(notebook, role_map(role_map_text))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(check_report.tag_table(report))
    if not write:
        return
    changes = pipeline.write_tags(report)
    for change in changes:
        added = ", ".join(t for t in change.after if t not in change.before)
        say(f"tagged cell {change.cell}: {added}")
    say(f"wrote {len(changes)} tags to {notebook}" if changes else f"{notebook}: no tag to add")
    if report.predict_missing is not None:
        return  # check would only repeat that the predict cell is missing
    spec, plan = pipeline.check_plan(notebook, role_map=role_map(role_map_text))
    say(_describe(spec))
    say(_describe_sites(plan))


@cli.command()
@context_options
def generate(
    notebook: Path,
    output: Path | None,
    params: tuple[str, ...],
    force: bool,
    template: Path | None,
    strict: bool,
    role_map_text: str | None,
    sensitive_values: tuple[str, ...],
) -> None:
    """Write the build context for NOTEBOOK (train.py, serving code, Dockerfile) only.

    Nothing is trained. Run `python DIR/train.py` yourself, or use `nb2prod build`.
    """
    context = pipeline.generate(
        notebook,
        output,
        parameters(params),
        force,
        template,
        strict,
        role_map(role_map_text),
        sensitive(sensitive_values),
    )
    click.echo(f"wrote {context.path}")


@cli.command(epilog=EXIT_CODE_HELP)
@context_options
@click.option("--no-docker", is_flag=True, help="Stop after training and the parity check.")
@click.option(
    "--train-on-host",
    is_flag=True,
    help="Train with this Python instead of in a container from the image's pins (faster).",
)
@click.option(
    "--base-image",
    metavar="IMAGE",
    help="Base image for the image and the training container. Default: python:X.Y-slim "
    "matching the Python that runs nb2prod.",
)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Extra image tag. Repeatable.")
@click.option(
    "--train-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop training that runs longer than this (exit 5). Default: no limit.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only errors and the final summary.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a machine-readable summary here (image, model version, metrics, smoke, timings).",
)
@click.option(
    "--batch-dependent",
    is_flag=True,
    help="A row's answer may depend on the other rows of its request (a rank within "
    "the request, say): build it instead of refusing it (exit 6), and serve each request "
    "on its own rows, never batched with others.",
)
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the smoke checks as JUnit XML here, for CI dashboards.",
)
@mlflow_options(f" Logged once DIR is written: {LOGGED_HELP}")
@click.option(
    "--no-mlflow", is_flag=True, help="Log nothing to MLflow, even with MLFLOW_TRACKING_URI set."
)
def build(
    notebook: Path,
    output: Path | None,
    params: tuple[str, ...],
    force: bool,
    template: Path | None,
    strict: bool,
    role_map_text: str | None,
    sensitive_values: tuple[str, ...],
    no_docker: bool,
    train_on_host: bool,
    base_image: str | None,
    tags: tuple[str, ...],
    train_timeout: float | None,
    quiet: bool,
    json_path: Path | None,
    junit_path: Path | None,
    batch_dependent: bool,
    mlflow_uri: str | None,
    mlflow_experiment: str | None,
    no_mlflow: bool,
) -> None:
    """Build NOTEBOOK into DIR (default build/<stem>) and a tested image.

    \b
    Steps:
      1. generate the build context (as `nb2prod generate`)
      2. train: run train.py in a fresh process, in a container built
         from the image's pinned requirements (--train-on-host: here)
      3. parity: the generated service must reproduce the notebook's own
         predictions for sample training rows (the skew guard)
      4. build the image <stem>:<model-version> (plus --tag)
      5. smoke-test the container: readiness on $PORT, golden parity over
         HTTP, typed 422, /metrics, /healthz, graceful SIGTERM
    With --no-docker, steps 4-5 are skipped (and training runs here).
    With --mlflow URI (or MLFLOW_TRACKING_URI set), a last step logs the
    build to MLflow once DIR is written, and registers the model version
    under the notebook's name (see --mlflow). When the server is down or
    refuses, build exits 20, DIR stays complete: retry with `nb2prod track`.
    DIR appears (or replaces the previous build) only when every step
    passed: a failed step leaves the last good build as it was, and
    nb2prod never deletes a file it did not write there.
    """
    options = BuildOptions(
        notebook=notebook,
        output=output,
        parameters=parameters(params),
        force=force,
        template=template,
        strict=strict,
        batch_dependent=batch_dependent,
        role_map=role_map(role_map_text),
        sensitive=sensitive(sensitive_values),
        docker=not no_docker,
        train_on_host=train_on_host,
        base_image=base_image,
        tags=tags,
        quiet=quiet,
        json_path=json_path,
        junit_path=junit_path,
        train_timeout=train_timeout,
        mlflow_uri=tracking_uri(mlflow_uri, mlflow_experiment, off=no_mlflow),
        mlflow_experiment=mlflow_experiment,
    )
    result = pipeline.build(options, progress=None if quiet else say)
    card = result.artifact.card
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in card.metrics.items())
    image = f"; image {result.image.tags[0]}" if result.image else ""
    click.echo(
        f"built {result.context.path} (model {card.model_version}"
        + (f"; {metrics}" if metrics else "")
        + image
        + ")"
    )


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def serve(directory: Path, host: str, port: int) -> None:
    """Serve a built DIRECTORY with uvicorn, without Docker.

    Endpoints: POST /predict, GET /healthz, /readyz, /metadata, /metrics, /docs.
    """
    if not BuildDir(directory).card_path.is_file():
        raise ConfigError(
            f"{directory} has no trained model (no model/model_card.json)",
            hint="Build it first: nb2prod build NOTEBOOK --no-docker -o DIR.",
        )
    BuildDir(directory).card()  # an old or hand-edited card: one clear error, before uvicorn
    import uvicorn

    say(f"serving {directory} on http://{host}:{port} (docs at /docs)")
    sys.path.insert(0, str(directory.resolve()))
    uvicorn.run(
        "serving:app",
        host=host,
        port=port,
        app_dir=str(directory.resolve()),
        access_log=False,
        log_config=None,
    )


def _describe(spec: NotebookSpec) -> str:
    lines = [f"{spec.path.name}: ok"]
    for cell in spec.cells:
        if cell.role is None and not cell.source.strip():
            continue
        origin = {"kale": " (kale)", "definition": " (auto)"}.get(cell.origin or "", "")
        role = (cell.role or "(untagged)") + origin
        lines.append(f"  cell {cell.number:>3}  {role:<18} {cell.first_line}")
    if spec.kale_blocks:
        lines.append("Kubeflow Kale blocks, as nb2prod reads them:")
        lines.extend(
            f"  {b.name:<20} -> {b.role:<11} cells {', '.join(map(str, b.cells))} ({b.how})"
            for b in spec.kale_blocks
        )
    lines.append(f"preprocess: {spec.preprocess_style} style; predict: {spec.predict_style} style")
    state = ", ".join(spec.serving_reads) or "(none)"
    lines.append(f"serving reads from training: {state}")
    if spec.parameters:
        params = ", ".join(f"{k}={v!r}" for k, v in spec.parameters.items())
        lines.append(f"parameters: {params}")
    if spec.pip_hints:
        lines.append(f"pip hints: {', '.join(spec.pip_hints)}")
    lines.extend(f"notice: {notice}" for notice in spec.notices)
    return "\n".join(lines)


def _describe_sites(plan: ServingPlan) -> str:
    """What training records and serving replays, one line per site."""
    if not plan.sites:
        return "recorded at training, replayed at serving: nothing (no fit or row statistic)"
    lines = [f"recorded at training, replayed at serving ({len(plan.sites)}):"]
    lines.extend(f"  {site.describe()}  [{site.kind}]" for site in plan.sites)
    return "\n".join(lines)
