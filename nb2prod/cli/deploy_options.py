"""Deploy options that belong to a target: an option of another target is a usage error.

Each target's options record (``models.CloudRunOptions``, ``models.CloudRunJobOptions``,
``models.KubernetesOptions``, and ``models.BatchJobSpec`` for a batch job's flags) is the
one place its defaults are set; the options here only say which field of which record
they fill, and ``deploy --help`` shows each target's default from the records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import ConfigError
from ..models import BatchJobSpec, CloudRunJobOptions, CloudRunOptions, KubernetesOptions

DeployOptions = CloudRunOptions | CloudRunJobOptions | KubernetesOptions
#: Each deploy target's options record: the one place its defaults are set.
DEPLOY_TARGETS: dict[str, type[DeployOptions]] = {
    "cloudrun": CloudRunOptions,
    "cloudrun-job": CloudRunJobOptions,
    "kubernetes": KubernetesOptions,
}
#: Fields named "batch.X" fill the target's ``batch`` record (a BatchJobSpec).
BATCH = "batch."
#: deploy --help's sections, by the targets an option belongs to.
SECTIONS = {
    frozenset(DEPLOY_TARGETS): "Options (every target)",
    frozenset({"cloudrun", "kubernetes"}): "Services (--target cloudrun or kubernetes)",
    frozenset({"cloudrun", "cloudrun-job"}): "Google Cloud (--target cloudrun or cloudrun-job)",
    frozenset({"cloudrun-job", "kubernetes"}): (
        "Batch scoring jobs (--target cloudrun-job, or kubernetes with --input)"
    ),
    frozenset({"cloudrun"}): "Cloud Run only (--target cloudrun)",
    frozenset({"cloudrun-job"}): "Cloud Run Job only (--target cloudrun-job)",
    frozenset({"kubernetes"}): "Kubernetes only (--target kubernetes)",
}
#: Record defaults not worth showing in --help: "not set" and flags that are off.
_NO_DEFAULT = (None, False, (), dataclasses.MISSING)

F = TypeVar("F", bound=Callable[..., Any])


def _record_default(target: str, field_name: str) -> Any:
    """A field's default in ``target``'s options record (or its batch spec)."""
    record: type[Any] = DEPLOY_TARGETS[target]
    if field_name.startswith(BATCH):
        record, field_name = BatchJobSpec, field_name[len(BATCH) :]
    for record_field in dataclasses.fields(record):
        if record_field.name == field_name:
            return record_field.default
    raise AssertionError(f"{record.__name__} has no field {field_name}")


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
        if kwargs.get("is_flag"):
            pass  # a flag says what it does; "Default: True" would only confuse
        elif len(defaults) == len(fields) and len({repr(v) for v in defaults.values()}) == 1:
            kwargs["help"] += f" Default: {next(iter(defaults.values()))}."
        elif defaults:
            shown = ", ".join(f"{value} ({target})" for target, value in defaults.items())
            kwargs["help"] += f" Default: {shown}."
        super().__init__(*args, **kwargs)


class DeployCommand(click.Command):
    """Lists deploy's options in sections by the targets they belong to (SECTIONS)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {title: [] for title in SECTIONS.values()}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or not isinstance(param, click.Option):
                continue
            fields = param.fields if isinstance(param, TargetOption) else DEPLOY_TARGETS
            sections[SECTIONS[frozenset(fields)]].append(record)
        for title, records in sections.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def options_for(ctx: click.Context, target: str, directory: Path) -> DeployOptions:
    """``target``'s options record from the flags the user gave (batch flags in ``batch``).

    Flags left out are not passed on, so each target keeps its record's defaults. A flag
    of another target is a usage error (exit 2), never silently ignored.
    """
    given = given_for(ctx, target)
    batch = {name[len(BATCH) :]: given.pop(name) for name in list(given) if name.startswith(BATCH)}
    if batch:
        missing = [f"--{name}" for name in ("input", "output") if name not in batch]
        if missing:
            raise ConfigError(
                f"a batch job needs {' and '.join(missing)}",
                hint="e.g. --input gs://BUCKET/in/ --output gs://BUCKET/out/scored.csv",
            )
        given["batch"] = BatchJobSpec(**batch)
    return DEPLOY_TARGETS[target](build_dir=directory, **given)


def given_for(ctx: click.Context, target: str) -> dict[str, Any]:
    """The deploy flags the user gave, as fields of ``target``'s options record."""
    given: dict[str, Any] = {}
    foreign = []
    for param in ctx.command.params:
        if not isinstance(param, TargetOption) or param.name is None:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is None or source == click.core.ParameterSource.DEFAULT:
            continue
        # An environment variable is a setting of the shell, not a flag typed for this target.
        if source == click.core.ParameterSource.ENVIRONMENT and target not in param.fields:
            continue
        if param.name == "endpoint":
            note_endpoint(ctx)
        if target in param.fields:
            given[param.fields[target]] = ctx.params[param.name]
        else:
            only = " or ".join(f"--target {name}" for name in param.fields)
            foreign.append(f"{param.opts[0]} applies to {only} only")
    if foreign:
        raise click.UsageError("; ".join(foreign), ctx)
    return given


def note_endpoint(ctx: click.Context) -> None:
    """Say so when the Cloud Run API endpoint comes from NB2PROD_CLOUD_RUN_ENDPOINT: a variable
    left set in a shell would otherwise send real deploys somewhere else without a word."""
    if ctx.get_parameter_source("endpoint") is click.core.ParameterSource.ENVIRONMENT:
        click.echo(f"note: Cloud Run API at {ctx.params['endpoint']} ({ENDPOINT_ENV})", err=True)


def env_pairs(
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


def _option(*names: str, fields: dict[str, str], **kwargs: Any) -> Callable[[F], F]:
    return click.option(*names, cls=TargetOption, fields=fields, **kwargs)


def _each(*targets: str, field: str) -> dict[str, str]:
    return dict.fromkeys(targets, field)


#: The hidden --endpoint's environment variable: a CI workflow runs unchanged against a local
#: fake of the Cloud Run API (its tests) when this points at the fake.
ENDPOINT_ENV = "NB2PROD_CLOUD_RUN_ENDPOINT"
EVERY = tuple(DEPLOY_TARGETS)
SERVICES = ("cloudrun", "kubernetes")
GOOGLE = ("cloudrun", "cloudrun-job")
JOBS = ("cloudrun-job", "kubernetes")

#: deploy's options, in the order --help lists them within each section.
DEPLOY_OPTIONS = (
    _option("--cpu", fields=_each(*EVERY, field="cpu"), help="CPU limit."),
    _option("--memory", fields=_each(*EVERY, field="memory"), help="Memory limit."),
    _option(
        "--env",
        multiple=True,
        metavar="NAME=VALUE",
        callback=env_pairs,
        fields=_each(*EVERY, field="env"),
        help="Environment variable. Repeatable.",
    ),
    _option(
        "--service",
        fields={"cloudrun": "service", "kubernetes": "name"},
        help="Service name. Default: the notebook's name.",
    ),
    _option(
        "--min-instances",
        type=int,
        fields={"cloudrun": "min_instances", "kubernetes": "min_replicas"},
        help="Fewest instances (replicas).",
    ),
    _option(
        "--max-instances",
        type=int,
        fields={"cloudrun": "max_instances", "kubernetes": "max_replicas"},
        help="Most instances (replicas).",
    ),
    _option(
        "--drift-webhook",
        fields=_each(*SERVICES, field="drift_webhook"),
        help="URL for drift events (NB2PROD_DRIFT_WEBHOOK).",
    ),
    _option(
        "--project",
        fields=_each(*GOOGLE, field="project"),
        help="GCP project. Default: GOOGLE_CLOUD_PROJECT, then gcloud config.",
    ),
    _option(
        "--region",
        fields=_each(*GOOGLE, field="region"),
        help="Cloud Run region. Default: CLOUDSDK_RUN_REGION, then gcloud config.",
    ),
    _option(
        "--service-account",
        fields=_each(*GOOGLE, field="service_account"),
        help="Service account the revision (or the job's tasks) runs as.",
    ),
    _option(
        "--dry-run",
        is_flag=True,
        fields=_each(*GOOGLE, field="dry_run"),
        help="Print the request(s) and write service.yaml (job.yaml) only.",
    ),
    _option(
        "--endpoint",
        hidden=True,
        envvar=ENDPOINT_ENV,
        fields=_each(*GOOGLE, field="endpoint"),
        help="Cloud Run API endpoint (tests).",
    ),
    _option(
        "--input",
        metavar="URL",
        fields=_each(*JOBS, field="batch.input"),
        help="Files to score: gs://BUCKET/PATH (a file, folder or glob); on Kubernetes also "
        "a path on --claim.",
    ),
    _option(
        "--output",
        metavar="URL",
        fields=_each(*JOBS, field="batch.output"),
        help="Output file, e.g. gs://BUCKET/out/scored.csv; task i of N writes "
        "scored-0000i-of-0000N.csv.",
    ),
    _option(
        "--tasks",
        type=int,
        fields=_each(*JOBS, field="batch.tasks"),
        help="Tasks (pods), each scoring every N-th input file.",
    ),
    _option(
        "--parallelism",
        type=int,
        fields=_each(*JOBS, field="batch.parallelism"),
        help="Tasks running at once (0: as many as allowed).",
    ),
    _option(
        "--max-retries",
        type=int,
        fields=_each(*JOBS, field="batch.max_retries"),
        help="Retries of a failed task.",
    ),
    _option(
        "--task-timeout",
        type=int,
        metavar="SECONDS",
        fields=_each(*JOBS, field="batch.task_timeout_seconds"),
        help="Time one task may take.",
    ),
    _option(
        "--format",
        type=click.Choice(["csv", "parquet", "jsonl"]),
        fields=_each(*JOBS, field="batch.input_format"),
        help="Input format. Default: from each file's extension.",
    ),
    _option(
        "--keep",
        multiple=True,
        metavar="COL",
        fields=_each(*JOBS, field="batch.keep"),
        help="Input column to copy beside the predictions (ids). Repeatable.",
    ),
    _option(
        "--chunk-rows",
        type=int,
        metavar="N",
        fields=_each(*JOBS, field="batch.chunk_rows"),
        help="Rows read and scored at a time. Default: nb2prod batch's.",
    ),
    _option(
        "--rejects",
        metavar="URL",
        fields=_each(*JOBS, field="batch.rejects"),
        help="Rejected rows file. Default: OUTPUT_STEM.rejects.csv per task.",
    ),
    _option(
        "--canary",
        type=click.IntRange(1, 99),
        metavar="PERCENT",
        fields={"cloudrun": "canary"},
        help="Send PERCENT of traffic to the new revision, tagged canary.",
    ),
    _option(
        "--concurrency", type=int, fields={"cloudrun": "concurrency"}, help="Requests per instance."
    ),
    _option(
        "--timeout",
        "timeout_seconds",
        type=int,
        metavar="SECONDS",
        fields={"cloudrun": "timeout_seconds"},
        help="Request timeout.",
    ),
    _option(
        "--pubsub-topic",
        metavar="TOPIC",
        fields={"cloudrun": "pubsub_topic"},
        help="Print the gcloud commands that push this topic's messages to POST /pubsub.",
    ),
    _option(
        "--pubsub-dead-letter-topic",
        metavar="TOPIC",
        fields={"cloudrun": "pubsub_dead_letter_topic"},
        help="The push subscription's dead-letter topic (with --pubsub-topic).",
    ),
    _option(
        "--job",
        fields={"cloudrun-job": "job"},
        help="Job name. Default: the notebook's name.",
    ),
    _option(
        "--no-execute",
        "execute",
        is_flag=True,
        flag_value=False,
        fields={"cloudrun-job": "execute"},
        help="Only create or update the job; don't run it.",
    ),
    _option("--namespace", fields={"kubernetes": "namespace"}, help="Namespace."),
    _option(
        "--apply",
        is_flag=True,
        fields={"kubernetes": "apply"},
        help="Apply to the current kubeconfig context.",
    ),
    _option(
        "--kserve",
        is_flag=True,
        fields={"kubernetes": "kserve"},
        help="Also write a KServe InferenceService.",
    ),
    _option(
        "--claim",
        metavar="PVC",
        fields={"kubernetes": "claim"},
        help="PersistentVolumeClaim mounted at /data for --input/--output paths not on gs://.",
    ),
)


def deploy_options(command: F) -> F:
    """Every deploy option, each belonging to its targets."""
    for option in reversed(DEPLOY_OPTIONS):
        command = option(command)
    return command
