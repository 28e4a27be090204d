"""MLflow tracking against a real tracking server: ``build --mlflow``, MLFLOW_TRACKING_URI,
``nb2prod track``, and a server that does not answer.

The server is ``mlflow server`` with a sqlite backend and served artifacts, started once for
the module on a free loopback port. The example notebook is built for real (``--no-docker``)
in fresh processes, as a user runs nb2prod. What the server holds is then read back with
MLflow's own client, independently of nb2prod's code, and compared with what the test
knows on its own: the parameters from the notebook's parameters cell (plus the -p override),
the metrics and model version from the model card file, the notebook's sha256 from its bytes,
and the build directory's files from disk.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from fake_build import make_card, write_model_dir
from helpers import error_lines, example_notebook, free_port, run_cli_process

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (pip install 'nb2prod[mlflow]')")

NOTEBOOK = "iris_function"
#: No usage reports from MLflow's client or server: the tests run offline.
QUIET_MLFLOW = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


@dataclass(frozen=True)
class Built:
    """One ``nb2prod build`` run: its directory and how the process ended."""

    out: Path
    returncode: int
    stdout: str
    stderr: str


class Builds:
    """The module's builds, run as users run them (``python -m nb2prod build``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}

    def start(self, name: str, *options: str, env: dict[str, str] | None = None) -> None:
        """Start building the example into ROOT/NAME/build (output to files: no pipe fills)."""
        environment = {**os.environ, **QUIET_MLFLOW}
        environment.pop("MLFLOW_TRACKING_URI", None)
        environment.update(env or {})
        out = self.root / name / "build"
        out.parent.mkdir()
        command = [sys.executable, "-m", "nb2prod", "build", str(example_notebook(NOTEBOOK))]
        with (
            (out.parent / "stdout").open("wb") as stdout,
            (out.parent / "stderr").open("wb") as stderr,
        ):
            process = subprocess.Popen(
                [*command, "--no-docker", "-o", str(out), *options],
                stdout=stdout,
                stderr=stderr,
                env=environment,
            )
        self.running[name] = (out, process)

    def finish(self) -> dict[str, Built]:
        done = {}
        for name, (out, process) in self.running.items():
            code = process.wait(timeout=600)
            stdout, stderr = ((out.parent / f).read_text() for f in ("stdout", "stderr"))
            done[name] = Built(out, code, stdout, stderr)
        return done


@dataclass(frozen=True)
class Server:
    uri: str
    log: Path
    builds: dict[str, Built]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``mlflow server`` on sqlite with served artifacts, and the module's three builds.

    The build that must fail runs while the server starts (it needs none); the two that log
    start once it answers, side by side. The server is stopped (its whole group) at the end.
    """
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
        *("--artifacts-destination", str(root / "artifacts"), "--serve-artifacts"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=root,
            env={**os.environ, **QUIET_MLFLOW},
            start_new_session=True,  # its workers are stopped with it
        )
    builds = Builds(root)
    try:
        builds.start("unreachable", "--mlflow", f"http://127.0.0.1:{free_port()}")
        wait_for_health(uri, process, log)
        builds.start("first", "-p", "C=0.5", "--mlflow", uri, "--json", str(root / "first.json"))
        builds.start("second", env={"MLFLOW_TRACKING_URI": uri})
        yield Server(uri, log, builds.finish())
    finally:
        for _, running in builds.running.values():
            running.kill()
        # Its state is a throwaway sqlite file: no need to wait for a graceful stop, which
        # uvicorn's worker takes seconds over.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_health(uri: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180  # a loaded two-core machine takes a minute to start it
    while True:
        assert process.poll() is None, f"mlflow server exited:\n{log.read_text()}"
        try:
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"mlflow server not up:\n{log.read_text()}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    """MLflow's own client for this server, made by the test (not by nb2prod)."""
    return mlflow.MlflowClient(tracking_uri=server.uri)


def built(server: Server, name: str, code: int = 0) -> Built:
    """The build NAME, asserted to have exited with ``code``."""
    done = server.builds[name]
    assert done.returncode == code, f"{done.stdout}\n{done.stderr}\n{server.log.read_text()}"
    return done


def notebook_parameters(overrides: dict[str, Any]) -> dict[str, str]:
    """The parameters cell's literals, read with nbformat and ast, overrides applied, as the
    strings MLflow stores (``str(value)``, as ``mlflow.log_params`` does)."""
    notebook = nbformat.read(example_notebook(NOTEBOOK), as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    values = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign)
    }
    return {name: str(value) for name, value in {**values, **overrides}.items()}


def card_of(build_dir: Path) -> dict[str, Any]:
    return json.loads((build_dir / "model" / "model_card.json").read_text())


def finite_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def run_of(client: Any, build_dir: Path) -> Any:
    """The run the build recorded, fetched from the server by its id."""
    record = json.loads((build_dir / ".nb2prod" / "mlflow.json").read_text())
    return client.get_run(record["run_id"])


def test_build_logs_params_metrics_and_tags(server: Server, client: Any) -> None:
    first = built(server, "first")
    run = run_of(client, first.out)
    card = card_of(first.out)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == NOTEBOOK
    assert run.data.params == notebook_parameters({"C": 0.5})
    assert run.data.metrics == finite_numbers(card["metrics"])
    assert run.data.metrics  # the example's evaluate cell binds accuracy and f1_macro
    sha256 = hashlib.sha256(example_notebook(NOTEBOOK).read_bytes()).hexdigest()
    assert run.data.tags["nb2prod.notebook_sha256"] == sha256
    assert run.data.tags["nb2prod.model_version"] == card["model_version"]
    # Progress on stderr, as the other steps; stdout keeps only the summary line.
    assert "[4/4] logging the run to MLflow" in first.stderr
    assert run.info.run_id in first.stderr
    assert first.stdout.startswith("built ") and len(first.stdout.splitlines()) == 1
    summary = json.loads((first.out.parent.parent / "first.json").read_text())
    assert summary["mlflow"]["run_id"] == run.info.run_id


def test_artifacts_are_the_card_and_the_build_directory(
    server: Server, client: Any, tmp_path: Path
) -> None:
    out = built(server, "first").out
    run = run_of(client, out)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert top == {"model_card.json", "build"}
    fetched = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="", dst_path=str(tmp_path), tracking_uri=server.uri
    )
    fetched = Path(fetched)
    assert json.loads((fetched / "model_card.json").read_text()) == card_of(out)
    logged, local = files_under(fetched / "build"), files_under(out)
    # The tracking record is written once the run is logged, so it cannot be in it.
    assert local.pop(".nb2prod/mlflow.json")
    assert logged == local
    # MLflow stays out of what serves: the image installs these files' pins only.
    for pins in ("requirements.txt", "requirements-serving.txt"):
        assert "mlflow" not in (out / pins).read_text().lower()


def test_each_build_registers_a_version_of_the_notebooks_model(server: Server, client: Any) -> None:
    """Two builds (one with --mlflow, one with MLFLOW_TRACKING_URI): versions 1 and 2."""
    first, second = built(server, "first"), built(server, "second")
    assert client.get_registered_model(NOTEBOOK).name == NOTEBOOK
    registered = {}
    for build in (first, second):
        run = run_of(client, build.out)
        (version,) = client.search_model_versions(
            f"name = '{NOTEBOOK}' and run_id = '{run.info.run_id}'"
        )
        assert version.tags["nb2prod_model_version"] == card_of(build.out)["model_version"]
        registered[build.out] = version.version
    assert sorted(registered.values()) == ["1", "2"]
    # The second build used the notebook's own parameters: the override did not leak.
    assert run_of(client, second.out).data.params == notebook_parameters({})
    assert card_of(second.out)["model_version"] != card_of(first.out)["model_version"]


def test_an_unreachable_server_exits_20_and_keeps_the_build(server: Server, client: Any) -> None:
    kept = built(server, "unreachable", 20)
    (line,) = error_lines(kept.stderr)
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:" in line
    assert f"The build directory {kept.out} is complete and kept" in line
    assert f"Hint: Once the server answers, log it again: nb2prod track {kept.out}" in kept.stderr
    card = card_of(kept.out)  # the build directory is there, whole
    assert (kept.out / "model" / "state.pkl").is_file() and (kept.out / "serving.py").is_file()
    assert not (kept.out / ".nb2prod" / "mlflow.json").exists()

    # The retry the hint names logs it once the server answers.
    retried = run_cli_process(
        "track", kept.out, "--mlflow", server.uri, "--json", env={**os.environ, **QUIET_MLFLOW}
    )
    assert retried.returncode == 0, retried.stderr
    record = json.loads(retried.stdout)
    version = client.get_model_version(NOTEBOOK, record["registered_version"])
    assert version.tags["nb2prod_model_version"] == card["model_version"]
    assert version.version == "3"
    assert client.get_run(record["run_id"]).data.metrics == finite_numbers(card["metrics"])


class Refusing(BaseHTTPRequestHandler):
    """A tracking server behind a proxy that denies this client: 403 with MLflow's error body."""

    def _refuse(self) -> None:
        body = json.dumps(
            {"error_code": "PERMISSION_DENIED", "message": "User 'ci' lacks CAN_EDIT"}
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = _refuse  # noqa: N815 - http.server's names

    def log_message(self, *_: Any) -> None:
        return None


def test_a_refusing_server_exits_20_with_its_reason(tmp_path: Path) -> None:
    out = tmp_path / "build"
    write_model_dir(out, make_card(name=NOTEBOOK, metrics={"accuracy": 0.5}))
    with ThreadingHTTPServer(("127.0.0.1", 0), Refusing) as refusing:
        threading.Thread(target=refusing.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{refusing.server_address[1]}"
        result = run_cli_process("track", out, "--mlflow", uri, env={**os.environ, **QUIET_MLFLOW})
        refusing.shutdown()
    assert result.returncode == 20, result.stderr
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"Error: MLflow at {uri} refused:")
    assert "lacks CAN_EDIT" in line and "complete and kept" in line
    assert f"then log it again: nb2prod track {out} --mlflow {uri}" in result.stderr
    assert not (out / ".nb2prod" / "mlflow.json").exists()


# MLflow's sqlite store uses a SQLAlchemy loader option that SQLAlchemy 2.1 deprecates.
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_no_tracking_state_is_left_between_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds tracked in one process, to two stores: each run lands only where it was
    sent, and MLflow's process-wide tracking URI and active run are as they were."""
    from nb2prod.models import TrackOptions
    from nb2prod.track import track

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps its artifacts in ./mlruns
    before = mlflow.get_tracking_uri()
    stores = {name: f"sqlite:///{tmp_path / name}.db" for name in ("alpha", "beta")}
    for name, uri in stores.items():
        write_model_dir(tmp_path / name, make_card(name=name, metrics={"accuracy": 0.5}))
        track(TrackOptions(tmp_path / name, uri))
    assert mlflow.get_tracking_uri() == before
    assert mlflow.active_run() is None
    for name, uri in stores.items():
        registered = mlflow.MlflowClient(tracking_uri=uri).search_registered_models()
        assert [model.name for model in registered] == [name]
