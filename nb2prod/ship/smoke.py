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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine import Container, ContainerSpec, Engine, EngineError, connect
from ..errors import ParityError, SmokeTestError
from ..models import SmokeCheck, SmokeReport
from ..runtime import contract_checks as checks
from ..runtime.card import GoldenSet, ModelCard

Progress = Callable[[str], None]

#: The port the service is told to listen on: not 8080, so the $PORT contract is exercised.
SMOKE_PORT = 9090
#: Names of the checks, in the order they run.
CHECK_NAMES = ("ready", "golden parity", "typed 422", "metrics", "healthz", "sigterm shutdown")


def smoke_container(image: str, port: int) -> ContainerSpec:
    """The container the smoke test starts: as Cloud Run runs it, read-only with a tmpfs /tmp."""
    return ContainerSpec(
        image=image,
        # No prediction log: the checks send the golden rows (training rows), and a failed
        # check shows the container's logs.
        environment={"PORT": str(port), "NB2PROD_PREDICTION_LOG_SAMPLE": "0"},
        publish=(port,),
        read_only=True,
        tmpfs={"/tmp": "rw,size=64m"},  # noqa: S108 - the container's own /tmp
        labels={"io.nb2prod.role": "smoke-test"},
    )


def run_smoke_checks(
    image: str,
    card: ModelCard,
    golden: GoldenSet,
    *,
    engine: Engine | None = None,
    port: int = SMOKE_PORT,
    ready_timeout: float = 60.0,
    progress: Progress | None = None,
) -> SmokeReport:
    """Start ``image`` and run every check; failures are recorded, not raised.

    Checks after a failed ``ready`` are not run (the container died or never answered).
    Raises only DockerUnavailableError, or SmokeTestError when the container cannot start.
    """
    engine = engine or connect()
    say = progress or (lambda line: None)
    started = time.monotonic()
    try:
        container = engine.start(smoke_container(image, port))
    except EngineError as err:
        raise SmokeTestError(f"could not start a container from {image}: {err}") from err
    try:
        url = f"http://127.0.0.1:{container.host_port(port)}"
        try:
            checks.wait_until_ready(url, timeout=ready_timeout, still_running=container.is_running)
        except checks.ContractCheckFailed as err:
            detail = f"{err}\n--- container logs ---\n{container.logs()[-4000:]}"
            say(f"FAIL ready: {err}")
            return SmokeReport(
                checks=(SmokeCheck("ready", False, time.monotonic() - started, detail),)
            )
        ready_seconds = time.monotonic() - started
        results = [SmokeCheck("ready", True, ready_seconds, f"{url}, PORT={port}")]
        say(f"ok   ready in {ready_seconds:.2f} s")
        steps = _contract_steps(url, card.to_json(), golden.to_json(), container)
        for name, step in steps:
            results.append(_run_check(name, step, container))
            say(f"{'ok  ' if results[-1].passed else 'FAIL'} {name} ({results[-1].seconds:.2f} s)")
        return SmokeReport(checks=tuple(results), ready_seconds=ready_seconds)
    finally:
        container.remove()


def _contract_steps(
    url: str, card: dict[str, Any], golden: dict[str, Any], container: Container
) -> list[tuple[str, Callable[[], object]]]:
    """The checks after ``ready``, in ``CHECK_NAMES`` order; SIGTERM comes last as it ends it."""

    def shutdown() -> str:
        seconds = checks.check_graceful_shutdown(
            url, golden, lambda: container.kill("SIGTERM"), container.wait
        )
        return f"exited 0 after {seconds:.2f} s"

    return [
        ("golden parity", lambda: f"{checks.check_golden(url, card, golden)} rows match"),
        ("typed 422", lambda: f"{checks.check_typed_422(url, card, golden)} malformed requests"),
        ("metrics", lambda: checks.check_metrics(url)),
        ("healthz", lambda: checks.check_healthz(url)),
        ("sigterm shutdown", shutdown),
    ]


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
