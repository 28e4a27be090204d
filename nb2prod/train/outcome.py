"""What a finished ``train.py`` run means: the artifact it wrote, or the one error saying why not.

Both ways of training (``host.py``, ``container.py``) end here, so a notebook that fails
gives the same message wherever it ran; only ``where`` and the log they point at differ.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..builddir import BuildDir
from ..errors import NotebookError, ParityError, TrainingError
from ..models import BuildContext, TrainedArtifact
from ..runtime.training import CONTRACT_EXIT_CODE, ERROR_PREFIX, SKEW_EXIT_CODE

#: Output lines kept from a run to explain its failure.
KEPT_LINES = 60
#: Lines quoted when no traceback in train.py points at a cell.
QUOTED_LINES = 12
_CELL_MARK = re.compile(r"^# %% cell (\d+) \[(\w+)\]")
# Matches both the host's path and the container's /build/train.py.
_TRACE_LINE = re.compile(r'File "(?P<file>[^"]*train\.py)", line (?P<line>\d+)')


@dataclass(frozen=True)
class FinishedRun:
    """One run of ``train.py``, as both training paths report it."""

    context: BuildContext
    exit_code: int
    #: Its last lines: stderr on the host; stdout and stderr together in a container.
    output: Sequence[str]
    #: Where it ran, for the message: "on this host", "in the training container (TAG)".
    where: str
    started: float
    #: The full output, when it was kept.
    log_path: Path | None = None
    #: ``--train-timeout`` in seconds, when it fired and killed the run.
    timed_out_after: float | None = None
    #: What the run was doing, for the message ("training", "nb2prod check --run").
    task: str = "training"


class Deadline:
    """Whether a run's ``--train-timeout`` fired (see ``kill_after``)."""

    def __init__(self) -> None:
        self.fired = threading.Event()


@contextmanager
def kill_after(seconds: float | None, kill: Callable[[], None]) -> Iterator[Deadline]:
    """Call ``kill`` from a timer thread if the block still runs after ``seconds``.

    ``None`` means no timeout. The timer is cancelled however the block ends.
    """
    deadline = Deadline()

    def fire() -> None:
        deadline.fired.set()
        kill()

    timer = threading.Timer(seconds, fire) if seconds else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield deadline
    finally:
        if timer is not None:
            timer.cancel()


def artifact_of(run: FinishedRun) -> TrainedArtifact:
    """The trained model of a run; NotebookError or TrainingError when it failed."""
    raise_for_failed_run(run)
    return load_artifact(run.context, time.perf_counter() - run.started)


def raise_for_failed_run(run: FinishedRun) -> None:
    """Turn a failed run into the error that names the notebook's cell; nothing if it passed.

    Exit 3 with an ``nb2prod-error:`` line is the notebook breaking the contract
    (NotebookError); anything else is a crash (TrainingError) quoting the failing cell and
    line, or the last output lines, with the command that reproduces it.
    """
    code = run.exit_code
    if run.timed_out_after is not None:
        log = f" Its output so far: {run.log_path}." if run.log_path else ""
        raise TrainingError(
            f"training ran longer than --train-timeout {run.timed_out_after:g} s {run.where} "
            "and was stopped",
            hint="Raise it (--train-timeout SECONDS), or leave it out for no limit; train on "
            f"less data while you iterate (-p, a parameters cell).{log}",
        )
    if code == 0:
        return
    if code == SKEW_EXIT_CODE:
        for line in run.output:
            if line.startswith(ERROR_PREFIX):
                raise ParityError(
                    line.removeprefix(ERROR_PREFIX),
                    hint="The build checks that each sample row predicts the same alone and in a "
                    "batch, twice. Fix the line named, then build again.",
                )
    if code == CONTRACT_EXIT_CODE:
        for line in run.output:
            if line.startswith(ERROR_PREFIX):
                raise NotebookError(
                    line.removeprefix(ERROR_PREFIX),
                    hint="Fix the notebook, run it top to bottom in Jupyter, then build again.",
                )
    if code in (-signal.SIGKILL, 128 + signal.SIGKILL):  # the host's and Docker's way to say it
        what = f"train.py was killed {run.where} (out of memory, or stopped from outside)"
    else:
        where, line = _failing_cell(run.output, run.context.path / "train.py")
        error = next((entry.strip() for entry in reversed(run.output) if entry.strip()), "")
        quoted = [line, error] if line else list(run.output[-QUOTED_LINES:])
        what = f"{run.task} failed{where} {run.where} (train.py exited with {code}):" + "".join(
            f"\n  {entry}" for entry in quoted
        )
    log = f" Full output: {run.log_path}." if run.log_path else ""
    raise TrainingError(
        what,
        hint="Run the notebook top to bottom in Jupyter to reproduce it, or see the full "
        f"traceback with: nb2prod generate {run.context.spec.path} -o DIR && python "
        f"DIR/train.py.{log}",
    )


def _failing_cell(output: Sequence[str], train_py: Path) -> tuple[str, str]:
    """(' in cell N [role]', the failing line) for the deepest train.py frame of a traceback."""
    lines = [int(m.group("line")) for entry in output if (m := _TRACE_LINE.search(entry))]
    if not lines or not train_py.is_file():
        return "", ""
    source = train_py.read_text().splitlines()
    target = lines[-1]
    failing = source[target - 1].strip() if 0 < target <= len(source) else ""
    for index in range(min(target, len(source)) - 1, -1, -1):
        mark = _CELL_MARK.match(source[index])
        if mark:
            return f" in cell {mark.group(1)} [{mark.group(2)}]", failing
    return "", failing


def load_artifact(context: BuildContext, seconds: float) -> TrainedArtifact:
    """Read the model/ that train.py wrote; TrainingError when it wrote none."""
    build_dir = BuildDir(context.path)
    if not build_dir.card_path.is_file() or not build_dir.state_path.is_file():
        raise TrainingError(f"train.py finished but wrote no model in {build_dir.model_dir}")
    return TrainedArtifact(
        context=context,
        model_dir=build_dir.model_dir,
        card=build_dir.card(),
        golden=build_dir.golden(),
        seconds=seconds,
    )
