"""Fixtures for tests that need a real Docker engine (marked ``docker``).

Without an engine they skip, saying why; in CI (``NB2PROD_REQUIRE_DOCKER=1``) they fail,
so a broken engine can never turn the Docker tests green by skipping them.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

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
