"""build(): notebook -> spec -> context -> artifact -> parity (-> image -> smoke report).

The only module that strings stages together. Each stage is a function of the
previous stage's record; this one adds the atomic output directory, timings
and progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import cloudrun, kubernetes, notebook, output, render, trainer, verify
from . import push as push_stage
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
    TrafficOptions,
)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def check(path: Path, parameters: dict[str, Any] | None = None) -> NotebookSpec:
    """Validate the notebook contract without writing anything (``nb2prod check``)."""
    spec = notebook.read_notebook(path, parameters)
    render.serving_plan(spec)  # the serving shape problems check must catch too
    render.resolve_requirements(spec)
    return spec


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
    spec = check(path, parameters)
    target = (output_dir or default_output(spec)).resolve()
    with output.staged_directory(target, force) as staging:
        render.render_context(spec, staging, template, final=target)
    return BuildContext(path=target, spec=spec, requirements=render.resolve_requirements(spec))


def build(options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Generate, train, verify parity in process, then (with Docker) build and smoke-test."""
    say = progress or _quiet
    timings: dict[str, float] = {}

    @contextmanager
    def timed(stage: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        timings[stage] = round(time.perf_counter() - started, 3)

    with timed("check"):
        spec = check(options.notebook, options.parameters)
    for notice in spec.notices:
        say(f"notice: {notice}")
    target = (options.output or default_output(spec)).resolve()
    with output.staged_directory(target, options.force) as staging:
        with timed("generate"):
            staged = render.render_context(spec, staging, options.template, final=target)
        say(f"[1/3] generated build context for {spec.path.name}")
        with timed("train"):
            say("[2/3] training (python train.py, fresh process)")
            artifact = trainer.train_on_host(staged, progress if not options.quiet else None)
        with timed("parity"):
            parity = verify.verify_in_process(artifact)
        say(
            f"[3/3] parity: the generated service reproduces all {parity.rows} golden "
            "predictions"
        )
    context = BuildContext(path=target, spec=spec, requirements=staged.requirements)
    artifact = trainer.load_artifact(context, artifact.seconds)
    return BuildResult(context=context, artifact=artifact, parity=parity, timings=timings)


def push(build_dir: Path, registry: str, progress: Progress | None = None) -> PushRecord:
    """Push DIR's image and pin its digest (``nb2prod push``)."""
    return push_stage.push_image(build_dir, registry, progress)


def deploy_cloudrun(
    options: CloudRunOptions, registry: str | None = None, progress: Progress | None = None
) -> CloudRunDeployment:
    """Push first when the current image isn't pushed and a registry is given, then deploy."""
    if registry and not options.dry_run and not push_stage.is_pushed(options.build_dir):
        push_stage.push_image(options.build_dir, registry, progress)
    return cloudrun.deploy(options)


def deploy_kubernetes(
    options: KubernetesOptions, registry: str | None = None, progress: Progress | None = None
) -> KubernetesManifests:
    """Write (and optionally apply) Kubernetes manifests, pushing first when asked to."""
    if registry and not push_stage.is_pushed(options.build_dir):
        push_stage.push_image(options.build_dir, registry, progress)
    return kubernetes.deploy(options)


def promote(options: TrafficOptions) -> CloudRunDeployment:
    """Move all traffic to the canary (``nb2prod promote``)."""
    return cloudrun.promote(options)


def rollback(options: TrafficOptions) -> CloudRunDeployment:
    """Restore the traffic from before the last deploy (``nb2prod rollback``)."""
    return cloudrun.rollback(options)
