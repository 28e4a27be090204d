"""The container contract, checked against the docker-compose service.

``nb2prod build`` runs these same checks (nb2prod_runtime/contract_checks.py) on the
container it just built, so a pass here and a pass there mean the same thing.
"""

from __future__ import annotations

import subprocess
from types import ModuleType
from typing import Any

SERVICE = "model"


def test_golden_rows_match_the_notebook(
    service_url: str,
    model_card: dict[str, Any],
    golden: dict[str, Any],
    contract_checks: ModuleType,
) -> None:
    contract_checks.check_golden(service_url, model_card, golden)


def test_malformed_requests_get_a_typed_422(
    service_url: str,
    model_card: dict[str, Any],
    golden: dict[str, Any],
    contract_checks: ModuleType,
) -> None:
    contract_checks.check_typed_422(service_url, model_card, golden)


def test_metrics_and_healthz_answer(service_url: str, contract_checks: ModuleType) -> None:
    contract_checks.check_metrics(service_url)
    contract_checks.check_healthz(service_url)


def test_sigterm_lets_the_request_in_flight_finish(
    service_url: str,
    golden: dict[str, Any],
    contract_checks: ModuleType,
    compose_args: list[str],
) -> None:
    """Last on purpose: it stops the service."""

    def send_sigterm() -> None:
        subprocess.run([*compose_args, "kill", "-s", "SIGTERM", SERVICE], check=True)

    def wait_for_exit(timeout: float) -> int | None:
        ids = subprocess.run(
            [*compose_args, "ps", "-q", SERVICE], check=True, capture_output=True, text=True
        ).stdout.split()
        try:
            done = subprocess.run(
                ["docker", "wait", *ids],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
        except subprocess.TimeoutExpired:
            return None
        return int(done.stdout.split()[0])

    contract_checks.check_graceful_shutdown(service_url, golden, send_sigterm, wait_for_exit)
