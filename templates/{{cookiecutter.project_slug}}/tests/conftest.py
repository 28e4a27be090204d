"""pytest-docker fixtures for the generated service: ``pytest tests/`` from this folder.

The service runs from ../docker-compose.yml with the image in ``NB2PROD_IMAGE``,
which defaults to the image ``nb2prod build`` recorded in ../.nb2prod/image.json.
Set ``DOCKER_COMPOSE`` to ``docker compose`` to use Compose v2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BUILD_DIR = Path(__file__).resolve().parents[1]
SERVICE = "model"
CONTAINER_PORT = 9090


def _load_contract_checks() -> ModuleType:
    """Load the checks ``nb2prod build`` runs, by path: they need only the standard library."""
    path = BUILD_DIR / "nb2prod_runtime" / "contract_checks.py"
    spec = importlib.util.spec_from_file_location("nb2prod_contract_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _default_image() -> str:
    record = BUILD_DIR / ".nb2prod" / "image.json"
    if record.is_file():
        return str(json.loads(record.read_text())["tags"][0])
    pytest.fail("set NB2PROD_IMAGE to the image to test (none recorded in .nb2prod/image.json)")


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return os.environ.get("DOCKER_COMPOSE", "docker-compose")


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    if not os.environ.get("NB2PROD_IMAGE"):
        os.environ["NB2PROD_IMAGE"] = _default_image()
    return str(BUILD_DIR / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up -d"]  # the image is already built; Compose v1 has no --wait


@pytest.fixture(scope="session")
def contract_checks() -> ModuleType:
    """nb2prod_runtime/contract_checks.py: the checks ``nb2prod build`` runs too."""
    return _load_contract_checks()


@pytest.fixture(scope="session")
def compose_args(docker_compose_command: str, docker_compose_project_name: str) -> list[str]:
    """The compose command line for this project, to stop the service from a test."""
    return [
        *shlex.split(docker_compose_command),
        *("-f", str(BUILD_DIR / "docker-compose.yml"), "-p", docker_compose_project_name),
    ]


@pytest.fixture(scope="session")
def model_card() -> dict[str, Any]:
    """The card the image was built with: schema, model version."""
    return dict(json.loads((BUILD_DIR / "model" / "model_card.json").read_text()))


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    """Training rows and the notebook's own predictions for them (kept out of the image)."""
    return dict(json.loads((BUILD_DIR / "model" / "golden.json").read_text()))


@pytest.fixture(scope="session")
def service_url(docker_ip: str, docker_services: Any, contract_checks: ModuleType) -> str:
    """Base URL of the running service, once ``/readyz`` answers 200."""
    url = f"http://{docker_ip}:{docker_services.port_for(SERVICE, CONTAINER_PORT)}"
    contract_checks.wait_until_ready(url, timeout=60)
    return url
