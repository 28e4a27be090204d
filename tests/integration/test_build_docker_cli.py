"""`nb2prod build` all the way, as a CI step runs it: every example to a smoke-tested image.

Each example is built through the CLI (training in a container), then run with our own
`docker run` the way Cloud Run would (read-only root, a writable /tmp, $PORT set, no
root), and its answers are compared with the notebook itself executed in a Jupyter
kernel (tests/reference.py), not with nb2prod's own output.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import reference
from helpers import (
    EXAMPLES,
    assert_same_predictions,
    build_example,
    example_notebook,
    free_port,
    run_cli_process,
    write_notebook,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOCKER = "/usr/bin/docker"


def post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, docker_engine: Any) -> dict[str, Path]:
    """Each example built with `nb2prod build` (Docker), with --json and --junit reports."""
    out = tmp_path_factory.mktemp("builds")
    done: dict[str, Path] = {}
    for name in EXAMPLES:
        build_example(
            name,
            out / name,
            "--tag",
            f"nb2prod-ci/{name}:latest",
            "--json",
            str(out / f"{name}.json"),
            "--junit",
            str(out / f"{name}.xml"),
            "--quiet",
        )
        done[name] = out / name
    return done


@pytest.mark.parametrize("name", EXAMPLES)
def test_build_reports_a_tagged_smoke_tested_image(name: str, builds: dict[str, Path]) -> None:
    directory = builds[name]
    card = json.loads((directory / "model" / "model_card.json").read_text())
    summary = json.loads((directory.parent / f"{name}.json").read_text())
    assert summary["ok"] is True
    assert summary["model_version"] == card["model_version"]
    assert card["trained_in"] == "container"
    expected_tag = f"{name}:{card['model_version']}"
    assert summary["image"]["tags"] == [expected_tag, f"nb2prod-ci/{name}:latest"]
    assert summary["image"]["size_bytes"] > 0
    checks = {check["name"]: check["passed"] for check in summary["smoke"]["checks"]}
    assert checks and all(checks.values()), checks
    assert {"train", "image", "smoke"} <= set(summary["timings"])
    suite = ET.parse(directory.parent / f"{name}.xml").getroot()
    cases = suite.iter("testcase")
    assert {case.get("name") for case in cases} >= {"golden parity", "sigterm shutdown"}
    assert not list(suite.iter("failure"))
    inspect = json.loads(
        subprocess.run(
            [DOCKER, "image", "inspect", expected_tag], capture_output=True, check=True
        ).stdout
    )[0]
    assert inspect["Config"]["User"].split(":")[0] == "10001"
    labels = inspect["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == card["model_version"]
    assert labels["io.nb2prod.notebook.sha256"] == card["notebook"]["sha256"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_image_holds_no_training_rows(name: str, builds: dict[str, Path]) -> None:
    """The golden set (raw training rows) stays in the build dir for the smoke test."""
    card = json.loads((builds[name] / "model" / "model_card.json").read_text())
    listing = subprocess.run(
        [DOCKER, "run", "--rm", f"{name}:{card['model_version']}", "ls", "-a", "model"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(listing) == [".", "..", "model_card.json", "state.pkl"]
    assert (builds[name] / "model" / "golden.json").is_file()


@pytest.mark.parametrize("name", EXAMPLES)
def test_our_own_docker_run_answers_like_the_notebook(name: str, builds: dict[str, Path]) -> None:
    """Read-only root, writable /tmp, PORT=7070, non-root: predictions match the kernel's."""
    card = json.loads((builds[name] / "model" / "model_card.json").read_text())
    port = free_port()
    container = subprocess.run(
        [
            DOCKER,
            "run",
            "-d",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "-e",
            "PORT=7070",
            "-p",
            f"127.0.0.1:{port}:7070",
            f"{name}:{card['model_version']}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=0.5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "container never became ready"
            time.sleep(0.2)
        rows = reference.example_rows(name, 5)
        expected = reference.reference_predictions(example_notebook(name), rows)
        status, body = post(f"{base}/predict", {"instances": rows})
        assert status == 200, body
        assert body["model_version"] == card["model_version"]
        assert_same_predictions(expected, body["predictions"])
        status, body = post(f"{base}/predict", {"instances": [{"nope": 1}]})
        assert status == 422
    finally:
        subprocess.run([DOCKER, "rm", "-f", container], capture_output=True, check=False)


def test_build_fails_with_rows_side_by_side_when_the_container_answers_differently(
    tmp_path: Path, docker_engine: Any
) -> None:
    """The skew guard, from notebook to container: code that behaves differently inside a
    container (here: it looks at which Python runs it) passes training and the in-process check on
    the host, and must then fail `build` at the container's parity check, exit 6."""
    cells = [
        (
            "import sys\nfrom sklearn.datasets import load_iris\n"
            "from sklearn.tree import DecisionTreeClassifier",
            [],
        ),
        ("X, y = load_iris(return_X_y=True, as_frame=True)", ["load"]),
        ("model = DecisionTreeClassifier(random_state=0).fit(X, y)", ["train"]),
        (
            "def predict(model, features):\n"
            "    shift = 1 if sys.prefix == '/opt/venv' else 0\n"
            "    return (model.predict(features) + shift) % 3\n",
            ["predict"],
        ),
        ("predict(model, X.head())", []),
    ]
    path = write_notebook(tmp_path / "skewed.ipynb", cells)
    result = run_cli_process("build", path, "-o", tmp_path / "out", "--train-on-host", timeout=1800)
    assert result.returncode == 6, result.stderr
    assert "Traceback" not in result.stderr
    assert "expected (notebook)" in result.stderr and "got (service)" in result.stderr
    # A build that fails its smoke test leaves no build directory and no staging behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skewed.ipynb"]
