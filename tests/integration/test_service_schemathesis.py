"""schemathesis against the OpenAPI document of every example's service, on a real uvicorn.

Every example notebook is built with ``nb2prod build --no-docker``; its service must pass the
checks below on the requests schemathesis generates from its own ``/openapi.json``: no 5xx,
only documented statuses and content types, bodies matching the documented schemas.

One warning is expected and not a defect: "Schema validation mismatch" for ``POST /feedback``.
The schema can say a ``request_id`` is a string, but only ids the service handed out exist, so
generated ids are (rightly) answered 404.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES, build_example
from service_server import Uvicorn

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
#: Examples per operation and phase: three services in about a minute and a half.
MAX_EXAMPLES = 15


@pytest.mark.parametrize("example", EXAMPLES)
def test_schemathesis_finds_no_failures(example: str, tmp_path: Path) -> None:
    build_dir = tmp_path / example
    build_example(example, build_dir, "--no-docker", "-q")
    server = Uvicorn(build_dir)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json"]
            + ["--checks", ",".join(CHECKS), "--max-examples", str(MAX_EXAMPLES)]
            # One worker: with several, hypothesis parses lambda sources in parallel threads,
            # which CPython 3.11's ast module reports as "recursion depth mismatch" errors.
            + ["--generation-deterministic", "--workers", "1"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,  # schemathesis keeps its example database in .schemathesis/ here
        )
    finally:
        server.stop()
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "passed" in report and "failed" not in report.split("SUMMARY")[-1], report
    warnings = report.split("WARNINGS")[1].split("SUMMARY")[0] if "WARNINGS" in report else ""
    assert all(
        "POST /feedback" in line for line in warnings.splitlines() if line.strip().startswith("- ")
    ), warnings
