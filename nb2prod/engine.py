"""The one way nb2prod reaches Docker: the ``Engine`` interface and its docker SDK implementation.

As Cog's ``pkg/docker/command``: ``Engine`` holds the handful of operations the image build,
the smoke test, the push and container training need; ``DockerSDKEngine`` implements it on
docker-py, and ``tests/engine_double.py`` is the one test double. No other module imports
``docker``. ``connect()`` finds the engine one way: ``DOCKER_HOST`` (or the default socket)
must answer a ping, otherwise the error names ``DOCKER_HOST`` and ``--no-docker``.

``build_logged`` runs a build through any ``Engine`` the way both images (serving and
training) need it: every line in a log file, step lines as progress, and a failure as one
ImageBuildError naming the failing step. The three stay in one module, a little over 400
lines, so that the whole Docker seam is one file to read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import DockerUnavailableError, ImageBuildError

Progress = Callable[[str], None]

#: Lines of a build log quoted in a build failure.
TAIL_LINES = 15
#: The base image when a Dockerfile names none (it always does when nb2prod wrote it).
DEFAULT_BASE_IMAGE = "python:3.11-slim"
#: A step line of the classic builder's output.
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


class EngineError(Exception):
    """Raised by an ``Engine`` when Docker refuses or fails an operation.

    Not user-facing: each stage turns it into its own Nb2ProdError with a hint.
    """


@dataclass(frozen=True)
class ImageInfo:
    """What nb2prod reads of a local image."""

    id: str
    size_bytes: int


@dataclass(frozen=True)
class Mount:
    """A host directory bind-mounted into a container."""

    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """How to start a container; every field but ``image`` has Docker's default."""

    image: str
    command: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    user: str = ""
    working_dir: str = ""
    #: Container ports published on 127.0.0.1, each at a free host port the engine picks.
    publish: tuple[int, ...] = ()
    read_only: bool = False
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


class Container(Protocol):
    """A started container."""

    def host_port(self, port: int) -> int:
        """The 127.0.0.1 port ``port`` is published on; 0 when it is not (the container died)."""
        ...

    def is_running(self) -> bool:
        """True while the container's process runs."""
        ...

    def output_lines(self) -> Iterator[str]:
        """Its output (stdout and stderr) line by line, until the container exits."""
        ...

    def logs(self) -> str:
        """Everything the container wrote so far."""
        ...

    def kill(self, signal: str) -> None:
        """Send a signal (e.g. ``SIGTERM``) to the container's PID 1."""
        ...

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` seconds."""
        ...

    def remove(self) -> None:
        """Stop and remove the container, whatever its state."""
        ...


class Engine(Protocol):
    """The operations nb2prod needs from Docker; failures raise EngineError."""

    def build(
        self,
        *,
        context_dir: Path,
        dockerfile: str,
        tag: str,
        labels: Mapping[str, str],
        buildargs: Mapping[str, str],
        pull: bool,
        no_cache: bool,
        on_line: Progress,
    ) -> str:
        """Build and tag an image, passing each output line on; return the image id."""
        ...

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The local image ``ref`` (id, size), or None when the engine has no such image."""
        ...

    def tag(self, image: str, ref: str) -> None:
        """Add the tag ``ref`` (``repo[:tag]``) to a local image."""
        ...

    def push(self, ref: str, on_progress: Progress) -> str:
        """Push ``ref``, passing each layer's status changes on; return the registry's digest.

        The digest is "" when the registry reported none.
        """
        ...

    def start(self, spec: ContainerSpec) -> Container:
        """Start a container detached."""
        ...


def connect(timeout: int = 120) -> DockerSDKEngine:
    """The engine ``DOCKER_HOST`` (or the default socket) points at; it must answer a ping."""
    import docker  # the SDK is only needed when Docker is used

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (the default)"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as err:  # docker-py raises DockerException, requests and OS errors alike
        raise DockerUnavailableError(
            f"No Docker engine answers at DOCKER_HOST={host}: {err}"
        ) from err
    return DockerSDKEngine(client)


class DockerSDKEngine:
    """``Engine`` on the docker SDK (docker-py): classic builder, API >= 1.41."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def build(
        self,
        *,
        context_dir: Path,
        dockerfile: str,
        tag: str,
        labels: Mapping[str, str],
        buildargs: Mapping[str, str],
        pull: bool,
        no_cache: bool,
        on_line: Progress,
    ) -> str:
        """Stream ``docker build``; ``rm``/``forcerm`` leave no intermediate containers."""
        outcome = {"id": "", "error": ""}

        def texts() -> Iterator[str]:
            try:
                for message in self.client.api.build(
                    path=str(context_dir),
                    dockerfile=dockerfile,
                    tag=tag,
                    labels=dict(labels),
                    buildargs=dict(buildargs),
                    pull=pull,
                    nocache=no_cache,
                    rm=True,
                    forcerm=True,
                    decode=True,
                ):
                    if "error" in message:
                        detail = message.get("errorDetail") or {}
                        outcome["error"] = str(detail.get("message") or message["error"])
                    elif isinstance(message.get("aux"), dict) and message["aux"].get("ID"):
                        outcome["id"] = str(message["aux"]["ID"])
                    else:
                        yield str(message.get("stream", ""))
            except Exception as err:  # the engine went away or refused the build (context, API)
                outcome["error"] = f"{type(err).__name__}: {err}"

        built = ""
        for line in _lines(texts()):
            on_line(line)
            if line.startswith("Successfully built "):  # engines that send no aux ID
                built = line.split()[-1]
        if outcome["error"]:
            raise EngineError(outcome["error"])
        if not (outcome["id"] or built):
            raise EngineError("no image was produced")
        return outcome["id"] or built

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The local image ``ref``, or None when there is none."""
        import docker.errors

        try:
            attrs = self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        return ImageInfo(id=str(attrs["Id"]), size_bytes=int(attrs["Size"]))

    def tag(self, image: str, ref: str) -> None:
        """Add the tag ``ref`` to an image."""
        import docker.errors

        repository, tag = split_ref(ref)
        try:
            self.client.api.tag(image, repository, tag)
        except docker.errors.DockerException as err:
            raise EngineError(f"tagging {image} as {ref} failed: {err}") from err

    def push(self, ref: str, on_progress: Progress) -> str:
        """Push ``ref``; each layer reports "Pushing" many times, so only changes are passed on."""
        import docker.errors

        repository, tag = split_ref(ref)
        digest = ""
        last_status: dict[str, str] = {}
        try:
            for event in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in event or "errorDetail" in event:
                    detail = event.get("errorDetail") or {}
                    raise EngineError(str(detail.get("message") or event.get("error")))
                aux = event.get("aux")
                if isinstance(aux, dict) and aux.get("Digest"):
                    digest = str(aux["Digest"])
                    continue
                status, layer = str(event.get("status") or ""), str(event.get("id") or "")
                if status and last_status.get(layer) != status:
                    last_status[layer] = status
                    on_progress(f"{layer}: {status}" if layer else status)
        except docker.errors.APIError as err:
            raise EngineError(str(err.explanation or err)) from err
        except docker.errors.DockerException as err:
            raise EngineError(f"push of {ref} failed: {err}") from err
        return digest

    def start(self, spec: ContainerSpec) -> Container:
        """``docker run -d`` with only the options ``spec`` sets."""
        import docker.errors

        options: dict[str, Any] = {
            "detach": True,
            "environment": dict(spec.environment),
            "labels": dict(spec.labels),
            "read_only": spec.read_only,
            # None as the host port: the engine picks a free one
            "ports": {f"{port}/tcp": ("127.0.0.1", None) for port in spec.publish},
            "volumes": {
                str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                for m in spec.mounts
            },
        }
        for name, value in (
            ("command", list(spec.command)),
            ("user", spec.user),
            ("working_dir", spec.working_dir),
            ("tmpfs", dict(spec.tmpfs)),
        ):
            if value:
                options[name] = value
        try:
            return _SDKContainer(self.client.containers.run(spec.image, **options))
        except docker.errors.DockerException as err:
            raise EngineError(str(getattr(err, "explanation", None) or err)) from err


class _SDKContainer:
    """``Container`` on a docker SDK container object."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def host_port(self, port: int) -> int:
        self.container.reload()
        bindings = (self.container.attrs["NetworkSettings"].get("Ports") or {}).get(f"{port}/tcp")
        return int(bindings[0]["HostPort"]) if bindings else 0

    def is_running(self) -> bool:
        self.container.reload()
        return bool(self.container.status in ("created", "running"))

    def output_lines(self) -> Iterator[str]:
        return _lines(self.container.logs(stream=True, follow=True))

    def logs(self) -> str:
        return bytes(self.container.logs()).decode("utf-8", "replace")

    def kill(self, signal: str) -> None:
        self.container.kill(signal=signal)

    def wait(self, timeout: float | None = None) -> int | None:
        import requests

        if timeout is None:
            return int(self.container.wait()["StatusCode"])
        try:
            return int(self.container.wait(timeout=max(timeout, 0.1))["StatusCode"])
        except requests.exceptions.RequestException:  # read timeout: still running
            return None

    def remove(self) -> None:
        import docker.errors

        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:  # already gone: nothing left to clean up
            pass


def split_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag), tag ``latest`` when absent; registry ports are kept."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def build_logged(
    engine: Engine,
    context_dir: Path,
    *,
    dockerfile: str,
    tag: str,
    labels: Mapping[str, str],
    base_image: str | None,
    log_path: Path,
    progress: Progress | None,
    no_cache: bool = False,
) -> tuple[str, str]:
    """Run one build, logging every line and passing step lines on; return (image id, base).

    The base image is pulled only when the engine does not have it. Raises ImageBuildError
    naming the failing step, with the last lines of the log and where the full log is.
    """
    if not (context_dir / dockerfile).is_file():
        raise ImageBuildError(f"{context_dir / dockerfile} is missing: regenerate the build dir")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = base_image or dockerfile_base(context_dir / dockerfile)
    tail: list[str] = []
    step = ""
    with log_path.open("w") as log:

        def on_line(line: str) -> None:
            nonlocal step
            log.write(line + "\n")
            tail.append(line)
            del tail[:-TAIL_LINES]
            if STEP.match(line):
                step = line
                if progress is not None:
                    progress(line if len(line) <= 160 else line[:157] + "...")
            elif "Using cache" in line and progress is not None:
                progress("  (cached)")

        try:
            image_id = engine.build(
                context_dir=context_dir,
                dockerfile=dockerfile,
                tag=tag,
                labels=labels,
                buildargs={"BASE_IMAGE": base} if base_image else {},
                pull=engine.inspect_image(base) is None,
                no_cache=no_cache,
                on_line=on_line,
            )
        except EngineError as err:
            where = f"at {step}" if step else "before its first step"
            raise ImageBuildError(
                f"docker build of {dockerfile} failed {where}: {err}\n" + "\n".join(tail),
                hint=f"Full log: {log_path}",
            ) from err
    return image_id, base


def dockerfile_base(dockerfile: Path) -> str:
    """The default of ``ARG BASE_IMAGE`` (or the first FROM) in a generated Dockerfile."""
    text = dockerfile.read_text()
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M) or re.search(r"^FROM (\S+)", text, re.M)
    return match.group(1) if match else DEFAULT_BASE_IMAGE


def _lines(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """Whole non-blank lines from a stream of text chunks that split lines anywhere."""
    pending = ""
    for chunk in chunks:
        pending += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        *complete, pending = pending.split("\n")
        for line in complete:
            if line.strip():
                yield line.rstrip("\r")
    if pending.strip():
        yield pending
