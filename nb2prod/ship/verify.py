"""Stage 4: the training/serving skew guard, in process.

Loads the generated serving app from the build context (the very files the
image will run) and sends it the golden rows through HTTP semantics (JSON,
validation, dtype casting), then compares with the golden predictions the
notebook's own code made during training.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from ..builddir import BuildDir
from ..errors import ParityError
from ..models import ParityReport, TrainedArtifact
from ..runtime.app import create_app
from ..runtime.contract_checks import compare_predictions, format_mismatches
from ..runtime.prediction_log import ENV_SAMPLE as SAMPLE_ENV


def verify_in_process(artifact: TrainedArtifact) -> ParityReport:
    """POST the golden rows to the generated app in process; raise ParityError on a mismatch."""
    code = _load_model_code(artifact.context.path)
    rows = artifact.golden.rows
    expected = artifact.golden.predictions
    with warnings.catch_warnings():
        # Starlette nudges towards httpx2; httpx is what FastAPI's TestClient still uses.
        warnings.filterwarnings("ignore", message=".*httpx.*")
        from fastapi.testclient import TestClient
    with _service_logs_silenced(), TestClient(create_app(artifact.model_dir, code)) as client:
        response = client.post("/predict", json={"instances": rows})
    if response.status_code != 200:
        raise ParityError(
            f"the generated service answered {response.status_code} for the golden rows: "
            f"{response.text[:500]}",
            hint="The serving code fails on rows the notebook handled; see model_code.py.",
        )
    got: list[Any] = response.json()["predictions"]
    mismatches = compare_predictions(expected, got)
    report = ParityReport(rows=len(rows), mismatches=tuple(mismatches))
    if not report.ok:
        raise ParityError(
            "served predictions differ from the notebook's (training/serving skew):\n"
            + format_mismatches(mismatches, len(rows)),
            hint="Preprocessing must not depend on state that training did not save.",
        )
    return report


@contextmanager
def _service_logs_silenced() -> Iterator[None]:
    """The in-process app logs JSON to stdout as in production; keep that out of the CLI.

    The prediction log is off too: the parity check sends the golden rows, which are training
    rows, and they must not reach the build's output or a CI log.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {"LOG_LEVEL": "ERROR", SAMPLE_ENV: "0"}
    previous = {name: os.environ.get(name) for name in quiet}
    os.environ.update(quiet)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        root.handlers[:] = handlers
        root.setLevel(level)


def _load_model_code(context_dir: Path) -> ModuleType:
    """Import the context's model_code.py under a unique name (several builds, one process)."""
    name = f"nb2prod_model_code_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, BuildDir(context_dir).model_code)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(context_dir))  # local modules copied beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(context_dir))
    return module
