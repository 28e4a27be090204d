"""The image and smoke stages against the real engine, on a real example's build context.

One context (iris_function, trained on the host) is built once per module; the tests
then build images from it. After the first build every build reuses the pip layer, so
the whole module takes about a minute once the cache is warm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import nbformat
import pytest
from fake_build import make_card

from nb2prod import pipeline
from nb2prod.builddir import BuildDir
from nb2prod.errors import ParityError
from nb2prod.models import BuildContext, BuildOptions, ImageResult, SmokeReport
from nb2prod.runtime.card import GoldenSet
from nb2prod.ship import image, smoke
from nb2prod.train import train

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "example_notebooks" / "iris_function.ipynb"


@pytest.fixture(scope="module")
def host_trained(tmp_path_factory: pytest.TempPathFactory, docker_engine: Any) -> BuildContext:
    """A rendered, host-trained build context for the function-style iris example."""
    target = tmp_path_factory.mktemp("ctx") / "iris_function"
    options = BuildOptions(notebook=NOTEBOOK, output=target, docker=False, quiet=True)
    return pipeline.build(options).context


@pytest.fixture(scope="module")
def context(host_trained: BuildContext) -> Path:
    return host_trained.path


@pytest.fixture(scope="module")
def built(context: Path, docker_engine: Any) -> ImageResult:
    return image.build_image(context, tags=["nb2prod-test/iris:latest"], engine=docker_engine)


def card_of(context: Path) -> dict[str, Any]:
    return dict(json.loads((context / "model" / "model_card.json").read_text()))


def smoke_test(image_ref: str, directory: Path, **options: Any) -> SmokeReport:
    """What ``nb2prod build`` does after the image: run the checks, raise for a failure."""
    layout = BuildDir(directory)
    report = smoke.run_smoke_checks(image_ref, layout.card(), layout.golden(), **options)
    smoke.raise_for_report(report, image_ref)
    return report


def test_image_is_tagged_labelled_and_runs_as_non_root(
    built: ImageResult, context: Path, docker_engine: Any
) -> None:
    card = card_of(context)
    assert built.tags == (f"iris_function:{card['model_version']}", "nb2prod-test/iris:latest")
    attrs = docker_engine.client.api.inspect_image(built.image_id)
    config = attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["python", "-m", "nb2prod_runtime.serve"]
    assert "PORT=8080" in config["Env"] and config["Healthcheck"]["Test"][0] == "CMD"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == card["model_version"]
    assert labels["io.nb2prod.notebook"] == "iris_function.ipynb"
    assert labels["io.nb2prod.notebook.sha256"] == card["notebook"]["sha256"]
    record = json.loads((context / ".nb2prod" / "image.json").read_text())
    assert record["image_id"] == built.image_id and record["size_bytes"] == built.size_bytes
    assert built.log_path.read_text().count("Step ") >= 20


def test_container_passes_every_smoke_check(built: ImageResult, context: Path) -> None:
    lines: list[str] = []
    report = smoke_test(built.tags[0], context, progress=lines.append)
    assert report.ok, smoke.report_to_dict(report)
    assert [c.name for c in report.checks] == list(smoke.CHECK_NAMES)
    assert report.ready_seconds is not None and report.ready_seconds < 20
    assert any("sigterm" in line for line in lines)


def test_editing_the_predict_cell_reuses_the_dependency_layers(
    built: ImageResult, tmp_path: Path, docker_engine: Any
) -> None:
    """Only the predict cell changes: pip install and the venv copy come from the cache."""
    notebook = tmp_path / NOTEBOOK.name
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "predict" in c.get("metadata", {}).get("tags", []))
    cell.source += "\n# a predict-cell change\n"
    nbformat.write(nb, notebook)
    edited = tmp_path / "iris_function"
    pipeline.build(BuildOptions(notebook=notebook, output=edited, docker=False, quiet=True))
    rebuilt = image.build_image(edited, engine=docker_engine, quiet=True)
    cached = image.cached_steps(rebuilt.log_path.read_text())
    assert any("RUN pip install" in step for step in cached), cached
    assert any("COPY --from=builder /opt/venv" in step for step in cached), cached
    assert rebuilt.image_id != built.image_id


def test_parity_guard_fails_with_rows_side_by_side(
    built: ImageResult, context: Path, tmp_path: Path, docker_engine: Any
) -> None:
    """A container that answers differently from the golden set fails the smoke test.

    The golden set stays out of the image, so the same image meets a changed expectation.
    """
    skewed = tmp_path / "skewed"
    shutil.copytree(context, skewed)
    golden_path = BuildDir(skewed).golden_path
    golden = json.loads(golden_path.read_text())
    expected = list(golden["predictions"])
    swapped = {"setosa": "versicolor", "versicolor": "virginica", "virginica": "setosa"}
    golden["predictions"][0] = swapped[expected[0]]
    golden_path.write_text(json.dumps(golden))
    with pytest.raises(ParityError) as caught:
        smoke_test(built.tags[0], skewed)
    message = str(caught.value)
    assert "1 of 8 golden rows differ" in message
    assert "expected (notebook)" in message and "got (service)" in message
    row = next(line for line in message.splitlines() if line.strip().startswith("0 "))
    assert swapped[expected[0]] in row and expected[0] in row


def test_training_in_a_container_matches_the_host(
    built: ImageResult, host_trained: BuildContext, tmp_path: Path, docker_engine: Any
) -> None:
    context = host_trained.path
    in_container = tmp_path / "iris_function"
    shutil.copytree(context, in_container)
    shutil.rmtree(in_container / "model")
    lines: list[str] = []
    copy = replace(host_trained, path=in_container)
    model_dir = train(copy, lines.append, engine=docker_engine).model_dir
    card, host_card = card_of(in_container), card_of(context)
    assert card["trained_in"] == "container" and host_card["trained_in"] == "host"
    assert BuildDir(in_container).golden() == BuildDir(context).golden()
    assert card["metrics"] == pytest.approx(host_card["metrics"])
    assert all(p.stat().st_uid == os.getuid() for p in model_dir.rglob("*"))
    assert (in_container / ".nb2prod" / "train.log").is_file()
    assert any(line.startswith("Step ") for line in lines)


def test_generated_pytest_docker_suite_passes(built: ImageResult, context: Path) -> None:
    """The build context's own suite (pytest-docker + docker-compose) runs the same checks."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(context / "tests"), "-q", "-p", "no:cacheprovider"],
        cwd=context,
        env={**os.environ, "NB2PROD_IMAGE": built.tags[0]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout


def test_training_in_a_container_reads_data_relative_to_the_notebook(
    make_notebook: Any, tmp_path: Path, docker_engine: Any
) -> None:
    """``data/train.csv`` resolves against the notebook's folder, which is mounted read-only."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    rows = "\n".join(f"{x},{x % 3 == 0:d}" for x in range(60))
    (folder / "data" / "train.csv").write_text("x,y\n" + rows + "\n")
    notebook = make_notebook(
        [
            ("import pandas as pd\nfrom sklearn.tree import DecisionTreeClassifier", None),
            ("df = pd.read_csv('data/train.csv')", ["load"]),
            ("def preprocess(df):\n    return df[['x']]", ["preprocess"]),
            (
                "features = preprocess(df)\n"
                "model = DecisionTreeClassifier(random_state=0).fit(features, df['y'])",
                ["train"],
            ),
            ("def predict(model, features):\n    return model.predict(features)", ["predict"]),
        ],
        name="relative_data",
        folder=folder,
    )
    generated = pipeline.generate(notebook, tmp_path / "build" / "relative_data")
    train(generated, engine=docker_engine)
    card = card_of(generated.path)
    assert card["trained_in"] == "container"
    assert card["data_fingerprint"]["rows"] == 60
    assert not (folder / "model").exists()  # nothing written next to the notebook


def test_a_container_that_dies_fails_the_smoke_test_at_once(
    tmp_path: Path, docker_engine: Any
) -> None:
    (tmp_path / "Dockerfile").write_text(
        'FROM python:3.11-slim\nCMD ["python", "-c", "raise SystemExit(\'boom: no model\')"]\n'
    )
    docker_engine.client.images.build(path=str(tmp_path), tag="nb2prod-test/dies:1", pull=False)
    empty = GoldenSet(rows=[], predictions=[])
    report = smoke.run_smoke_checks("nb2prod-test/dies:1", make_card(), empty)
    (ready,) = report.checks
    assert not ready.passed and ready.seconds < 10
    assert "boom: no model" in ready.detail
    assert not docker_engine.client.containers.list(
        all=True, filters={"ancestor": "nb2prod-test/dies:1"}
    )
