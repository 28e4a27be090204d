"""Stage: a built image -> SmokeReport, the proof that the container works.

Cog's shape (``pkg/predict/predictor.go``): start the container detached on 127.0.0.1
with a random host port and ``PORT`` set to something other than 8080, poll ``/readyz``
with a short timeout while checking on every poll that the container still runs, run
the checks, and always remove the container. The checks themselves live in
``nb2prod/runtime/contract_checks.py``, which the generated pytest-docker suite runs too.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from ..engine import docker_client
from ..errors import ParityError, SmokeTestError
from ..models import SmokeCheck, SmokeReport
from ..runtime import contract_checks as checks

Progress = Callable[[str], None]

#: The port the service is told to listen on: not 8080, so the $PORT contract is exercised.
SMOKE_PORT = 9090
#: Cloud Run's grace period between SIGTERM and SIGKILL.
GRACE_SECONDS = 10.0
#: Names of the checks, in the order they run.
CHECK_NAMES = ("ready", "golden parity", "typed 422", "metrics", "healthz", "sigterm shutdown")


class Container(Protocol):
    """A started container."""

    host_port: int

    def is_running(self) -> bool:
        """True while the container's process runs."""
        ...

    def logs(self) -> str:
        """Everything the container wrote so far."""
        ...

    def send_signal(self, signal: str) -> None:
        """Send a signal (e.g. ``SIGTERM``) to the container's PID 1."""
        ...

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` seconds."""
        ...

    def remove(self) -> None:
        """Stop and remove the container, whatever its state."""
        ...


class ContainerEngine(Protocol):
    """The slice of Docker the smoke test needs; ``DockerContainers`` implements it."""

    def start(self, image: str, *, port: int, environment: Mapping[str, str]) -> Container:
        """Start ``image`` detached, read-only with a tmpfs /tmp, ``port`` on 127.0.0.1:random."""
        ...


class _SDKContainer:
    """``Container`` on a docker SDK container object."""

    def __init__(self, container: Any, port: int) -> None:
        self.container = container
        container.reload()
        # a container that died at once has no port; the first poll reports it with its logs
        bindings = (container.attrs["NetworkSettings"].get("Ports") or {}).get(f"{port}/tcp")
        self.host_port = int(bindings[0]["HostPort"]) if bindings else 0

    def is_running(self) -> bool:
        self.container.reload()
        return bool(self.container.status in ("created", "running"))

    def logs(self) -> str:
        return bytes(self.container.logs()).decode("utf-8", "replace")

    def send_signal(self, signal: str) -> None:
        self.container.kill(signal=signal)

    def wait(self, timeout: float) -> int | None:
        import requests

        try:
            return int(self.container.wait(timeout=max(timeout, 0.1))["StatusCode"])
        except requests.exceptions.RequestException:  # read timeout: still running
            return None

    def remove(self) -> None:
        self.container.remove(force=True)


class DockerContainers:
    """``ContainerEngine`` on the docker SDK."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def start(self, image: str, *, port: int, environment: Mapping[str, str]) -> Container:
        container = self.client.containers.run(
            image,
            detach=True,
            environment=dict(environment),
            ports={f"{port}/tcp": ("127.0.0.1", None)},  # None: the engine picks a free port
            read_only=True,
            tmpfs={"/tmp": "rw,size=64m"},  # noqa: S108 - the container's own /tmp
            labels={"io.nb2prod.role": "smoke-test"},
        )
        try:
            return _SDKContainer(container, port)
        except Exception:
            container.remove(force=True)
            raise


def connect(timeout: int = 60) -> DockerContainers:
    """The engine ``DOCKER_HOST`` (or the default socket) points at; it must answer a ping."""
    return DockerContainers(docker_client(timeout))


def run_smoke_checks(
    image: str,
    card: Mapping[str, Any],
    *,
    engine: ContainerEngine | None = None,
    port: int = SMOKE_PORT,
    ready_timeout: float = 60.0,
    progress: Progress | None = None,
) -> SmokeReport:
    """Start ``image`` and run every check; failures are recorded, not raised.

    Checks after a failed ``ready`` are not run (the container died or never answered).
    Raises only DockerUnavailableError, or SmokeTestError when the container cannot start.
    """
    engine = engine or connect()
    card = dict(card)
    say = progress or (lambda line: None)
    results: list[SmokeCheck] = []
    started = time.monotonic()
    try:
        container = engine.start(image, port=port, environment={"PORT": str(port)})
    except Exception as err:
        raise SmokeTestError(f"could not start a container from {image}: {err}") from err
    try:
        url = f"http://127.0.0.1:{container.host_port}"
        try:
            checks.wait_until_ready(url, timeout=ready_timeout, still_running=container.is_running)
        except checks.ContractCheckFailed as err:
            detail = f"{err}\n--- container logs ---\n{container.logs()[-4000:]}"
            results.append(SmokeCheck("ready", False, time.monotonic() - started, detail))
            say(f"FAIL ready: {err}")
            return SmokeReport(checks=tuple(results))
        ready_seconds = time.monotonic() - started
        results.append(SmokeCheck("ready", True, ready_seconds, f"{url}, PORT={port}"))
        say(f"ok   ready in {ready_seconds:.2f} s")

        steps: list[tuple[str, Callable[[], object]]] = [
            ("golden parity", lambda: f"{checks.check_golden(url, card)} rows match"),
            ("typed 422", lambda: f"{checks.check_typed_422(url, card)} malformed requests"),
            ("metrics", lambda: checks.check_metrics(url)),
            ("healthz", lambda: checks.check_healthz(url)),
            (
                "sigterm shutdown",
                lambda: "exited 0 after {:.2f} s".format(
                    checks.check_graceful_shutdown(
                        url, card, lambda: container.send_signal("SIGTERM"), container.wait
                    )
                ),
            ),
        ]
        for name, step in steps:
            results.append(_run_check(name, step, container))
            last = results[-1]
            say(f"{'ok  ' if last.passed else 'FAIL'} {name} ({last.seconds:.2f} s)")
        return SmokeReport(checks=tuple(results), ready_seconds=ready_seconds)
    finally:
        container.remove()


def _run_check(name: str, step: Callable[[], object], container: Container) -> SmokeCheck:
    """Run one check, timing it; a failure's detail gets the logs if the container stopped."""
    began = time.monotonic()
    try:
        outcome = step()
    except Exception as err:  # a failed check, a refused connection, a malformed answer
        detail = str(err) or type(err).__name__
        if name == "sigterm shutdown" or not container.is_running():
            detail += f"\n--- container logs ---\n{container.logs()[-4000:]}"
        return SmokeCheck(name, False, time.monotonic() - began, detail)
    return SmokeCheck(name, True, time.monotonic() - began, "" if outcome is None else str(outcome))


def raise_for_report(report: SmokeReport, image: str) -> None:
    """Raise ParityError if the golden check failed, else SmokeTestError for the first failure."""
    failed = [check for check in report.checks if not check.passed]
    if not failed:
        return
    parity = next((c for c in failed if c.name == "golden parity"), None)
    if parity is not None:
        raise ParityError(
            f"The container from {image} does not reproduce the notebook's golden predictions.\n"
            + parity.detail,
            hint="Training and serving disagree: check library versions in requirements-serving"
            ".txt and any randomness or state the predict code does not get from the model.",
        )
    first = failed[0]
    raise SmokeTestError(
        f"Smoke check '{first.name}' failed for {image}: {first.detail}",
        hint=f"Reproduce with: docker run --rm -p 127.0.0.1:8080:8080 --read-only "
        f"--tmpfs /tmp {image}",
    )


def smoke_test(
    image: str,
    card: Mapping[str, Any],
    *,
    engine: ContainerEngine | None = None,
    port: int = SMOKE_PORT,
    ready_timeout: float = 60.0,
    progress: Progress | None = None,
) -> SmokeReport:
    """``run_smoke_checks`` then ``raise_for_report``: the report, or ParityError/SmokeTestError."""
    report = run_smoke_checks(
        image, card, engine=engine, port=port, ready_timeout=ready_timeout, progress=progress
    )
    raise_for_report(report, image)
    return report


def report_to_dict(report: SmokeReport) -> dict[str, Any]:
    """The JSON summary of a smoke run (for ``--json`` and ``.nb2prod/smoke.json``)."""
    return {
        "ok": report.ok,
        "ready_seconds": None if report.ready_seconds is None else round(report.ready_seconds, 3),
        "checks": [
            {"name": c.name, "passed": c.passed, "seconds": round(c.seconds, 3), "detail": c.detail}
            for c in report.checks
        ],
    }


def write_report_json(report: SmokeReport, path: Path) -> None:
    """Write ``report_to_dict`` as JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report_to_dict(report), indent=2) + "\n")


def report_to_junit(report: SmokeReport, path: Path, suite: str = "nb2prod.smoke") -> None:
    """Write the smoke checks as JUnit XML (one testcase per check) for CI dashboards."""
    failures = sum(not c.passed for c in report.checks)
    root = ET.Element("testsuites")
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(report.checks)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{sum(c.seconds for c in report.checks):.3f}",
    )
    for check in report.checks:
        case = ET.SubElement(
            node, "testcase", classname=suite, name=check.name, time=f"{check.seconds:.3f}"
        )
        if not check.passed:
            failure = ET.SubElement(case, "failure", message=check.detail.splitlines()[0][:200])
            failure.text = check.detail
        elif check.detail:
            ET.SubElement(case, "system-out").text = check.detail
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
