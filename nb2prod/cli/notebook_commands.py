"""Commands that start from a notebook: check, generate, build; and serve, for what build made."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import pipeline
from ..builddir import BuildDir
from ..errors import ConfigError
from ..models import BuildOptions, NotebookSpec
from ..runtime.plan import ServingPlan
from .group import (
    EXIT_CODE_HELP,
    PARAM_HELP,
    STRICT_HELP,
    cli,
    context_options,
    parameters,
    say,
)


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
def check(notebook: Path, params: tuple[str, ...], strict: bool) -> None:
    """Validate NOTEBOOK against the contract; print cell roles and the serving state.

    Writes nothing. Exits 0 when `nb2prod build` would accept the notebook,
    with exit code 3 (and the cell, line and fix) when it would not. Lists
    the fits and statistics over the input rows that training will record
    and serving will replay (cell, line, expression).
    """
    spec, plan = pipeline.check_plan(notebook, parameters(params), strict=strict)
    click.echo(_describe(spec))
    click.echo(_describe_sites(plan))


@cli.command()
@context_options
def generate(
    notebook: Path,
    output: Path | None,
    params: tuple[str, ...],
    force: bool,
    template: Path | None,
    strict: bool,
) -> None:
    """Write the build context for NOTEBOOK (train.py, serving code, Dockerfile) only.

    Nothing is trained. Run `python DIR/train.py` yourself, or use `nb2prod build`.
    """
    context = pipeline.generate(notebook, output, parameters(params), force, template, strict)
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
    "--junit",
    "junit_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the smoke checks as JUnit XML here, for CI dashboards.",
)
def build(
    notebook: Path,
    output: Path | None,
    params: tuple[str, ...],
    force: bool,
    template: Path | None,
    strict: bool,
    no_docker: bool,
    train_on_host: bool,
    base_image: str | None,
    tags: tuple[str, ...],
    train_timeout: float | None,
    quiet: bool,
    json_path: Path | None,
    junit_path: Path | None,
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
        docker=not no_docker,
        train_on_host=train_on_host,
        base_image=base_image,
        tags=tags,
        quiet=quiet,
        json_path=json_path,
        junit_path=junit_path,
        train_timeout=train_timeout,
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
        lines.append(f"  cell {cell.number:>3}  {cell.role or '(untagged)':<11} {cell.first_line}")
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
