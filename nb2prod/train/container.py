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
from ..engine import ContainerSpec, Engine, EngineError, Mount, build_logged
from ..errors import TrainingError
from ..models import BuildContext, TrainedArtifact
from ..naming import repository_name
from .outcome import KEPT_LINES, FinishedRun, artifact_of

Progress = Callable[[str], None]


def train_in_container(
    context: BuildContext,
    engine: Engine,
    *,
    base_image: str | None = None,
    progress: Progress | None = None,
) -> TrainedArtifact:
    """Build the training image, run ``train.py`` in it, and read the model it wrote.

    Raises NotebookError/TrainingError as training on the host does, ImageBuildError when
    the training image does not build.
    """
    context_dir = context.path.resolve()
    tag = f"{repository_name(context_dir.name)}-train:latest"
    build_logged(
        engine,
        context_dir,
        dockerfile="Dockerfile.train",
        tag=tag,
        labels={"io.nb2prod.role": "training"},
        base_image=base_image,
        log_path=BuildDir(context_dir).record("train-build.log"),
        progress=progress,
    )
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
    code, output = _run_logged(engine, spec, log_path, progress)
    where = f"in the training container ({tag})"
    return artifact_of(FinishedRun(context, code, output, where, started, log_path))


def _run_logged(
    engine: Engine, spec: ContainerSpec, log_path: Path, progress: Progress | None
) -> tuple[int, list[str]]:
    """Run the container to its end, logging and passing on each line; always remove it."""
    kept: deque[str] = deque(maxlen=KEPT_LINES)
    try:
        container = engine.start(spec)
    except EngineError as err:
        raise TrainingError(f"the training container did not start: {err}") from err
    try:
        with log_path.open("w") as log:
            for line in container.output_lines():
                log.write(line + "\n")
                kept.append(line)
                if progress is not None:
                    progress(line)
        code = container.wait()
    finally:
        container.remove()
    return (-1 if code is None else code), list(kept)
