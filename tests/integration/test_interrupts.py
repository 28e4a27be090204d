"""Stopping `nb2prod build` from outside, through the real CLI process and the real engine.

SIGINT and SIGTERM while the training container or the smoke-test container runs: the
exit code says which (130, 143), no staging directory and no container of the run is
left, and the last good build directory is as it was. After a SIGKILL, which no process
can clean up after, the next run removes what the killed one left. ``--train-timeout``
stops a run that takes too long. Each build uses the Docker build cache of the one
before it, so the whole module takes a few minutes.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from helpers import example_notebook

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOCKER = "/usr/bin/docker"
#: A copy of the iris example with its own name, so its images are this module's alone.
NAME = "nb2prod_safety_iris"


def safety_notebook(folder: Path, predict_comment: str = "") -> Path:
    """The iris example with a ``train_pause`` parameter: seconds its train cell sleeps."""
    nb = nbformat.read(example_notebook("iris_function"), as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags:
            cell.source += "\ntrain_pause = 0"
        elif "train" in tags:
            cell.source = f"import time\n\ntime.sleep(train_pause)\n{cell.source}"
        elif "predict" in tags and predict_comment:
            cell.source = f"# {predict_comment}\n{cell.source}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{NAME}.ipynb"
    nbformat.write(nb, path)
    return path


def start_build(notebook: Path, out: Path, *options: str) -> subprocess.Popen[str]:
    """``python -m nb2prod build NOTEBOOK -o OUT OPTIONS`` as a user starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "nb2prod", "build", str(notebook), "-o", str(out), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def docker_lines(*args: str) -> list[str]:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line.strip()]


def containers_of(pid: int, role: str = "") -> list[str]:
    """Containers (any state) that the nb2prod process ``pid`` started, by their labels."""
    found = []
    for line in docker_lines(
        "ps", "-a", "--filter", "label=io.nb2prod.owner", "--format", "{{.ID}} {{.Labels}}"
    ):
        container_id, _, labels = line.partition(" ")
        pairs = dict(p.split("=", 1) for p in labels.split(",") if "=" in p)
        owner = pairs.get("io.nb2prod.owner", "").split(":")
        if len(owner) > 1 and owner[1] == str(pid) and role in pairs.get("io.nb2prod.role", ""):
            found.append(container_id)
    return found


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    """Poll ``condition`` until it holds; fail if the build ends first or it takes too long."""
    deadline = time.monotonic() + 600
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the build ended ({process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within 10 minutes")
        time.sleep(0.2)


def tree_hashes(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def staging_left(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*"))


@pytest.fixture(scope="module")
def previous_build(tmp_path_factory: pytest.TempPathFactory, docker_engine: object) -> Path:
    """A good build of the safety notebook, which every interrupted run targets again."""
    root = tmp_path_factory.mktemp("interrupts")
    notebook = safety_notebook(root / "notebooks")
    out = root / "build" / NAME
    process = start_build(notebook, out)
    stdout, stderr = process.communicate(timeout=1800)
    assert process.returncode == 0, f"{stdout}\n{stderr}"
    return out


@pytest.mark.parametrize(
    ("sent", "code", "message"),
    [(signal.SIGINT, 130, "Interrupted."), (signal.SIGTERM, 143, "Terminated.")],
)
@pytest.mark.parametrize("during", ["training", "smoke-test"])
def test_a_signal_stops_the_build_and_leaves_nothing_behind(
    previous_build: Path, sent: signal.Signals, code: int, message: str, during: str
) -> None:
    before = tree_hashes(previous_build)
    notebook = previous_build.parent.parent / "notebooks" / f"{NAME}.ipynb"
    # A long train cell keeps the training container running until the signal comes.
    pause = "600" if during == "training" else "0"
    process = start_build(notebook, previous_build, "-p", f"train_pause={pause}")
    wait_for(lambda: bool(containers_of(process.pid, during)), process, f"a {during} container")
    assert staging_left(previous_build), "the build should be writing into a staging directory"

    process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == code, stderr
    assert stderr.rstrip().endswith(message), stderr
    assert "Traceback" not in stderr
    assert containers_of(process.pid) == []
    assert staging_left(previous_build) == []
    assert tree_hashes(previous_build) == before


def test_the_run_after_a_sigkill_removes_what_the_killed_run_left(previous_build: Path) -> None:
    notebook = previous_build.parent.parent / "notebooks" / f"{NAME}.ipynb"
    killed = start_build(notebook, previous_build, "-p", "train_pause=600")
    wait_for(lambda: bool(containers_of(killed.pid, "training")), killed, "a training container")
    killed.kill()  # SIGKILL: no finally runs
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    left_containers, left_staging = containers_of(killed.pid), staging_left(previous_build)
    assert left_containers and left_staging, "a SIGKILL leaves both behind; nothing to test"

    # The next run cleans up on its way (a 5 s training limit keeps it short).
    after = start_build(notebook, previous_build, "-p", "train_pause=60", "--train-timeout", "5")
    stdout, stderr = after.communicate(timeout=900)

    assert after.returncode == 5, stderr
    assert "removed containers left by an nb2prod run that was killed" in stderr
    assert containers_of(killed.pid) == []
    assert containers_of(after.pid) == []
    assert staging_left(previous_build) == []


@pytest.mark.parametrize("where", ["container", "host"])
def test_train_timeout_stops_a_long_training_run(previous_build: Path, where: str) -> None:
    notebook = previous_build.parent.parent / "notebooks" / f"{NAME}.ipynb"
    before = tree_hashes(previous_build)
    options = ["--train-timeout", "5", "-p", "train_pause=600"]
    if where == "host":
        options.append("--no-docker")
    started = time.monotonic()
    process = start_build(notebook, previous_build, *options)
    stdout, stderr = process.communicate(timeout=900)

    assert process.returncode == 5, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "longer than --train-timeout 5 s" in errors[0], stderr
    assert "Hint: Raise it (--train-timeout SECONDS)" in stderr
    assert time.monotonic() - started < 300  # not the 600 s the notebook would sleep
    assert containers_of(process.pid) == []
    assert staging_left(previous_build) == []
    assert tree_hashes(previous_build) == before


def test_a_rebuild_leaves_no_more_images_than_the_build_before(
    tmp_path: Path, docker_engine: object
) -> None:
    out = tmp_path / "build" / NAME
    for version in ("first", "second"):
        notebook = safety_notebook(tmp_path / "notebooks", predict_comment=f"{version} version")
        process = start_build(notebook, out)
        stdout, stderr = process.communicate(timeout=1800)
        assert process.returncode == 0, stderr
        image = json.loads((out / ".nb2prod" / "image.json").read_text())
        mine = images_of_this_notebook()
        if version == "first":
            first_image, first_mine = image["image_id"], mine

    # The predict cell changed, so the serving image is a new one ...
    assert image["image_id"] != first_image
    # ... and it replaced the old one instead of adding to it: the images named after this
    # notebook, with every layer under them (`docker images -a`), are no more than before,
    # and none of the first build's own layers is left, not even as a dangling image.
    assert len(mine) <= len(first_mine)
    all_images = set(docker_lines("images", "-a", "-q", "--no-trunc"))
    assert (first_mine - mine) & all_images == set()
    dangling = docker_lines(
        "images",
        "-q",
        "--filter",
        "dangling=true",
        "--filter",
        f"label=io.nb2prod.notebook={NAME}.ipynb",
    )
    assert dangling == []


def images_of_this_notebook() -> set[str]:
    """The images named ``NAME...`` and every image under them (their parent chains)."""
    names = [
        line
        for line in docker_lines("images", "--format", "{{.Repository}}:{{.Tag}}")
        if line.split(":")[0] in (NAME, f"{NAME}-train")
    ]
    found: set[str] = set()
    pending = [
        json.loads(line)
        for line in docker_lines("image", "inspect", "--format", "{{json .Id}}", *names)
    ]
    while pending:
        image_id = pending.pop()
        if image_id in found or not image_id:
            continue
        found.add(image_id)
        parent = docker_lines("image", "inspect", "--format", "{{json .Parent}}", image_id)
        pending.append(json.loads(parent[0]) if parent else "")
    return found
