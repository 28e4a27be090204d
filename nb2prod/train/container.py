"""Training in a container built from ``Dockerfile.train``: the serving image's base and pins.

So training and serving share one environment. The notebook's directory is mounted
read-only as the working directory, so relative paths such as ``data/train.csv`` resolve
as in Jupyter; the build dir is mounted at /build and ``model/`` is written back, owned by
the calling user. The output goes to ``DIR/.nb2prod/train.log`` (the image's build log to
``train-build.log``); ``outcome`` says what a failed run means, as for the host.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..builddir import BuildDir
from ..engine import (
    Container,
    ContainerSpec,
    Engine,
    EngineError,
    Mount,
    build_logged,
    discard_image,
)
from ..errors import TrainingError
from ..models import BuildContext, TrainedArtifact
from ..naming import repository_name
from .outcome import KEPT_LINES, FinishedRun, artifact_of, kill_after

Progress = Callable[[str], None]


def train_in_container(
    context: BuildContext,
    engine: Engine,
    *,
    base_image: str | None = None,
    progress: Progress | None = None,
    timeout: float | None = None,
) -> TrainedArtifact:
    """Build the training image, run ``train.py`` in it, and read the model it wrote.

    Raises NotebookError/TrainingError as training on the host does (TrainingError too when
    the run outlives ``timeout`` seconds), ImageBuildError when the image does not build.
    """
    context_dir = context.path.resolve()
    tag = f"{repository_name(context_dir.name)}-train:latest"
    # One training image per notebook: the tag is reused, the image it named is removed.
    previous = engine.inspect_image(tag)
    image_id, _ = build_logged(
        engine,
        context_dir,
        dockerfile="Dockerfile.train",
        tag=tag,
        labels={"io.nb2prod.role": "training"},
        base_image=base_image,
        log_path=BuildDir(context_dir).record("train-build.log"),
        progress=progress,
    )
    if previous is not None and previous.id != image_id:
        discard_image(engine, previous.id)
    started = time.perf_counter()
    spec = ContainerSpec(
        image=tag,
        command=("python", "/build/train.py"),
        mounts=(
            Mount(context_dir, "/build"),
            Mount(context.spec.path.parent.resolve(), "/notebook", read_only=True),
        ),
        environment={
            "NB2PROD_MODEL_DIR": "/build/model",
            "NB2PROD_NOTEBOOK_DIR": "/notebook",
            "NB2PROD_TRAINED_IN": "container",
        },
        user=f"{os.getuid()}:{os.getgid()}",
        working_dir="/notebook",
        labels={"io.nb2prod.role": "training"},
    )
    log_path = BuildDir(context_dir).record("train.log")
    code, output, fired = _run_logged(engine, spec, log_path, progress, timeout)
    where = f"in the training container ({tag})"
    timed_out = timeout if fired else None
    run = FinishedRun(context, code, output, where, started, log_path, timed_out_after=timed_out)
    return artifact_of(run)


def _run_logged(
    engine: Engine,
    spec: ContainerSpec,
    log_path: Path,
    progress: Progress | None,
    timeout: float | None,
) -> tuple[int, list[str], bool]:
    """Run the container to its end, logging and passing on each line; always remove it.

    Returns (exit code, last lines, whether ``timeout`` fired and killed it).
    """
    kept: deque[str] = deque(maxlen=KEPT_LINES)
    try:
        container = engine.start(spec)
    except EngineError as err:
        raise TrainingError(f"the training container did not start: {err}") from err
    try:
        with kill_after(timeout, lambda: _kill(container)) as deadline, log_path.open("w") as log:
            for line in container.output_lines():
                log.write(line + "\n")
                kept.append(line)
                if progress is not None:
                    progress(line)
            code = container.wait()
    finally:
        # Also on Ctrl-C or SIGTERM: the run stops with nb2prod.
        container.remove()
    return (-1 if code is None else code), list(kept), deadline.fired.is_set()


def _kill(container: Container) -> None:
    """SIGKILL from the timeout's thread; a container that just ended needs nothing."""
    try:
        container.kill("SIGKILL")
    except Exception:  # noqa: S110 - already gone: the run ends either way
        pass
