"""The Docker engine every Docker stage talks to, found one way.

``DOCKER_HOST`` (or the default socket) must answer a ping; otherwise the one
error users see names ``DOCKER_HOST``, how to fix it, and ``--no-docker``.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import DockerUnavailableError


def docker_client(timeout: int = 120) -> Any:
    """A docker SDK client for the engine that answered a ping."""
    import docker  # the SDK is only needed by the Docker stages

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as err:  # docker-py raises DockerException, requests and OS errors alike
        raise DockerUnavailableError(
            f"No Docker engine answers at DOCKER_HOST={host}: {err}"
        ) from err
    return client
