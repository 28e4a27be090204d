"""build(): notebook -> spec -> context -> artifact -> parity (-> image -> smoke report).

The only module that strings stages together. Each stage is a function of the
previous stage's record; this one adds the atomic output directory, timings
and progress.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Heavy stages (FastAPI, docker, Google and Kubernetes clients) are imported where
# they are used, so `nb2prod check` stays a fast lint.
from .build import notebook, output, render, requirements
from .build import plan as build_plan
from .builddir import BuildDir
from .engine import Engine, connect
from .models import (
    BuildContext,
    BuildOptions,
    BuildResult,
    CloudRunDeployment,
    CloudRunOptions,
    KubernetesManifests,
    KubernetesOptions,
    NotebookSpec,
    PushRecord,
    Requirement,
    TrafficOptions,
)

if TYPE_CHECKING:
    from .deploy.monitor import MonitorReport
    from .runtime.plan import ServingPlan

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def check(path: Path, parameters: dict[str, Any] | None = None) -> NotebookSpec:
    """Validate the notebook contract without writing anything (``nb2prod check``)."""
    spec, _, _ = _analyse(path, parameters)
    return spec


def _analyse(
    path: Path, parameters: dict[str, Any] | None
) -> tuple[NotebookSpec, ServingPlan, tuple[Requirement, ...]]:
    """Read the notebook, plan its serving and pin its imports: once per command."""
    spec = notebook.read_notebook(path, parameters)
    plan = build_plan.serving_plan(spec)  # the serving shape problems check must catch too
    return spec, plan, requirements.resolve_requirements(spec)


def default_output(spec: NotebookSpec) -> Path:
    """Where a build goes without -o: build/<notebook-stem>."""
    return Path("build") / spec.path.stem


def generate(
    path: Path,
    output_dir: Path | None = None,
    parameters: dict[str, Any] | None = None,
    force: bool = False,
    template: Path | None = None,
) -> BuildContext:
    """Write the build context for ``path`` and nothing else (``nb2prod generate``)."""
    spec, plan, pins = _analyse(path, parameters)
    target = (output_dir or default_output(spec)).resolve()
    inputs = output.notebook_inputs(spec)
    with output.staged_directory(target, force, inputs) as staging:
        render.render_context(spec, plan, pins, staging, template, final=target)
    return BuildContext(path=target, spec=spec, requirements=pins)


def build(options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Generate, train, verify parity in process, then (with Docker) build and smoke-test.

    The build directory appears only once training and the parity check passed.
    With Docker, training runs in a container from the serving image's base and
    pins (unless ``train_on_host``), and the image must pass the smoke checks.
    """
    say = progress or _quiet
    stream = None if options.quiet else progress
    timings: dict[str, float] = {}
    steps = 5 if options.docker else 3

    @contextmanager
    def timed(stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            timings[stage] = round(time.perf_counter() - started, 3)

    with timed("check"):
        spec, plan, pins = _analyse(options.notebook, options.parameters)
    for notice in spec.notices:
        say(f"notice: {notice}")
    engine = connect() if options.docker else None  # fail before training when there is none
    target = (options.output or default_output(spec)).resolve()
    in_container = options.docker and not options.train_on_host
    inputs = output.notebook_inputs(spec)
    with output.staged_directory(target, options.force, inputs, notify=say) as staging:
        with timed("generate"):
            staged = render.render_context(
                spec, plan, pins, staging, options.template, final=target
            )
        say(f"[1/{steps}] generated build context for {spec.path.name}")
        where = "in a container built from the image's pins" if in_container else "on this host"
        say(f"[2/{steps}] training {where} (python train.py, fresh process)")
        with timed("train"):
            from .train import load_artifact, train

            artifact = train(
                staged,
                stream,
                engine=engine if in_container else None,
                base_image=options.base_image,
            )
        with timed("parity"):
            from .ship import verify

            parity = verify.verify_in_process(artifact)
        say(
            f"[3/{steps}] parity: the generated service reproduces all {parity.rows} golden "
            "predictions"
        )
    context = BuildContext(path=target, spec=spec, requirements=staged.requirements)
    artifact = load_artifact(context, artifact.seconds)
    result = BuildResult(context=context, artifact=artifact, parity=parity, timings=timings)
    if engine is None:
        _write_reports(options, result)
        return result
    return _build_and_smoke(options, result, engine, say, stream, timed)


def _build_and_smoke(
    options: BuildOptions,
    result: BuildResult,
    engine: Engine,
    say: Progress,
    stream: Progress | None,
    timed: Callable[[str], AbstractContextManager[None]],
) -> BuildResult:
    from .ship import image, smoke

    target = result.context.path
    say("[4/5] building the image")
    with timed("image"):
        built = image.build_image(
            target,
            tags=options.tags,
            base_image=options.base_image,
            quiet=options.quiet,
            progress=stream,
            engine=engine,
        )
    result = replace(result, image=built)
    say(f"      {', '.join(built.tags)} ({built.size_bytes / 1e6:.0f} MB)")
    say("[5/5] smoke-testing the container")
    with timed("smoke"):
        report = smoke.run_smoke_checks(
            built.tags[0],
            result.artifact.card,
            result.artifact.golden,
            engine=engine,
            progress=stream,
        )
    result = replace(result, smoke=report)
    BuildDir(target).write_smoke(smoke.report_to_dict(report))
    _write_reports(options, result)
    smoke.raise_for_report(report, built.tags[0])
    return result


def _write_reports(options: BuildOptions, result: BuildResult) -> None:
    """--json and --junit: written before a failing smoke report is raised, for CI."""
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(summary(result), indent=2) + "\n")
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


def monitor(url: str, timeout: float = 10.0) -> MonitorReport:
    """Read a running service's drift report and model (``nb2prod monitor``)."""
    from .deploy import monitor as monitor_stage

    return monitor_stage.read_service(url, timeout)
