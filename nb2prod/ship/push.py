"""Push the built image to a registry and pin it by digest.

``push_image`` tags the image ``REGISTRY/<name>:<model_version>``, pushes it with
the Docker engine (which reads the user's docker config, so credential helpers such
as the one ``gcloud auth configure-docker`` installs just work), and records the
digest the registry computed in ``DIR/.nb2prod/push.json``. Deployments refer to
the image by that digest only, never by a tag someone could move.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ..builddir import BuildDir
from ..engine import Engine, EngineError, connect
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
    engine: Engine | None = None,
) -> PushRecord:
    """Push DIR's image to ``registry`` and record the pushed digest in DIR.

    Raises ConfigError when DIR has no built image or the registry is malformed,
    DockerUnavailableError when no engine answers, and PushError when the image
    is gone from the engine, the registry refuses the credentials or cannot be
    reached, or the push reports no digest.
    """
    layout = BuildDir(Path(build_dir))
    built = layout.require_image()
    card = layout.card()
    registry = normalize_registry(registry)
    # The build named the image <name>:<model_version>; keep its name under the registry.
    name = built.tags[0].rsplit(":", 1)[0].rsplit("/", 1)[-1]
    ref = f"{registry}/{repository_name(name)}:{image_tag(card.model_version)}"
    say = progress or (lambda _line: None)

    engine = engine or connect()
    image_id = built.image_id
    if engine.inspect_image(image_id) is None:
        raise PushError(
            f"image {image_id[:19]} from {layout.record('image.json')} "
            "is no longer in the local Docker engine",
            hint=f"Rebuild it: nb2prod build, or docker build -t {card.name} {build_dir}",
        )
    say(f"Pushing {ref}")
    try:
        engine.tag(image_id, ref)
        digest = engine.push(ref, say)
    except EngineError as err:
        raise _push_error(str(err), registry) from err
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise PushError(f"the registry {registry} did not report a digest for the push")

    repository, tag = ref.rsplit(":", 1)
    record = PushRecord(
        registry=registry,
        repository=repository,
        tag=tag,
        digest=digest,
        image=f"{repository}@{digest}",
        image_id=image_id,
    )
    layout.write_push(record)
    say(f"Pushed {record.image}")
    return record


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
