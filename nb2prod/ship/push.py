"""Push the built image to a registry and pin it by digest.

``push_image`` tags the image ``REGISTRY/<name>:<model_version>``, pushes it with
the docker SDK (which reads the user's docker config, so credential helpers such
as the one ``gcloud auth configure-docker`` installs just work), and records the
digest the registry computed in ``DIR/.nb2prod/push.json``. Deployments refer to
the image by that digest only, never by a tag someone could move.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import docker
import docker.errors

from ..builddir import read_json, write_json_atomically
from ..engine import docker_client
from ..errors import ConfigError, PushError
from ..models import PushRecord
from ..naming import image_tag, repository_name

_AUTH_FAILURES = (
    "unauthorized",
    "authentication required",
    "denied",
    "forbidden",
    "no basic auth credentials",
    "403",
    "401",
)
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "dial tcp",
    "timeout exceeded",
    "network is unreachable",
    "server gave http response to https client",
)


def push_image(
    build_dir: Path,
    registry: str,
    progress: Callable[[str], None] | None = None,
    *,
    client: docker.DockerClient | None = None,
) -> PushRecord:
    """Push DIR's image to ``registry`` and record the pushed digest in DIR.

    Raises ConfigError when DIR has no built image or the registry is malformed,
    DockerUnavailableError when no engine answers, and PushError when the image
    is gone from the engine, the registry refuses the credentials or cannot be
    reached, or the push reports no digest.
    """
    build_dir = Path(build_dir)
    image_info = read_json(build_dir / ".nb2prod" / "image.json", "nb2prod build")
    card = read_json(build_dir / "model" / "model_card.json", "python train.py")
    registry = normalize_registry(registry)
    # The build named the image <name>:<model_version>; keep its name under the registry.
    built_tags = [str(tag) for tag in image_info.get("tags") or []]
    name = built_tags[0].rsplit(":", 1)[0].rsplit("/", 1)[-1] if built_tags else str(card["name"])
    repository = f"{registry}/{repository_name(name)}"
    tag = image_tag(str(card["model_version"]))
    say = progress or (lambda _line: None)

    if client is None:
        client = docker_client()
    try:
        image = client.images.get(image_info["image_id"])
    except docker.errors.ImageNotFound as err:
        raise PushError(
            f"image {image_info['image_id'][:19]} from {build_dir / '.nb2prod/image.json'} "
            "is no longer in the local Docker engine",
            hint=f"Rebuild it: nb2prod build, or docker build -t {card['name']} {build_dir}",
        ) from err
    image.tag(repository, tag)
    say(f"Pushing {repository}:{tag}")
    try:
        stream = client.api.push(repository, tag=tag, stream=True, decode=True)
        digest = _follow(stream, say, registry)
    except docker.errors.APIError as err:
        raise _push_error(str(err.explanation or err), registry) from err
    except docker.errors.DockerException as err:
        raise PushError(f"push of {repository}:{tag} failed: {err}") from err

    record = PushRecord(
        registry=registry,
        repository=repository,
        tag=tag,
        digest=digest,
        image=f"{repository}@{digest}",
        image_id=str(image_info["image_id"]),
    )
    write_json_atomically(build_dir / ".nb2prod" / "push.json", asdict(record))
    say(f"Pushed {record.image}")
    return record


def _follow(stream: Iterator[dict[str, Any]], say: Callable[[str], None], registry: str) -> str:
    """Relay the push stream's progress and return the digest from its final aux record."""
    digest = ""
    last_status: dict[str, str] = {}
    for event in stream:
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail") or {}
            raise _push_error(str(detail.get("message") or event.get("error")), registry)
        aux = event.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = str(aux["Digest"])
            continue
        status = str(event.get("status") or "")
        layer = str(event.get("id") or "")
        # Each layer reports "Pushing" many times with a progress bar; relay changes only.
        if status and last_status.get(layer) != status:
            last_status[layer] = status
            say(f"{layer}: {status}" if layer else status)
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise PushError(f"the registry {registry} did not report a digest for the push")
    return digest


def _push_error(message: str, registry: str) -> PushError:
    """A PushError that says what to do about ``message`` from the engine or registry."""
    lowered = message.lower()
    host = registry.split("/", 1)[0]
    if any(marker in lowered for marker in _UNREACHABLE):
        hint = f"Check the registry address {host!r} and your network."
        if "http response to https client" in lowered:
            hint = f'Add "{host}" to "insecure-registries" in the Docker daemon config.'
        return PushError(f"registry {host} is unreachable: {message}", hint=hint)
    if any(marker in lowered for marker in _AUTH_FAILURES):
        if host.endswith("-docker.pkg.dev") or host.endswith("gcr.io"):
            hint = f"Run: gcloud auth login && gcloud auth configure-docker {host}"
        else:
            hint = f"Run: docker login {host}"
        return PushError(f"registry {host} refused the push (authentication): {message}", hint=hint)
    return PushError(f"push to {host} failed: {message}")


def normalize_registry(registry: str) -> str:
    """``https://host/path/`` -> ``host/path``; ConfigError when it cannot name a registry."""
    value = re.sub(r"^[a-z]+://", "", registry.strip()).rstrip("/")
    if not value or not re.fullmatch(r"[A-Za-z0-9.\-]+(:\d+)?(/[a-z0-9._\-/]+)?", value):
        raise ConfigError(
            f"--registry {registry!r} is not a registry address",
            hint="Use e.g. europe-west1-docker.pkg.dev/PROJECT/REPOSITORY or 127.0.0.1:5000",
        )
    return value


def is_pushed(build_dir: Path) -> bool:
    """True when DIR's current image has been pushed (push.json matches image.json)."""
    records = build_dir / ".nb2prod"
    try:
        pushed = json.loads((records / "push.json").read_text())
        built = json.loads((records / "image.json").read_text())
    except (OSError, ValueError):
        return False
    return pushed.get("image_id") in ("", None, built.get("image_id"))
