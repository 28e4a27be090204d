"""Commands that ship a build directory: push, deploy, promote, rollback; and monitor it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .. import pipeline
from ..errors import DriftDetected
from ..models import CloudRunDeployment, CloudRunOptions, KubernetesOptions, TrafficOptions
from .deploy_options import (
    DEPLOY_TARGETS,
    DeployCommand,
    TargetOption,
    both,
    cloudrun_only,
    env_pairs,
    given_for,
    kubernetes_only,
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
    help="Where to deploy. Each option below says which target it belongs to.",
)
@click.option("--registry", help="Push here first if the current image isn't pushed yet.")
@click.option(
    "--service",
    cls=TargetOption,
    fields=both("service", "name"),
    help="Service name. Default: the notebook's name.",
)
@click.option("--cpu", cls=TargetOption, fields=both("cpu"), help="CPU limit.")
@click.option("--memory", cls=TargetOption, fields=both("memory"), help="Memory limit.")
@click.option(
    "--min-instances",
    type=int,
    cls=TargetOption,
    fields=both("min_instances", "min_replicas"),
    help="Fewest instances (replicas).",
)
@click.option(
    "--max-instances",
    type=int,
    cls=TargetOption,
    fields=both("max_instances", "max_replicas"),
    help="Most instances (replicas).",
)
@click.option(
    "--env",
    multiple=True,
    metavar="NAME=VALUE",
    callback=env_pairs,
    cls=TargetOption,
    fields=both("env"),
    help="Environment variable. Repeatable.",
)
@click.option(
    "--drift-webhook",
    cls=TargetOption,
    fields=both("drift_webhook"),
    help="URL for drift events (NB2PROD_DRIFT_WEBHOOK).",
)
@click.option(
    "--project",
    cls=TargetOption,
    fields=cloudrun_only("project"),
    help="GCP project. Default: GOOGLE_CLOUD_PROJECT, then gcloud config.",
)
@click.option(
    "--region",
    cls=TargetOption,
    fields=cloudrun_only("region"),
    help="Cloud Run region. Default: CLOUDSDK_RUN_REGION, then gcloud config.",
)
@click.option(
    "--canary",
    type=click.IntRange(1, 99),
    metavar="PERCENT",
    cls=TargetOption,
    fields=cloudrun_only("canary"),
    help="Send PERCENT of traffic to the new revision, tagged canary.",
)
@click.option(
    "--concurrency",
    type=int,
    cls=TargetOption,
    fields=cloudrun_only("concurrency"),
    help="Requests per instance.",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=int,
    metavar="SECONDS",
    cls=TargetOption,
    fields=cloudrun_only("timeout_seconds"),
    help="Request timeout.",
)
@click.option(
    "--service-account",
    cls=TargetOption,
    fields=cloudrun_only("service_account"),
    help="Service account the revision runs as.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    cls=TargetOption,
    fields=cloudrun_only("dry_run"),
    help="Print the request and write service.yaml only.",
)
@click.option(
    "--endpoint",
    hidden=True,
    cls=TargetOption,
    fields=cloudrun_only("endpoint"),
    help="Cloud Run API endpoint (tests).",
)
@click.option(
    "--namespace", cls=TargetOption, fields=kubernetes_only("namespace"), help="Namespace."
)
@click.option(
    "--apply",
    is_flag=True,
    cls=TargetOption,
    fields=kubernetes_only("apply"),
    help="Apply to the current kubeconfig context.",
)
@click.option(
    "--kserve",
    is_flag=True,
    cls=TargetOption,
    fields=kubernetes_only("kserve"),
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
    given = given_for(ctx, target)
    if target == "kubernetes":
        k8s = KubernetesOptions(build_dir=directory, **given)
        manifests = pipeline.deploy_kubernetes(k8s, registry, progress=say)
        for note in manifests.notes:
            say(f"note: {note}")
        click.echo(f"wrote {manifests.directory}")
        for applied in manifests.applied:
            click.echo(f"applied {applied}")
        return
    options = CloudRunOptions(build_dir=directory, **given)
    _print_deployment(pipeline.deploy_cloudrun(options, registry, progress=say))


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
        say(f"note: {note}")
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
