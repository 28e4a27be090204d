"""build(): notebook -> spec -> context -> artifact -> parity (-> image -> smoke report).

The only module that strings stages together. Each stage is a function of the
previous stage's record; this one adds the atomic output directory, timings
and progress.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Heavy stages (FastAPI, docker, Google and Kubernetes clients) are imported where
# they are used, so `nb2prod check` stays a fast lint.
from .build import notebook, output, render, requirements, sites, tagging
from .build import plan as build_plan
from .build.tag_writer import TagChange
from .builddir import BuildDir
from .engine import (
    Engine,
    connect,
    discard_image,
    remove_abandoned_containers,
    remove_run_containers,
)
from .models import (
    BuildContext,
    BuildOptions,
    BuildResult,
    CiOptions,
    CiWorkflow,
    CloudRunDeployment,
    CloudRunJobDeployment,
    CloudRunJobOptions,
    CloudRunOptions,
    CompareOptions,
    ComparisonReport,
    GateOptions,
    KubernetesManifests,
    KubernetesOptions,
    NotebookSpec,
    PreprocessCheck,
    PushRecord,
    Requirement,
    TrackOptions,
    TrackRecord,
    TrafficOptions,
)

if TYPE_CHECKING:
    from .deploy.monitor import MonitorReport
    from .gate.canary import GateReport
    from .runtime.plan import ServingPlan

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def check(
    path: Path,
    parameters: dict[str, Any] | None = None,
    *,
    strict: bool = False,
    role_map: dict[str, str] | None = None,
) -> NotebookSpec:
    """Validate the notebook contract without writing anything (``nb2prod check``)."""
    spec, _, _ = _analyse(path, parameters, strict, role_map)
    return spec


def check_plan(
    path: Path,
    parameters: dict[str, Any] | None = None,
    *,
    strict: bool = False,
    role_map: dict[str, str] | None = None,
) -> tuple[NotebookSpec, ServingPlan]:
    """:func:`check`, with the serving plan (its recorded sites) for the listing."""
    spec, plan, _ = _analyse(path, parameters, strict, role_map)
    return spec, plan


def check_run(
    path: Path,
    parameters: dict[str, Any] | None = None,
    *,
    strict: bool = False,
    role_map: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> tuple[NotebookSpec, ServingPlan, PreprocessCheck]:
    """:func:`check_plan`, then the cells up to training and preprocess on sample rows
    (``nb2prod check --run``): the build's data-dependent refusals, without fitting the model.

    Runs in a throwaway context in a temporary folder: nothing is written anywhere else.
    """
    from .build.codegen import check_stop
    from .models import TRAINING_ROLES
    from .train.check_run import run_check

    spec, plan, pins = _analyse(path, parameters, strict, role_map)
    stop, needs = check_stop(spec, plan)
    cells = tuple(
        c.number for c in spec.cells_with_roles(TRAINING_ROLES) if stop is None or c.number < stop
    )
    with tempfile.TemporaryDirectory(prefix="nb2prod-check-") as tmp:
        context = render.render_check_context(spec, plan, pins, Path(tmp) / "context", stop)
        report = run_check(context, progress)
    return (
        spec,
        plan,
        PreprocessCheck(
            cells=cells,
            stopped_before=stop,
            trained=tuple(c.number for c in spec.cells_with_roles(("train",)) if c.number in cells),
            needs=needs,
            ran=bool(report.pop("ran")),
            reason=report.pop("reason", None),
            seconds=float(report.pop("seconds")),
            recorded=tuple(report.pop("recorded", ())),
            findings=report,
        ),
    )


def tag(path: Path, role_map: dict[str, str] | None = None) -> tagging.TagReport:
    """A role for every code cell of ``path``, as read or proposed (``nb2prod tag``)."""
    return tagging.tag_report(path, role_map)


def cell_listing(path: Path, role_map: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Each code cell's role from its tags, read without refusing anything."""
    return tagging.cell_listing(path, role_map)


def write_tags(report: tagging.TagReport) -> list[TagChange]:
    """Add ``report``'s roles to the notebook as tags (``nb2prod tag --write``)."""
    return tagging.write_report(report)


def _analyse(
    path: Path,
    parameters: dict[str, Any] | None,
    strict: bool = False,
    role_map: dict[str, str] | None = None,
    sensitive: tuple[str, ...] = (),
) -> tuple[NotebookSpec, ServingPlan, tuple[Requirement, ...]]:
    """Read the notebook, plan its serving and pin its imports: once per command."""
    spec = notebook.read_notebook(
        path, parameters, strict=strict, role_map=role_map, sensitive=sensitive
    )
    plan = build_plan.serving_plan(spec)  # the serving shape problems check must catch too
    notices: list[str] = sites.evaluation_notices(spec.cells, plan.sites)
    pins = requirements.resolve_requirements(spec, notices)
    return replace(spec, notices=(*spec.notices, *notices)), plan, pins


def default_output(spec: NotebookSpec) -> Path:
    """Where a build goes without -o: build/<notebook-stem>."""
    return Path("build") / spec.path.stem


def generate(
    path: Path,
    output_dir: Path | None = None,
    parameters: dict[str, Any] | None = None,
    force: bool = False,
    template: Path | None = None,
    strict: bool = False,
    role_map: dict[str, str] | None = None,
    sensitive: tuple[str, ...] = (),
) -> BuildContext:
    """Write the build context for ``path`` and nothing else (``nb2prod generate``)."""
    spec, plan, pins = _analyse(path, parameters, strict, role_map, sensitive)
    target = (output_dir or default_output(spec)).resolve()
    inputs = output.notebook_inputs(spec)
    with output.staged_directory(target, force, inputs) as staging:
        render.render_context(spec, plan, pins, staging, template, final=target)
    return BuildContext(path=target, spec=spec, requirements=pins)


def build(options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Generate, train, verify parity in process, then (with Docker) build and smoke-test.

    Everything happens in a staging directory: the build directory appears (or
    replaces the previous one) only once every step asked for has passed, so a
    failed image build or smoke test leaves the last good build as it was. With
    Docker, training runs in a container from the serving image's base and pins
    (unless ``train_on_host``), and the image must pass the smoke checks.
    """
    say = progress or _quiet
    steps = _Steps(options, say, None if options.quiet else progress)
    with steps.timed("check"):
        spec, plan, pins = _analyse(
            options.notebook,
            options.parameters,
            options.strict,
            options.role_map,
            options.sensitive,
        )
        spec = replace(spec, batch_dependent=options.batch_dependent)
    for notice in spec.notices:
        say(f"notice: {notice}")
    engine = connect() if options.docker else None  # fail before training when there is none
    if options.mlflow_uri:
        from .track import check_tracking_uri, require_mlflow

        # A missing extra or a malformed URI is found before training, not after.
        check_tracking_uri(options.mlflow_uri)
        require_mlflow()
    if engine is not None and remove_abandoned_containers(engine):
        say("notice: removed containers left by an nb2prod run that was killed")
    target = (options.output or default_output(spec)).resolve()
    inputs = output.notebook_inputs(spec)
    previous = _image_names(target) if engine is not None else None
    with output.staged_directory(target, options.force, inputs, notify=say) as staging:
        try:
            result = steps.train_and_verify(spec, plan, pins, staging, target, engine)
            if engine is not None:
                result = steps.build_and_smoke(result, engine, target)
        finally:
            # A container whose start a Ctrl-C or SIGTERM cut short still starts: remove it
            # before the staging dir, or Docker recreates its bind-mounted folder there.
            if engine is not None:
                remove_run_containers(engine)
    if engine is not None and previous and result.image and result.image.image_id != previous[0]:
        # The build dir that used it is gone: a rebuild must not leave one more image behind.
        if discard_image(engine, *previous):
            say(f"      removed the previous build's image {', '.join(previous[1]) or previous[0]}")
    result = _moved_to(result, target)
    if engine is None:
        _write_reports(options, result, target)
    if options.mlflow_uri:
        result = steps.track(result, target, options.mlflow_uri)
    return result


class _Steps:
    """The build's steps after the analysis, numbered as ``build --help`` shows them."""

    def __init__(self, options: BuildOptions, say: Progress, stream: Progress | None) -> None:
        self.options, self.say, self.stream = options, say, stream
        self.timings: dict[str, float] = {}  # shared with every BuildResult made here
        self.count = (5 if options.docker else 3) + (1 if options.mlflow_uri else 0)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record how long ``stage`` took, in seconds, for ``--json``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(time.perf_counter() - started, 3)

    def train_and_verify(
        self,
        spec: NotebookSpec,
        plan: ServingPlan,
        pins: tuple[Requirement, ...],
        staging: Path,
        target: Path,
        engine: Engine | None,
    ) -> BuildResult:
        """Steps 1-3: render into ``staging``, train, and check parity in process."""
        options, n = self.options, self.count
        in_container = engine is not None and not options.train_on_host
        with self.timed("generate"):
            staged = render.render_context(
                spec, plan, pins, staging, options.template, final=target
            )
        self.say(f"[1/{n}] generated build context for {spec.path.name}")
        where = "in a container built from the image's pins" if in_container else "on this host"
        self.say(f"[2/{n}] training {where} (python train.py, fresh process)")
        with self.timed("train"):
            from .train import train

            artifact = train(
                staged,
                self.stream,
                engine=engine if in_container else None,
                base_image=options.base_image,
                timeout=options.train_timeout,
            )
        for site in artifact.card.recorded:
            runs = f" ({site['runs']} runs)" if site["runs"] > 1 else ""
            self.say(
                f"recorded: cell {site['cell']}, line {site['line']}: {site['expression']} -> "
                f"{site['value']}{runs}"
            )
        with self.timed("parity"):
            from .ship import verify

            parity = verify.verify_in_process(artifact)
        self.say(
            f"[3/{n}] parity: the generated service reproduces all {parity.rows} golden predictions"
        )
        return BuildResult(context=staged, artifact=artifact, parity=parity, timings=self.timings)

    def track(self, result: BuildResult, target: Path, uri: str) -> BuildResult:
        """The last step: log the build directory, now in place, to MLflow (``--mlflow``)."""
        from .track import track

        n = self.count
        self.say(f"[{n}/{n}] logging the run to MLflow and registering the model version")
        with self.timed("mlflow"):
            record = track(TrackOptions(target, uri, self.options.mlflow_experiment), self.say)
        result = replace(result, tracking=record)
        _write_reports(self.options, result, target)  # --json again, now with the run
        return result

    def build_and_smoke(self, result: BuildResult, engine: Engine, target: Path) -> BuildResult:
        """Steps 4-5: the image from the staged directory, then the container's smoke test."""
        from .ship import image, smoke

        staging = result.context.path
        self.say(f"[4/{self.count}] building the image")
        with self.timed("image"):
            built = image.build_image(
                staging,
                tags=self.options.tags,
                base_image=self.options.base_image,
                quiet=self.options.quiet,
                progress=self.stream,
                engine=engine,
            )
        result = replace(result, image=built)
        self.say(f"      {', '.join(built.tags)} ({built.size_bytes / 1e6:.0f} MB)")
        self.say(f"[5/{self.count}] smoke-testing the container")
        with self.timed("smoke"):
            report = smoke.run_smoke_checks(
                built.tags[0],
                result.artifact.card,
                result.artifact.golden,
                engine=engine,
                progress=self.stream,
            )
        result = replace(result, smoke=report)
        BuildDir(staging).write_smoke(smoke.report_to_dict(report))
        _write_reports(self.options, result, target)
        smoke.raise_for_report(report, built.tags[0])
        return result


def _image_names(build_dir: Path) -> tuple[str, list[str]] | None:
    """(id, names) of the image an existing build dir records, pushed names included."""
    from .errors import ConfigError

    records = BuildDir(build_dir)
    try:
        built, pushed = records.image(), records.push()
    except ConfigError:  # an unreadable record: nothing nb2prod can safely remove
        return None
    if built is None:
        return None
    names = list(built.tags)
    if pushed is not None and pushed.image_id == built.image_id:
        names.append(f"{pushed.repository}:{pushed.tag}")
    return built.image_id, names


def _moved_to(result: BuildResult, target: Path) -> BuildResult:
    """The same result, its paths pointing into ``target`` now that the staging dir moved."""
    from .train import load_artifact

    context = replace(result.context, path=target)
    artifact = load_artifact(context, result.artifact.seconds)
    built = result.image
    if built is not None:
        built = replace(built, log_path=BuildDir(target).record(built.log_path.name))
    return replace(result, context=context, artifact=artifact, image=built)


def _write_reports(options: BuildOptions, result: BuildResult, build_dir: Path) -> None:
    """--json and --junit: written before a failing smoke report is raised, for CI."""
    if options.json_path is not None:
        data = {**summary(result), "build_dir": str(build_dir)}
        options.json_path.write_text(json.dumps(data, indent=2) + "\n")
    if options.junit_path is not None and result.smoke is not None:
        from .ship import smoke

        smoke.report_to_junit(result.smoke, options.junit_path)


def summary(result: BuildResult) -> dict[str, Any]:
    """The machine-readable build summary (``--json``)."""
    card = result.artifact.card
    data: dict[str, Any] = {
        "ok": result.parity.ok and (result.smoke is None or result.smoke.ok),
        "notebook": str(result.context.spec.path),
        "build_dir": str(result.context.path),
        "model_version": card.model_version,
        "trained_in": card.trained_in,
        "metrics": card.metrics,
        "parity": {"rows": result.parity.rows, "ok": result.parity.ok},
        "timings": result.timings,
        "image": None,
        "smoke": None,
        "mlflow": result.tracking.to_json() if result.tracking is not None else None,
    }
    if result.image is not None:
        data["image"] = {
            "id": result.image.image_id,
            "tags": list(result.image.tags),
            "size_bytes": result.image.size_bytes,
        }
    if result.smoke is not None:
        from .ship import smoke

        data["smoke"] = smoke.report_to_dict(result.smoke)
    return data


def push(build_dir: Path, registry: str, progress: Progress | None = None) -> PushRecord:
    """Push DIR's image and pin its digest (``nb2prod push``)."""
    from .ship import push as push_stage

    return push_stage.push_image(build_dir, registry, progress)


def deploy_cloudrun(
    options: CloudRunOptions, registry: str | None = None, progress: Progress | None = None
) -> CloudRunDeployment:
    """Push first when the current image isn't pushed and a registry is given, then deploy."""
    from .deploy import cloudrun
    from .ship import push as push_stage

    if registry and not options.dry_run and not BuildDir(options.build_dir).is_pushed():
        push_stage.push_image(options.build_dir, registry, progress)
    return cloudrun.deploy(options)


def deploy_cloudrun_job(
    options: CloudRunJobOptions, registry: str | None = None, progress: Progress | None = None
) -> CloudRunJobDeployment:
    """Push first when asked to, then create or update the batch job and run it."""
    from .deploy import cloudrun
    from .ship import push as push_stage

    if registry and not options.dry_run and not BuildDir(options.build_dir).is_pushed():
        push_stage.push_image(options.build_dir, registry, progress)
    return cloudrun.deploy_job(options, progress)


def deploy_kubernetes(
    options: KubernetesOptions, registry: str | None = None, progress: Progress | None = None
) -> KubernetesManifests:
    """Write (and optionally apply) Kubernetes manifests, pushing first when asked to."""
    from .deploy import kubernetes
    from .ship import push as push_stage

    if registry and not BuildDir(options.build_dir).is_pushed():
        push_stage.push_image(options.build_dir, registry, progress)
    return kubernetes.deploy(options)


def promote(options: TrafficOptions) -> CloudRunDeployment:
    """Move all traffic to the canary (``nb2prod promote``)."""
    from .deploy import cloudrun

    return cloudrun.promote(options)


def rollback(options: TrafficOptions) -> CloudRunDeployment:
    """Restore the traffic from before the last deploy (``nb2prod rollback``)."""
    from .deploy import cloudrun

    return cloudrun.rollback(options)


def promote_gate(options: GateOptions) -> tuple[GateReport, CloudRunDeployment | None]:
    """Test the canary's live quality against stable, then promote or roll back on the verdict
    (``nb2prod promote --gate``); traffic stays as it is on a wait or a dry run."""
    from .gate import canary

    report = canary.evaluate(options)
    if options.dry_run or report.decision == "wait":
        return report, None
    traffic = TrafficOptions(build_dir=options.build_dir, endpoint=options.endpoint)
    moved = promote(traffic) if report.decision == "promote" else rollback(traffic)
    return report, moved


def ci_init(options: CiOptions) -> CiWorkflow:
    """Write the retraining workflow (``nb2prod ci init``)."""
    from .ci import workflow

    return workflow.init(options)


def monitor(url: str, timeout: float = 10.0) -> MonitorReport:
    """Read a running service's drift report and model (``nb2prod monitor``)."""
    from .deploy import monitor as monitor_stage

    return monitor_stage.read_service(url, timeout)


def compare(options: CompareOptions) -> ComparisonReport:
    """Gate a challenger build on the champion's evaluate metrics (``nb2prod compare``)."""
    from .gate import compare as gate

    return gate.compare(options)


def track(options: TrackOptions, progress: Progress | None = None) -> TrackRecord:
    """Log an existing build directory to MLflow (``nb2prod track``)."""
    from .track import track as track_stage

    return track_stage(options, progress)
