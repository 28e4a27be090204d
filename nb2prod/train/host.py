"""Training on this host: ``python train.py`` in a fresh interpreter, never the user's kernel.

PYTHONHASHSEED is fixed; stdout streams to a progress callback and stderr is kept to
explain a failure, which ``outcome`` reports against the notebook's cell and line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO

from ..models import BuildContext, TrainedArtifact
from .outcome import KEPT_LINES, FinishedRun, artifact_of, kill_after

Progress = Callable[[str], None]


def train_on_host(
    context: BuildContext, progress: Progress | None = None, timeout: float | None = None
) -> TrainedArtifact:
    """Run ``python train.py`` in the build context with this interpreter.

    The process is killed after ``timeout`` seconds (TrainingError), and at once when
    nb2prod itself is interrupted, so it never outlives the build.
    """
    return artifact_of(run_on_host(context, progress, timeout))


def run_on_host(
    context: BuildContext,
    progress: Progress | None = None,
    timeout: float | None = None,
    task: str = "training",
) -> FinishedRun:
    """Run the context's ``train.py`` here and say how it ended (``task`` names it in errors)."""
    started = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "NB2PROD_TRAINED_IN": "host",
        # The context may still sit in a staging folder: name the notebook's folder outright.
        "NB2PROD_NOTEBOOK_DIR": str(context.spec.path.parent),
    }
    env.pop("NB2PROD_MODEL_DIR", None)
    errors: deque[str] = deque(maxlen=KEPT_LINES)
    with subprocess.Popen(
        [sys.executable, "train.py"],
        cwd=context.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        # stderr (warnings, tracebacks) is kept for the error message, not streamed.
        drain = threading.Thread(target=_keep_lines, args=(process.stderr, errors), daemon=True)
        drain.start()
        with kill_after(timeout, process.kill) as deadline:
            try:
                for line in process.stdout:
                    if progress is not None:
                        progress(line.rstrip("\n"))
                code = process.wait()
            except BaseException:  # Ctrl-C, SIGTERM: Popen's exit would wait for the run
                process.kill()
                process.wait()
                # Popen's exit closes the pipes: let the reader see the end of stderr first.
                drain.join(timeout=5)
                raise
        drain.join(timeout=10)
    output = [line.rstrip("\n") for line in errors]
    fired = timeout if deadline.fired.is_set() else None
    return FinishedRun(
        context, code, output, "on this host", started, timed_out_after=fired, task=task
    )


def _keep_lines(stream: IO[str], into: deque[str]) -> None:
    """Read ``stream`` to its end into ``into`` (the training run's stderr)."""
    try:
        into.extend(stream)
    except (ValueError, OSError):  # the pipe was closed under us: the run was interrupted
        return
