"""What the unit and integration tests share: where things are, running the CLI, serving a build.

Imported as ``helpers`` (``from helpers import run_cli``), as ``fake_cloudrun`` and ``reference``
are: ``tests/`` has no ``__init__.py``, so pytest puts it on ``sys.path`` for the root
``conftest.py``. Nothing here imports nbclient, Docker or (until a test runs the CLI) nb2prod, so
a test pays only for what it uses.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nbformat
from click.testing import CliRunner

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
EXAMPLES_DIR = REPO_DIR / "example_notebooks"
GOLDEN_DIR = TESTS_DIR / "golden"
#: The example notebooks, as example_notebooks/make_examples.py writes them.
EXAMPLES = ("iris_function", "wine_script", "diabetes_regression")


#: What GET /metadata may show of a model card (the public part: no parameters, paths or data).
PUBLIC_CARD_FIELDS = frozenset(
    {
        "name",
        "model_version",
        "nb2prod_version",
        "trained_at",
        "metrics",
        "output",
        "notebook",
        "input_schema",
    }
)


def example_notebook(name: str) -> Path:
    """The path of example notebook ``name`` (one of EXAMPLES)."""
    return EXAMPLES_DIR / f"{name}.ipynb"


PYTHON_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def notebook_node(
    cells: Iterable[Any],
    kernelspec: Mapping[str, Any] | None = PYTHON_KERNELSPEC,
    language_info: Mapping[str, Any] | None = None,
) -> nbformat.NotebookNode:
    """An nbformat 4 notebook from ``(source, tags)`` pairs or ready-made cells."""
    nb = nbformat.v4.new_notebook()
    if kernelspec is not None:
        nb.metadata["kernelspec"] = dict(kernelspec)
    if language_info is not None:
        nb.metadata["language_info"] = dict(language_info)
    built = []
    for cell in cells:
        if isinstance(cell, nbformat.NotebookNode):
            built.append(cell)
            continue
        source, tags = cell
        metadata = {"tags": list(tags)} if tags else {}
        built.append(nbformat.v4.new_code_cell(source, metadata=metadata))
    nb.cells = built
    return nb


def write_notebook(
    path: Path,
    cells: Iterable[Any],
    kernelspec: Mapping[str, Any] | None = PYTHON_KERNELSPEC,
    language_info: Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`notebook_node` of ``cells`` to ``path``, creating its folder; return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook_node(cells, kernelspec, language_info), path)
    return path


# --- the CLI -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    """How a CLI run ended; named like subprocess.CompletedProcess so tests read the same."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """The ``Error: ...`` lines on stderr (the CLI promises exactly one on failure)."""
        return error_lines(self.stderr)


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that start with ``Error:``."""
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def run_cli(
    *args: str | Path, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> CliResult:
    """``nb2prod ARGS`` in this process, through ``nb2prod.cli.main`` as the console script runs it.

    The same exit path as a real run (Nb2ProdError -> ``Error:`` line, hint, exit code; usage
    errors; ``--debug`` tracebacks), without a second of interpreter start-up per call. Not
    thread-safe: it swaps ``sys.stdout``/``sys.stderr``, ``os.environ`` and the working directory.
    """
    from nb2prod import cli  # imported here: the whole pipeline, which conftest need not load

    argv = [str(arg) for arg in args]
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _), contextlib.chdir(cwd or Path.cwd()):
        try:
            cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
        else:  # main() always ends with sys.exit; returning would be a bug worth seeing
            raise AssertionError(f"nb2prod.cli.main({argv}) returned instead of exiting")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return CliResult(tuple(argv), returncode, stdout, stderr)


def run_cli_process(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """``python -m nb2prod ARGS`` in a fresh interpreter: for where the process boundary matters
    (what reaches the real stderr, signals, builds that train and serve end to end)."""
    return subprocess.run(
        [sys.executable, "-m", "nb2prod", *(str(arg) for arg in args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else dict(env),
        timeout=timeout,
        check=False,
    )


def build_example(name: str, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``nb2prod build <example> -o OUT OPTIONS`` as a user runs it; fails the test if it fails."""
    result = run_cli_process("build", example_notebook(name), "-o", out, *options, timeout=1800)
    assert result.returncode == 0, f"build of {name} failed:\n{result.stdout}\n{result.stderr}"
    return result


# --- HTTP ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """``nb2prod serve DIR`` in a subprocess on a free loopback port, ready once constructed
    (``wait=False`` for a test that expects it never to become ready).

    ``readiness`` keeps what ``/readyz`` answered (a status, or "unreachable") before its 200, so
    a test can check that the service did not claim readiness before its model was loaded.
    """

    def __init__(
        self,
        build_dir: Path,
        log: Path,
        env: Mapping[str, str] | None = None,
        *,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.readiness: list[int | str] = []
        serve = ["serve", str(build_dir), "--port", str(self.port)]
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nb2prod", *serve],
                env={**os.environ, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        if wait:
            try:
                self.wait_until_ready(timeout)
            except BaseException:
                self.close()
                raise

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Poll ``/readyz`` until 200; fail at once if the server exited, or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"nb2prod serve exited:\n{self.log.read_text()}"
            try:
                status = httpx.get(f"{self.url}/readyz", timeout=2.0).status_code
            except httpx.TransportError:
                self.readiness.append("unreachable")
            else:
                if status == 200:
                    return
                self.readiness.append(status)
            assert time.monotonic() < deadline, (
                f"not ready after {timeout}s: {self.readiness[-5:]}\n{self.log.read_text()}"
            )
            time.sleep(0.05)

    def rss_bytes(self) -> int:
        """The server's resident memory now, from /proc (Linux)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def close(self) -> None:
        """Stop the server as a platform would (SIGTERM), killing it if it does not stop."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def assert_same_predictions(expected: list[Any], got: list[Any]) -> None:
    """Labels (strings, ints, bools) exactly; floats with 1e-6 relative tolerance."""
    assert len(got) == len(expected), (expected, got)
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if isinstance(want, list):
            assert isinstance(have, list), (index, want, have)
            assert_same_predictions(want, have)
        elif isinstance(want, float) or isinstance(have, float):
            assert isinstance(have, (int, float)) and not isinstance(have, bool), (index, have)
            assert math.isclose(have, want, rel_tol=1e-6, abs_tol=1e-12), (index, want, have)
        else:
            assert type(have) is type(want) and have == want, (index, want, have)


def assert_serves_like_the_notebook(
    server: ServeProcess, rows: list[Any], predictions: list[Any], one_row_requests: int
) -> None:
    """``server`` answers the notebook's own ``predictions`` for its ``rows``: all of them in one
    request, then the first ``one_row_requests`` one per request (statistics computed over the
    request's rows show up only there)."""

    def predict(client: httpx.Client, batch: list[Any]) -> list[Any]:
        response = client.post("/predict", json={"instances": batch})
        assert response.status_code == 200, response.text[:3000]
        answered: list[Any] = response.json()["predictions"]
        return answered

    with httpx.Client(base_url=server.url, timeout=120) as client:
        assert_same_predictions(predictions, predict(client, rows))
        pairs = list(zip(rows, predictions, strict=True))
        for index, (row, want) in enumerate(pairs[:one_row_requests]):
            try:
                assert_same_predictions([want], predict(client, [row]))
            except AssertionError as err:
                raise AssertionError(f"row {index} sent alone: {row}") from err


def assert_valid_github_workflow(path: Path) -> None:
    """``path`` validates against SchemaStore's GitHub workflow schema (check-jsonschema's
    vendored copy: offline)."""
    checked = subprocess.run(
        [Path(sys.executable).parent / "check-jsonschema", "--builtin-schema",
         "vendor.github-workflows", path],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
