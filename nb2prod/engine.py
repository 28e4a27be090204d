"""The one way nb2prod reaches Docker: the ``Engine`` interface and its docker SDK implementation.

As Cog's ``pkg/docker/command``: ``Engine`` holds the handful of operations the image build,
the smoke test, the push and container training need; ``DockerSDKEngine`` implements it on
docker-py, and ``tests/engine_double.py`` is the one test double. No other module imports
``docker``. ``connect()`` finds the engine one way: ``DOCKER_HOST`` (or the default socket)
must answer a ping, otherwise the error names ``DOCKER_HOST`` and ``--no-docker``.

``build_logged`` runs a build through any ``Engine`` the way both images (serving and
training) need it: every line in a log file, step lines as progress, and a failure as one
ImageBuildError naming the failing step. Every container carries ``run_labels()``, so what a
run started is removed when it ends (``remove_run_containers``) or, if it was killed
outright, by the next run (``remove_abandoned_containers``); ``discard_image`` removes an
image a rebuild replaced. They stay in one module, about 500 lines, so that the whole
Docker seam is one file to read.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import DockerUnavailableError, ImageBuildError
from .ownership import is_alive, owner_token

Progress = Callable[[str], None]

#: Lines of a build log quoted in a build failure.
TAIL_LINES = 15
#: The base image when a Dockerfile names none (it always does when nb2prod wrote it).
DEFAULT_BASE_IMAGE = "python:3.11-slim"
#: A step line of the classic builder's output.
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
#: Labels on every container nb2prod starts: this run, and the process that owns it.
RUN_LABEL = "io.nb2prod.run"
OWNER_LABEL = "io.nb2prod.owner"
#: This process's run: its containers are removed when it ends, however it ends.
RUN_ID = uuid.uuid4().hex[:16]


class EngineError(Exception):
    """Raised by an ``Engine`` when Docker refuses or fails an operation.

    Not user-facing: each stage turns it into its own Nb2ProdError with a hint.
    """


@dataclass(frozen=True)
class ImageInfo:
    """What nb2prod reads of a local image."""

    id: str
    size_bytes: int
    #: Its ``repo:tag`` names; none when it is dangling.
    tags: tuple[str, ...] = ()


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
        """Start a container detached; it carries ``run_labels()`` besides its own."""
        ...

    def labelled_containers(self, label: str) -> dict[str, dict[str, str]]:
        """Every container (running or not) with the label ``label``: id -> its labels."""
        ...

    def remove_container(self, container_id: str) -> None:
        """Stop and remove a container; nothing when it is already gone."""
        ...

    def remove_image(self, ref: str) -> bool:
        """Remove an image name (or an untagged image by id); False when Docker refuses.

        Docker removes the image once its last name goes, with the untagged layers under it;
        it refuses while a container uses the image.
        """
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
        return ImageInfo(
            id=str(attrs["Id"]),
            size_bytes=int(attrs["Size"]),
            tags=tuple(attrs.get("RepoTags") or ()),
        )

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
            "labels": {**spec.labels, **run_labels()},
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

    def labelled_containers(self, label: str) -> dict[str, dict[str, str]]:
        """``docker ps -a --filter label=LABEL``."""
        import docker.errors

        try:
            found = self.client.api.containers(all=True, filters={"label": label})
        except docker.errors.DockerException as err:
            raise EngineError(f"listing containers failed: {err}") from err
        return {str(c["Id"]): dict(c.get("Labels") or {}) for c in found}

    def remove_container(self, container_id: str) -> None:
        """``docker rm -f``; a container already gone is not an error."""
        import docker.errors

        try:
            self.client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as err:
            raise EngineError(f"removing container {container_id[:12]} failed: {err}") from err

    def remove_image(self, ref: str) -> bool:
        """``docker rmi REF`` without force, so an image a container uses stays."""
        import docker.errors

        try:
            self.client.api.remove_image(ref)
        except docker.errors.NotFound:
            return True
        except docker.errors.DockerException:
            return False
        return True


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


def run_labels() -> dict[str, str]:
    """The labels that tie a container to this run and to the process that started it."""
    return {RUN_LABEL: RUN_ID, OWNER_LABEL: owner_token()}


def remove_run_containers(engine: Engine) -> int:
    """Remove every container this run started that is still there; how many there were.

    Each stage removes its own container in ``finally``; this catches one whose start was
    interrupted before the stage had a handle on it.
    """
    leftovers = engine.labelled_containers(f"{RUN_LABEL}={RUN_ID}")
    for container_id in leftovers:
        engine.remove_container(container_id)
    return len(leftovers)


def remove_abandoned_containers(engine: Engine) -> int:
    """Remove the containers of nb2prod runs that died without cleaning up (e.g. SIGKILL)."""
    removed = 0
    for container_id, labels in engine.labelled_containers(OWNER_LABEL).items():
        if not is_alive(labels.get(OWNER_LABEL, "")):
            engine.remove_container(container_id)
            removed += 1
    return removed


def discard_image(engine: Engine, image_id: str, names: Iterable[str] = ()) -> bool:
    """Remove an image nb2prod built and no longer uses; True when it is gone.

    Only ``names`` that still point at ``image_id`` are removed (a name moved on to a newer
    image stays), then the image itself if that left it without a name. An image with
    names nb2prod did not give it (the user's own tags), or in use by a container, stays.
    """
    for name in names:
        info = engine.inspect_image(name)
        if info is not None and info.id == image_id:
            engine.remove_image(name)
    info = engine.inspect_image(image_id)
    if info is None:
        return True
    return not info.tags and engine.remove_image(image_id)


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
