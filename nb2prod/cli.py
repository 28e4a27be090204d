"""The command line: click only. Flags become an options record and one call.

``main()`` is the single place where an Nb2ProdError becomes ``Error: ...`` on
stderr and the class's exit code; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__, pipeline
from .build.notebook import parse_parameter
from .builddir import BuildDir
from .errors import (
    EXIT_CODES,
    INTERRUPTED_EXIT_CODE,
    ConfigError,
    DriftDetected,
    Nb2ProdError,
    Terminated,
)
from .models import (
    BuildOptions,
    CloudRunDeployment,
    CloudRunOptions,
    KubernetesOptions,
    NotebookSpec,
    TrafficOptions,
)

_STATE = {"debug": False}

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>3}  {what}" for what, code in sorted(EXIT_CODES.items(), key=lambda kv: kv[1])
)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _parameters(values: tuple[str, ...]) -> dict[str, Any]:
    return dict(parse_parameter(value) for value in values)


PARAM_HELP = "Override a notebook parameter: -p name=value (a Python literal). Repeatable."


F = TypeVar("F", bound=Callable[..., Any])


def context_options(command: F) -> F:
    """NOTEBOOK, -o, -p, --force and --template: what generate and build share."""
    decorators = [
        click.argument("notebook", type=click.Path(path_type=Path)),
        click.option(
            "-o", "--output", type=click.Path(path_type=Path), help="Default: build/<stem>."
        ),
        click.option(
            "-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP
        ),
        click.option(
            "--force", is_flag=True, help="Replace -o DIR even if nb2prod did not write it."
        ),
        click.option(
            "--template",
            type=click.Path(path_type=Path, file_okay=False, exists=True),
            help="A cookiecutter template dir to use instead of nb2prod's own layout.",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


@click.group(epilog=EXIT_CODE_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nb2prod")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Take a tagged Jupyter notebook to a tested production service.

    \b
    Tag cells (Jupyter cell tags, or a first line `# nb2prod: <role>`):
      parameters  literal assignments, overridable with -p
      load        training-only data loading
      preprocess  raw rows -> features; runs in training AND serving
      train       fits the model (required)
      evaluate    every scalar number it binds is a recorded metric
      predict     features -> predictions; runs in serving (required)
      skip        never run; untagged cells are not run either

    \b
    Typical use:
      nb2prod check nb.ipynb                 # fast contract lint (CI)
      nb2prod build nb.ipynb --no-docker     # generate, train, verify parity
      nb2prod serve build/nb                 # serve it on 127.0.0.1:8080
    """
    _STATE["debug"] = debug


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP)
def check(notebook: Path, params: tuple[str, ...]) -> None:
    """Validate NOTEBOOK against the contract; print cell roles and the serving state.

    Writes nothing. Exits 0 when `nb2prod build` would accept the notebook,
    with exit code 3 (and the cell, line and fix) when it would not.
    """
    spec = pipeline.check(notebook, _parameters(params))
    click.echo(_describe(spec))


@cli.command()
@context_options
def generate(
    notebook: Path, output: Path | None, params: tuple[str, ...], force: bool, template: Path | None
) -> None:
    """Write the build context for NOTEBOOK (train.py, serving code, Dockerfile) only.

    Nothing is trained. Run `python DIR/train.py` yourself, or use `nb2prod build`.
    """
    context = pipeline.generate(notebook, output, _parameters(params), force, template)
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
        parameters=_parameters(params),
        force=force,
        template=template,
        docker=not no_docker,
        train_on_host=train_on_host,
        base_image=base_image,
        tags=tags,
        quiet=quiet,
        json_path=json_path,
        junit_path=junit_path,
        train_timeout=train_timeout,
    )
    result = pipeline.build(options, progress=None if quiet else _say)
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

    _say(f"serving {directory} on http://{host}:{port} (docs at /docs)")
    sys.path.insert(0, str(directory.resolve()))
    uvicorn.run(
        "serving:app",
        host=host,
        port=port,
        app_dir=str(directory.resolve()),
        access_log=False,
        log_config=None,
    )


BUILD_DIR = click.Path(path_type=Path, file_okay=False, exists=True)


#: Each deploy target's options record: the one place its defaults are set.
DEPLOY_TARGETS: dict[str, type[CloudRunOptions] | type[KubernetesOptions]] = {
    "cloudrun": CloudRunOptions,
    "kubernetes": KubernetesOptions,
}
_TARGET_TITLES = {"cloudrun": "Cloud Run", "kubernetes": "Kubernetes"}
#: Record defaults not worth showing in --help: "not set" and flags that are off.
_NO_DEFAULT = (None, False, dataclasses.MISSING)


def _record_default(target: str, field_name: str) -> Any:
    """A field's default in ``target``'s options record (None when it has none to show)."""
    for record_field in dataclasses.fields(DEPLOY_TARGETS[target]):
        if record_field.name == field_name:
            return record_field.default
    raise AssertionError(f"{DEPLOY_TARGETS[target].__name__} has no field {field_name}")


class TargetOption(click.Option):
    """A deploy option that belongs to some targets: ``fields`` maps each to its record field.

    The option itself has no default; its help shows each target's default, read from
    the options records, so the records stay the only place defaults are set.
    """

    def __init__(self, *args: Any, fields: dict[str, str], **kwargs: Any) -> None:
        self.fields = fields
        defaults = {
            target: _record_default(target, name)
            for target, name in fields.items()
            # "is", not "in": 0 is a default worth showing, and 0 == False.
            if not any(_record_default(target, name) is v for v in _NO_DEFAULT)
        }
        if len(defaults) == 1 and len(fields) == 1:
            kwargs["help"] += f" Default: {next(iter(defaults.values()))}."
        elif defaults:
            shown = ", ".join(f"{value} ({target})" for target, value in defaults.items())
            kwargs["help"] += f" Default: {shown}."
        super().__init__(*args, **kwargs)


class DeployCommand(click.Command):
    """Lists deploy's options in sections: both targets, Cloud Run only, Kubernetes only."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options (both targets)": []}
        for target, title in _TARGET_TITLES.items():
            sections[f"{title} only (--target {target})"] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or not isinstance(param, click.Option):
                continue
            fields = param.fields if isinstance(param, TargetOption) else DEPLOY_TARGETS
            if len(fields) == 1:
                target = next(iter(fields))
                sections[f"{_TARGET_TITLES[target]} only (--target {target})"].append(record)
            else:
                sections["Options (both targets)"].append(record)
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)


def _given(ctx: click.Context, target: str) -> dict[str, Any]:
    """The deploy flags the user gave, as fields of ``target``'s options record.

    Flags left out are not passed on, so each target keeps its record's defaults. A flag
    of the other target is a usage error (exit 2), never silently ignored.
    """
    given: dict[str, Any] = {}
    foreign = []
    for param in ctx.command.params:
        if not isinstance(param, TargetOption) or param.name is None:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is None or source == click.core.ParameterSource.DEFAULT:
            continue
        if target in param.fields:
            given[param.fields[target]] = ctx.params[param.name]
        else:
            only = " or ".join(f"--target {name}" for name in param.fields)
            foreign.append(f"{param.opts[0]} applies to {only} only")
    if foreign:
        raise click.UsageError("; ".join(foreign), ctx)
    return given


def _env_pairs(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """``--env NAME=VALUE`` flags as a dict (a click callback)."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise ConfigError(f"--env {value!r} is not NAME=VALUE")
        pairs[name] = text
    return pairs


@cli.command()
@click.argument("directory", type=BUILD_DIR)
@click.option(
    "--registry",
    required=True,
    help="Where to push, e.g. REGION-docker.pkg.dev/PROJECT/REPO or 127.0.0.1:5000.",
)
def push(directory: Path, registry: str) -> None:
    """Push the image built in DIRECTORY and record its digest there.

    Uses your docker credentials (for Artifact Registry: `gcloud auth
    configure-docker REGION-docker.pkg.dev`). Deployments then use the image by
    digest, never by tag.
    """
    record = pipeline.push(directory, registry, progress=_say)
    click.echo(record.image)


def _cloudrun(field_name: str) -> dict[str, str]:
    return {"cloudrun": field_name}


def _kubernetes(field_name: str) -> dict[str, str]:
    return {"kubernetes": field_name}


def _both(cloudrun: str, kubernetes: str | None = None) -> dict[str, str]:
    return {"cloudrun": cloudrun, "kubernetes": kubernetes or cloudrun}


@cli.command(cls=DeployCommand)
@click.argument("directory", type=BUILD_DIR)
@click.option(
    "--target",
    type=click.Choice(list(DEPLOY_TARGETS)),
    default="cloudrun",
    show_default=True,
    help="Where to deploy. Each option below says which target it belongs to.",
)
@click.option("--registry", help="Push here first if the current image isn't pushed yet.")
@click.option(
    "--service",
    cls=TargetOption,
    fields=_both("service", "name"),
    help="Service name. Default: the notebook's name.",
)
@click.option("--cpu", cls=TargetOption, fields=_both("cpu"), help="CPU limit.")
@click.option("--memory", cls=TargetOption, fields=_both("memory"), help="Memory limit.")
@click.option(
    "--min-instances",
    type=int,
    cls=TargetOption,
    fields=_both("min_instances", "min_replicas"),
    help="Fewest instances (replicas).",
)
@click.option(
    "--max-instances",
    type=int,
    cls=TargetOption,
    fields=_both("max_instances", "max_replicas"),
    help="Most instances (replicas).",
)
@click.option(
    "--env",
    multiple=True,
    metavar="NAME=VALUE",
    callback=_env_pairs,
    cls=TargetOption,
    fields=_both("env"),
    help="Environment variable. Repeatable.",
)
@click.option(
    "--drift-webhook",
    cls=TargetOption,
    fields=_both("drift_webhook"),
    help="URL for drift events (NB2PROD_DRIFT_WEBHOOK).",
)
@click.option(
    "--project",
    cls=TargetOption,
    fields=_cloudrun("project"),
    help="GCP project. Default: GOOGLE_CLOUD_PROJECT, then gcloud config.",
)
@click.option(
    "--region",
    cls=TargetOption,
    fields=_cloudrun("region"),
    help="Cloud Run region. Default: CLOUDSDK_RUN_REGION, then gcloud config.",
)
@click.option(
    "--canary",
    type=click.IntRange(1, 99),
    metavar="PERCENT",
    cls=TargetOption,
    fields=_cloudrun("canary"),
    help="Send PERCENT of traffic to the new revision, tagged canary.",
)
@click.option(
    "--concurrency",
    type=int,
    cls=TargetOption,
    fields=_cloudrun("concurrency"),
    help="Requests per instance.",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=int,
    metavar="SECONDS",
    cls=TargetOption,
    fields=_cloudrun("timeout_seconds"),
    help="Request timeout.",
)
@click.option(
    "--service-account",
    cls=TargetOption,
    fields=_cloudrun("service_account"),
    help="Service account the revision runs as.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    cls=TargetOption,
    fields=_cloudrun("dry_run"),
    help="Print the request and write service.yaml only.",
)
@click.option(
    "--endpoint",
    hidden=True,
    cls=TargetOption,
    fields=_cloudrun("endpoint"),
    help="Cloud Run API endpoint (tests).",
)
@click.option("--namespace", cls=TargetOption, fields=_kubernetes("namespace"), help="Namespace.")
@click.option(
    "--apply",
    is_flag=True,
    cls=TargetOption,
    fields=_kubernetes("apply"),
    help="Apply to the current kubeconfig context.",
)
@click.option(
    "--kserve",
    is_flag=True,
    cls=TargetOption,
    fields=_kubernetes("kserve"),
    help="Also write a KServe InferenceService.",
)
@click.pass_context
def deploy(
    ctx: click.Context, directory: Path, target: str, registry: str | None, **_: Any
) -> None:
    """Deploy a built DIRECTORY to Cloud Run (default) or write Kubernetes manifests.

    \b
    Cloud Run: creates or updates the service through the Admin API v2 with
    Application Default Credentials, by image digest, and writes
    DIRECTORY/service.yaml (for `gcloud run services replace`).
    Kubernetes: writes DIRECTORY/k8s/ (Deployment, Service, HPA, PDB).
    An option of the other target is refused (exit 2).
    """
    given = _given(ctx, target)
    if target == "kubernetes":
        k8s = KubernetesOptions(build_dir=directory, **given)
        manifests = pipeline.deploy_kubernetes(k8s, registry, progress=_say)
        for note in manifests.notes:
            _say(f"note: {note}")
        click.echo(f"wrote {manifests.directory}")
        for applied in manifests.applied:
            click.echo(f"applied {applied}")
        return
    options = CloudRunOptions(build_dir=directory, **given)
    _print_deployment(pipeline.deploy_cloudrun(options, registry, progress=_say))


@cli.command()
@click.argument("directory", type=BUILD_DIR)
@click.option("--endpoint", hidden=True, help="Cloud Run API endpoint (tests).")
def promote(directory: Path, endpoint: str | None) -> None:
    """Send all traffic to the canary revision of DIRECTORY's Cloud Run service."""
    _print_deployment(pipeline.promote(TrafficOptions(build_dir=directory, endpoint=endpoint)))


@cli.command()
@click.argument("directory", type=BUILD_DIR)
@click.option("--endpoint", hidden=True, help="Cloud Run API endpoint (tests).")
def rollback(directory: Path, endpoint: str | None) -> None:
    """Restore the traffic split from before the last deploy of DIRECTORY."""
    _print_deployment(pipeline.rollback(TrafficOptions(build_dir=directory, endpoint=endpoint)))


@cli.command(epilog=EXIT_CODE_HELP)
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--min-share",
    type=click.FloatRange(0, 1),
    help="Drift only when at least this share of input columns drifts (default: any drift).",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per call.")
def monitor(url: str, as_json: bool, min_share: float | None, timeout: float) -> None:
    """Check a running service at URL for drift (for a scheduled CI job).

    Reads URL/monitoring/drift and URL/metadata and prints, per input column
    and for the predictions: test, PSI, statistic, p-value, threshold, verdict.
    Exits 0 when healthy, 12 when any column or the predictions drift (with
    --min-share X: when at least that share of columns drifts), 13 when the
    service cannot be read.
    """
    report = pipeline.monitor(url, timeout)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(report.table())
    if report.is_drifted(min_share):
        raise DriftDetected(report.summary())


def _print_deployment(deployment: CloudRunDeployment) -> None:
    if deployment.dry_run:
        click.echo(deployment.request)
    for note in deployment.notes:
        _say(f"note: {note}")
    split = ", ".join(
        f"{t.revision or 'latest'}={t.percent}%" + (f" (tag {t.tag})" if t.tag else "")
        for t in deployment.traffic
    )
    verb = "would deploy" if deployment.dry_run else "deployed"
    click.echo(
        f"{verb} {deployment.service} in {deployment.project}/{deployment.region}: "
        f"{deployment.image}; traffic {split}"
    )
    if deployment.url:
        click.echo(f"url: {deployment.url}")
    click.echo(f"wrote {deployment.service_yaml}")


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


def _raise_terminated(signum: int, frame: object) -> None:
    # A second SIGTERM must not cut the cleanup the first one started short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While nb2prod runs, SIGTERM raises Terminated (so every ``finally`` cleans up)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(err: BaseException) -> None:
    """Exit 130 after Ctrl-C, 143 after SIGTERM, with one line saying which."""
    if isinstance(err, Terminated):
        click.echo("Terminated.", err=True)
        sys.exit(Terminated.exit_code)
    click.echo("Interrupted.", err=True)
    sys.exit(INTERRUPTED_EXIT_CODE)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to exit codes."""
    with _sigterm_unwinds():
        _run(argv)


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="nb2prod", standalone_mode=False)
    except Nb2ProdError as err:
        if _STATE["debug"]:
            traceback.print_exc()
        click.echo(f"Error: {err.message}", err=True)
        if err.hint:
            click.echo(f"Hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort as err:
        # click turns Ctrl-C (and Terminated) inside a command into Abort.
        if isinstance(err.__cause__, KeyboardInterrupt):
            _interrupted(err.__cause__)
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt as err:
        _interrupted(err)
    except Exception as err:  # a bug in nb2prod: still one line unless --debug
        if _STATE["debug"]:
            raise
        click.echo(f"Error: unexpected {type(err).__name__}: {err}", err=True)
        click.echo("Hint: this is a bug in nb2prod; rerun with --debug and report it.", err=True)
        sys.exit(1)
    sys.exit(0)
