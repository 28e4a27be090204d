"""Stage 3: BuildContext -> TrainedArtifact, by running the generated train.py.

Training runs in a fresh interpreter, never in the user's kernel, with
PYTHONHASHSEED fixed. Its output streams to a progress callback; a failure is
reported against the notebook's cell and line, not train.py's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import NotebookError, TrainingError
from ..models import BuildContext, TrainedArtifact

Progress = Callable[[str], None]

#: Exit code and line prefix train.py uses for contract problems (see runtime/training.py).
CONTRACT_EXIT_CODE = 3
ERROR_PREFIX = "nb2prod-error: "
_CELL_MARK = re.compile(r"^# %% cell (\d+) \[(\w+)\]")
_TRACE_LINE = re.compile(r'File "(?P<file>[^"]*train\.py)", line (?P<line>\d+)')


def train_on_host(context: BuildContext, progress: Progress | None = None) -> TrainedArtifact:
    """Run ``python train.py`` in the build context with this interpreter."""
    started = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "NB2PROD_TRAINED_IN": "host",
        # The context may still sit in a staging folder: name the notebook's folder outright.
        "NB2PROD_NOTEBOOK_DIR": str(context.spec.path.parent),
    }
    env.pop("NB2PROD_MODEL_DIR", None)
    command = [sys.executable, "train.py"]
    errors: deque[str] = deque(maxlen=60)
    with subprocess.Popen(
        command,
        cwd=context.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        # stderr (warnings, tracebacks) is kept for the error message, not streamed.
        drain = threading.Thread(target=lambda: errors.extend(process.stderr or ()), daemon=True)
        drain.start()
        for line in process.stdout:
            if progress is not None:
                progress(line.rstrip("\n"))
        code = process.wait()
        drain.join(timeout=10)
    raise_for_training_exit(code, [e.rstrip("\n") for e in errors], context)
    return load_artifact(context, time.perf_counter() - started)


def raise_for_training_exit(code: int, tail: list[str], context: BuildContext) -> None:
    """Turn a failed train.py run into the error that names the notebook's cell."""
    if code == 0:
        return
    train_py = context.path / "train.py"
    for line in tail:
        if line.startswith(ERROR_PREFIX):
            raise NotebookError(
                line[len(ERROR_PREFIX) :],
                hint="Fix the notebook, run it top to bottom in Jupyter, then build again.",
            )
    where, line = _failing_cell(tail, train_py)
    error = next((entry.strip() for entry in reversed(tail) if entry.strip()), "")
    detail = f"\n  {line}\n  {error}" if line else "\n" + "\n".join(f"  {t}" for t in tail[-12:])
    raise TrainingError(
        f"training failed{where} (train.py exited with {code}):{detail}",
        hint="Run the notebook top to bottom in Jupyter to reproduce it, or see the full "
        f"traceback with: nb2prod generate {context.spec.path} -o DIR && python DIR/train.py",
    )


def _failing_cell(tail: list[str], train_py: Path) -> tuple[str, str]:
    """(' in cell N [role]', the failing line) for the deepest train.py frame of a traceback."""
    lines = [int(m.group("line")) for entry in tail if (m := _TRACE_LINE.search(entry))]
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
    """Read the model/ that train.py wrote."""
    model_dir = context.path / "model"
    card_path = model_dir / "model_card.json"
    if not card_path.is_file() or not (model_dir / "state.pkl").is_file():
        raise TrainingError(f"train.py finished but wrote no model card in {model_dir}")
    card: dict[str, Any] = json.loads(card_path.read_text())
    return TrainedArtifact(context=context, model_dir=model_dir, card=card, seconds=seconds)
