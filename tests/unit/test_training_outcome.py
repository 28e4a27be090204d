"""Training on the host and in a container fail the same way: one function reads the run.

The host path runs the generated train.py for real; the container path runs on the engine
double, fed the output a real run printed (as Docker would stream it from /build/train.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_double import FakeEngine, ScriptedBuild, container

from nb2prod import pipeline
from nb2prod.engine import EngineError, Mount
from nb2prod.errors import NotebookError, TrainingError
from nb2prod.models import BuildContext
from nb2prod.runtime.training import CONTRACT_EXIT_CODE, ERROR_PREFIX
from nb2prod.train import train
from nb2prod.train.outcome import FinishedRun, raise_for_failed_run

IMPORTS = "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
LOAD = "X = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0], 'b': [1.0, 0.0, 1.0, 0.0]})\ny = [0, 0, 1, 1]"
CRASHING_TRAIN = "scale = 2.0\nmodel = LogisticRegression().fit(X[['a', 'nope']] * scale, y)"


@pytest.fixture
def crashing(make_notebook: pytest.FixtureRequest, tmp_path: Path) -> BuildContext:
    """A build context whose train cell raises KeyError on its second line."""
    path = make_notebook(  # type: ignore[operator]
        [
            (IMPORTS, None),
            (LOAD, ["load"]),
            (CRASHING_TRAIN, ["train"]),
            ("def predict(model, features):\n    return model.predict(features)", ["predict"]),
        ],
        name="crashing",
    )
    return pipeline.generate(path, tmp_path / "build" / "crashing")


def training_engine(output: list[str], exit_code: int) -> FakeEngine:
    """An engine that builds the training image and runs a container printing ``output``."""
    return FakeEngine(
        builds=[ScriptedBuild(["Step 1/2 : FROM python:3.11-slim", "Step 2/2 : CMD x"])],
        containers=[container(output, exit_code)],
    )


def test_a_crash_reads_the_same_on_the_host_and_in_a_container(crashing: BuildContext) -> None:
    with pytest.raises(TrainingError) as on_host:
        train(crashing)
    host_message = str(on_host.value)
    assert "in cell 3 [train]" in host_message
    assert "model = LogisticRegression().fit(X[['a', 'nope']] * scale, y)" in host_message
    assert "KeyError" in host_message and "'nope'" in host_message
    assert "on this host" in host_message

    # What the same run prints inside the container, where train.py is /build/train.py.
    printed = subprocess.run(
        [sys.executable, "train.py"], cwd=crashing.path, capture_output=True, text=True
    )
    assert printed.returncode == 1
    output = printed.stderr.replace(str(crashing.path / "train.py"), "/build/train.py")
    assert 'File "/build/train.py"' in output
    engine = training_engine(output.splitlines(), printed.returncode)
    with pytest.raises(TrainingError) as in_container:
        train(crashing, engine=engine)
    where = "in the training container (crashing-train:latest)"
    assert str(in_container.value) == host_message.replace("on this host", where)
    log = crashing.path / ".nb2prod" / "train.log"
    assert on_host.value.hint is not None and in_container.value.hint is not None
    assert in_container.value.hint == f"{on_host.value.hint} Full output: {log}."
    assert "KeyError" in log.read_text()


def test_the_training_container_mounts_the_notebook_read_only(crashing: BuildContext) -> None:
    lines = [f"epoch {i}" for i in range(80)]
    engine = training_engine(lines, 1)
    progress: list[str] = []
    with pytest.raises(TrainingError) as caught:
        train(crashing, progress.append, engine=engine, base_image="python:3.12-slim")
    (built,) = engine.calls_to("build")
    assert built["dockerfile"] == "Dockerfile.train"
    assert built["buildargs"] == {"BASE_IMAGE": "python:3.12-slim"}
    (started,) = engine.calls_to("start")
    spec = started["spec"]
    notebook_dir = crashing.spec.path.parent.resolve()
    assert set(spec.mounts) == {
        Mount(crashing.path.resolve(), "/build"),
        Mount(notebook_dir, "/notebook", read_only=True),
    }
    assert spec.working_dir == "/notebook" and spec.user == f"{os.getuid()}:{os.getgid()}"
    assert spec.environment["NB2PROD_TRAINED_IN"] == "container"
    assert spec.environment["NB2PROD_MODEL_DIR"] == "/build/model"
    assert engine.started[0].removed
    # No traceback to point at a cell: the last lines are quoted, the log keeps them all.
    message = str(caught.value)
    assert "epoch 79" in message and "epoch 67\n" not in message
    assert "epoch 0\n" in (crashing.path / ".nb2prod" / "train.log").read_text()
    assert progress[:2] == ["Step 1/2 : FROM python:3.11-slim", "Step 2/2 : CMD x"]
    assert progress[-1] == "epoch 79"


def test_a_contract_refusal_in_a_container_is_a_notebook_error(crashing: BuildContext) -> None:
    refusal = "cell 4 [predict] ('def predict(model, features):') fails on the sample rows"
    engine = training_engine(["training...", ERROR_PREFIX + refusal], CONTRACT_EXIT_CODE)
    with pytest.raises(NotebookError) as caught:
        train(crashing, engine=engine)
    assert str(caught.value) == refusal
    assert caught.value.exit_code == 3


def test_a_user_exit_3_without_the_prefix_is_a_crash(crashing: BuildContext) -> None:
    run = FinishedRun(crashing, CONTRACT_EXIT_CODE, ["SystemExit: 3"], "on this host", 0.0)
    with pytest.raises(TrainingError, match="exited with 3"):
        raise_for_failed_run(run)


@pytest.mark.parametrize(("code", "where"), [(-9, "on this host"), (137, "in the container")])
def test_a_killed_run_says_so_on_either_path(crashing: BuildContext, code: int, where: str) -> None:
    run = FinishedRun(crashing, code, ["epoch 3"], where, 0.0)
    with pytest.raises(TrainingError) as caught:
        raise_for_failed_run(run)
    assert str(caught.value) == (
        f"train.py was killed {where} (out of memory, or stopped from outside)"
    )


def test_a_run_that_writes_no_model_is_a_training_error(crashing: BuildContext) -> None:
    engine = training_engine(["done"], 0)
    with pytest.raises(TrainingError, match="wrote no model"):
        train(crashing, engine=engine)


def test_a_training_container_that_cannot_start(crashing: BuildContext) -> None:
    engine = FakeEngine(
        builds=[ScriptedBuild(["Step 1/1 : FROM x"])],
        containers=[EngineError("invalid mount config")],
    )
    with pytest.raises(TrainingError, match="did not start: invalid mount config"):
        train(crashing, engine=engine)
