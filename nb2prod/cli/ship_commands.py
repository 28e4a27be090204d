"""Commands that ship a build directory: push, deploy, promote, rollback; and monitor it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .. import pipeline
from ..errors import CanaryWorse, DriftDetected, GateKeepWaiting
from ..models import (
    CloudRunDeployment,
    CloudRunJobDeployment,
    CloudRunJobOptions,
    GateOptions,
    KubernetesManifests,
    KubernetesOptions,
    TrafficOptions,
)
from .deploy_options import (
    DEPLOY_TARGETS,
    ENDPOINT_ENV,
    DeployCommand,
    deploy_options,
    note_endpoint,
    options_for,
)
from .group import BUILD_DIR, EXIT_CODE_HELP, cli, say


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
    record = pipeline.push(directory, registry, progress=say)
    click.echo(record.image)


@cli.command(cls=DeployCommand)
@click.argument("directory", type=BUILD_DIR)
@click.option(
    "--target",
    type=click.Choice(list(DEPLOY_TARGETS)),
    default="cloudrun",
    show_default=True,
    help="Where to deploy. Each section below says which targets its options belong to.",
)
@click.option("--registry", help="Push here first if the current image isn't pushed yet.")
@deploy_options
@click.pass_context
def deploy(
    ctx: click.Context, directory: Path, target: str, registry: str | None, **_: Any
) -> None:
    """Deploy a built DIRECTORY to Cloud Run (default), as a Cloud Run Job, or to Kubernetes.

    \b
    Cloud Run: creates or updates the service through the Admin API v2 with
    Application Default Credentials, by image digest, and writes
    DIRECTORY/service.yaml (for `gcloud run services replace`).
    Cloud Run Job: scores --input gs://... into --output gs://... with
    --tasks tasks (buckets mounted as volumes); creates or updates the job,
    runs it and waits, and writes DIRECTORY/job.yaml (`gcloud run jobs replace`).
    Kubernetes: writes DIRECTORY/k8s/ (Deployment, Service, HPA, PDB; with
    --input, job.yaml: an Indexed Job that scores files).
    An option of another target is refused (exit 2).
    """
    options = options_for(ctx, target, directory)
    if isinstance(options, KubernetesOptions):
        _print_manifests(options, pipeline.deploy_kubernetes(options, registry, progress=say))
    elif isinstance(options, CloudRunJobOptions):
        _print_job(pipeline.deploy_cloudrun_job(options, registry, progress=say))
    else:
        _print_deployment(pipeline.deploy_cloudrun(options, registry, progress=say))


@cli.command(epilog=EXIT_CODE_HELP)
@click.argument("directory", type=BUILD_DIR)
@click.option(
    "--gate",
    is_flag=True,
    help="Promote only if the canary's live quality is not worse than stable's (see above).",
)
@click.option(
    "--predictions",
    metavar="PATH",
    help="--gate: the prediction log (file, folder, Cloud Logging export, gs://..., bq://...).",
)
@click.option("--labels", metavar="PATH", help="--gate: ground truth with the key and 'label'.")
@click.option(
    "--key",
    default="request_id",
    show_default=True,
    help="--gate: the column joining labels to predictions (request_id or an input column).",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="--gate: the one-sided test's significance level.",
)
@click.option(
    "--min-effect",
    type=click.FloatRange(min=0, min_open=True),
    help="--gate: the smallest worsening worth detecting, in the metric's units (default: 0.02 "
    "accuracy; 10% of stable's error for mae/rmse). Sets the rows needed per side.",
)
@click.option(
    "--metric",
    type=click.Choice(["accuracy", "mae", "rmse"]),
    help="--gate: default accuracy for a label output, mae for a number.",
)
@click.option("--dry-run", is_flag=True, help="--gate: print the decision, move no traffic.")
@click.option("--json", "as_json", is_flag=True, help="--gate: print the evidence as JSON.")
@click.option(
    "--endpoint", hidden=True, envvar=ENDPOINT_ENV, help="Cloud Run API endpoint (tests)."
)
def promote(directory: Path, gate: bool, endpoint: str | None, **gate_flags: Any) -> None:
    """Send all traffic to the canary revision of DIRECTORY's Cloud Run service.

    \b
    With --gate, decide on logged traffic first. The canary and stable
    revisions come from DIRECTORY/.nb2prod/deploy.json (the last
    `nb2prod deploy --canary`); logged rows are split by the `revision` that
    served them (K_REVISION; a log without revisions is split by
    model_version: DIRECTORY's is the canary, any other is stable). Joined
    with --labels, each side's accuracy (two-proportion test: one-sided
    z-test on the pooled proportion, Fisher's exact test for small counts)
    or mae/rmse (seeded bootstrap of the difference) is compared:
      canary significantly worse (p < alpha)   roll back      exit 19
      not worse, enough rows on each side      promote        exit 0
      otherwise                                keep waiting   exit 18
    Enough rows: a power calculation (power 0.8) for --min-effect at
    --alpha. Waiting prints how many more labelled rows each side needs and
    leaves traffic as it is; --dry-run never moves traffic.
    """
    options = TrafficOptions(build_dir=directory, endpoint=endpoint)
    context = click.get_current_context()
    note_endpoint(context)
    if not gate:
        # Typed, not compared with the defaults: `--alpha 0.05` without --gate is refused too.
        given = [
            f"--{'json' if name == 'as_json' else name.replace('_', '-')}"
            for name in gate_flags
            if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --gate only"
            )
        _print_deployment(pipeline.promote(options))
        return
    _promote_gated(directory, endpoint, **gate_flags)


def _promote_gated(
    directory: Path,
    endpoint: str | None,
    predictions: str | None,
    labels: str | None,
    as_json: bool,
    **test: Any,
) -> None:
    """``promote --gate``: the verdict, its evidence, the traffic moved and the exit code."""
    if not predictions or not labels:
        raise click.UsageError("--gate needs --predictions PATH and --labels PATH")
    options = GateOptions(
        build_dir=directory, predictions=predictions, labels=labels, endpoint=endpoint, **test
    )
    report, moved = pipeline.promote_gate(options)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.table())
    if moved is not None:
        _print_deployment(moved, err=as_json)  # with --json, stdout holds the JSON alone
    elif report.decision != "wait":
        say(f"dry run: would {report.decision}; traffic unchanged")
    if report.decision == "wait":
        raise GateKeepWaiting(report.summary)
    if report.decision == "rollback" and moved is None:
        raise CanaryWorse(
            report.summary + "; would roll back",
            hint="Run it without --dry-run to send all traffic back to the stable revision.",
        )
    if report.decision == "rollback":
        raise CanaryWorse(report.summary + "; rolled back")


@cli.command()
@click.argument("directory", type=BUILD_DIR)
@click.option(
    "--endpoint", hidden=True, envvar=ENDPOINT_ENV, help="Cloud Run API endpoint (tests)."
)
def rollback(directory: Path, endpoint: str | None) -> None:
    """Restore the traffic split from before the last deploy of DIRECTORY."""
    note_endpoint(click.get_current_context())
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


def _print_deployment(deployment: CloudRunDeployment, err: bool = False) -> None:
    if deployment.dry_run:
        click.echo(deployment.request, err=err)
    for note in deployment.notes:
        say(f"note: {note}")
    split = ", ".join(
        f"{t.revision or 'latest'}={t.percent}%" + (f" (tag {t.tag})" if t.tag else "")
        for t in deployment.traffic
    )
    verb = "would deploy" if deployment.dry_run else "deployed"
    click.echo(
        f"{verb} {deployment.service} in {deployment.project}/{deployment.region}: "
        f"{deployment.image}; traffic {split}",
        err=err,
    )
    if deployment.url:
        click.echo(f"url: {deployment.url}", err=err)
    click.echo(f"wrote {deployment.service_yaml}", err=err)
    if deployment.pubsub_commands:
        click.echo("To push the topic's messages to POST /pubsub, run:", err=err)
        for command in deployment.pubsub_commands:
            click.echo(f"  {command}", err=err)


def _print_job(deployment: CloudRunJobDeployment) -> None:
    if deployment.dry_run:
        click.echo(deployment.request)
    for note in deployment.notes:
        say(f"note: {note}")
    verb = "would deploy" if deployment.dry_run else "deployed"
    click.echo(
        f"{verb} job {deployment.job} in {deployment.project}/{deployment.region}: "
        f"{deployment.image}; {deployment.tasks} task(s)"
    )
    if deployment.execution:
        name = deployment.execution.rsplit("/", 1)[-1]
        click.echo(f"execution {name}: {deployment.succeeded}/{deployment.tasks} tasks succeeded")
        click.echo(f"outputs: {deployment.outputs}")
    elif not deployment.dry_run:
        click.echo(
            f"run it: gcloud run jobs execute {deployment.job} --region {deployment.region} --wait"
        )
    if deployment.log_uri:
        click.echo(f"logs: {deployment.log_uri}")
    click.echo(f"wrote {deployment.job_yaml}")


def _print_manifests(options: KubernetesOptions, manifests: KubernetesManifests) -> None:
    for note in manifests.notes:
        say(f"note: {note}")
    click.echo(f"wrote {manifests.directory}")
    if options.batch is not None:
        job = manifests.directory / "job.yaml"
        click.echo(
            f"batch job: {job} ({options.batch.tasks} indexed pod(s)); kubectl apply -f {job}"
        )
    for applied in manifests.applied:
        click.echo(f"applied {applied}")
