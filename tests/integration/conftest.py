"""Fixtures for tests that need a real Docker engine (marked ``docker``), and the example
builds that several modules only read (``built_examples``).

Without an engine they skip, saying why; in CI (``NB2PROD_REQUIRE_DOCKER=1``) they fail,
so a broken engine can never turn the Docker tests green by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import build_example

from nb2prod import engine
from nb2prod.errors import DockerUnavailableError


@pytest.fixture(scope="session")
def docker_engine() -> Any:
    """The real engine (``nb2prod.engine.DockerSDKEngine``); skip or fail when none answers."""
    try:
        return engine.connect()
    except DockerUnavailableError as err:
        reason = f"no Docker engine: {err} (run `bash ../shared/ci/docker-env.sh`)"
        if os.environ.get("NB2PROD_REQUIRE_DOCKER") == "1":
            pytest.fail(f"NB2PROD_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def built_examples(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``nb2prod build <example> --no-docker``, once per example a session; tests only read the
    build directory (serve it, score with it), never change it."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            out = tmp_path_factory.mktemp(f"built-{name}") / "build"
            build_example(name, out, "--no-docker")
            built[name] = out
        return built[name]

    return get
