"""``nb2prod check --run``: run a check context's script and read what the probe found.

The check script (build/codegen.check_script) is train.py cut before the first train cell
that follows the preprocess cells, ending in the preprocess probe
(runtime/preprocess_probe.py). It runs here, in a fresh interpreter, as
``build --train-on-host`` trains, so a refusal there is the build's own error with the
build's exit code, found without fitting the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import TrainingError
from ..models import BuildContext
from ..runtime.training import CHECK_REPORT
from .host import run_on_host
from .outcome import raise_for_failed_run

Progress = Callable[[str], None]


def run_check(context: BuildContext, progress: Progress | None = None) -> dict[str, Any]:
    """The probe's report; the build's NotebookError/ParityError/TrainingError on a failure."""
    run = run_on_host(context, progress, task="nb2prod check --run")
    raise_for_failed_run(run)
    report_path = context.path / CHECK_REPORT
    if not report_path.is_file():
        raise TrainingError(
            "nb2prod check --run: the notebook's cells ended the run before the preprocess "
            "check (a cell calls exit() or sys.exit())",
            hint="Keep exit() out of the tagged cells; the build would stop there too.",
        )
    report: dict[str, Any] = json.loads(report_path.read_text())
    return report
