"""Stage: a rendered build directory with a trained ``model/`` -> a tagged Docker image.

Also trains in a container (``train_in_container``), so training and serving share one
environment: the same base image and the same pinned packages.

Docker sits behind the small ``DockerEngine`` protocol (as Cog's ``pkg/docker/command``):
``DockerSDKEngine`` is the real one, and unit tests pass a double to check control flow.
Records go to ``DIR/.nb2prod/``: ``build.log``, ``image.json``, ``train-build.log``, ``train.log``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from ..engine import docker_client
from ..errors import ImageBuildError, TrainingError
from ..models import ImageResult
from ..naming import repository_name

Progress = Callable[[str], None]

#: Lines of the log quoted in a build or training failure.
TAIL_LINES = 15
DEFAULT_BASE_IMAGE = "python:3.11-slim"
RECORDS = ".nb2prod"
#: What the serving image copies from the build dir (the .dockerignore allows exactly these).
IMAGE_PATHS = ("nb2prod_runtime", "model_code.py", "serving.py", "model")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


class DockerEngine(Protocol):
    """The slice of Docker this stage needs; ``DockerSDKEngine`` implements it."""

    def build(
        self,
        *,
        context_dir: Path,
        dockerfile: str,
        tag: str,
        labels: Mapping[str, str],
        buildargs: Mapping[str, str],
        pull: bool,
        no_cache: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Start a build; yield the engine's decoded JSON messages (stream / aux / error)."""
        ...

    def image_exists(self, ref: str) -> bool:
        """True when ``ref`` is present locally."""
        ...

    def image_info(self, ref: str) -> tuple[str, int]:
        """(image id, size in bytes) of a local image."""
        ...

    def tag_image(self, image_id: str, ref: str) -> None:
        """Add the tag ``ref`` (``repo[:tag]``) to an image."""
        ...

    def run(
        self,
        image: str,
        *,
        command: Sequence[str],
        volumes: Mapping[str, Mapping[str, str]],
        environment: Mapping[str, str],
        user: str,
        working_dir: str,
        on_output: Progress,
    ) -> int:
        """Run a container to completion, passing each output line on; return its exit code.

        The container is removed afterwards, whatever happened.
        """
        ...


class DockerSDKEngine:
    """``DockerEngine`` on the docker SDK (docker-py), classic builder, API >= 1.41."""

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
        no_cache: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Stream ``docker build``; ``rm``/``forcerm`` leave no intermediate containers."""
        return iter(
            self.client.api.build(
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
            )
        )

    def image_exists(self, ref: str) -> bool:
        """True when ``ref`` is present locally."""
        import docker.errors

        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    def image_info(self, ref: str) -> tuple[str, int]:
        """(image id, size in bytes) of a local image."""
        attrs = self.client.api.inspect_image(ref)
        return str(attrs["Id"]), int(attrs["Size"])

    def tag_image(self, image_id: str, ref: str) -> None:
        """Add the tag ``ref`` to an image."""
        repository, tag = split_ref(ref)
        self.client.api.tag(image_id, repository, tag)

    def run(
        self,
        image: str,
        *,
        command: Sequence[str],
        volumes: Mapping[str, Mapping[str, str]],
        environment: Mapping[str, str],
        user: str,
        working_dir: str,
        on_output: Progress,
    ) -> int:
        """Run to completion streaming output line by line; always remove the container."""
        container = self.client.containers.run(
            image,
            command=list(command),
            volumes={host: dict(spec) for host, spec in volumes.items()},
            environment=dict(environment),
            user=user,
            working_dir=working_dir,
            detach=True,
        )
        try:
            for line in _lines(container.logs(stream=True, follow=True)):
                on_output(line)
            return int(container.wait()["StatusCode"])
        finally:
            container.remove(force=True)


def connect(timeout: int = 120) -> DockerSDKEngine:
    """The engine ``DOCKER_HOST`` (or the default socket) points at; it must answer a ping."""
    return DockerSDKEngine(docker_client(timeout))


def split_ref(ref: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag), tag ``latest`` when absent; registry ports are kept."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def read_card(context_dir: Path) -> dict[str, Any]:
    """The model card ``train.py`` wrote; ImageBuildError when there is none yet."""
    path = context_dir / "model" / "model_card.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise ImageBuildError(
            f"{path} is missing or unreadable: the image needs a trained model",
            hint="Train first (nb2prod build does), or run `python train.py` in the build dir.",
        ) from err


def default_tag(context_dir: Path, card: Mapping[str, Any]) -> str:
    """``<notebook-stem>:<model-version>``, the tag every build gets."""
    name = str(card.get("name") or context_dir.resolve().name)
    return f"{repository_name(name)}:{card['model_version']}"


def image_labels(card: Mapping[str, Any]) -> dict[str, str]:
    """Labels known only after training; the Dockerfile's LABEL carries the rest."""
    return {
        "org.opencontainers.image.version": str(card["model_version"]),
        "org.opencontainers.image.created": datetime.now(timezone.utc).isoformat(
            timespec="seconds"
        ),
        "io.nb2prod.model.version": str(card["model_version"]),
        "io.nb2prod.model.trained_in": str(card.get("trained_in", "")),
    }


def build_image(
    context_dir: Path,
    *,
    tags: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    base_image: str | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    engine: DockerEngine | None = None,
    no_cache: bool = False,
) -> ImageResult:
    """Build the serving image from ``context_dir``; tag it ``<stem>:<model-version>`` + ``tags``.

    Raises ImageBuildError (failing step + last log lines; full log in
    ``.nb2prod/build.log``) and DockerUnavailableError when no engine answers.
    """
    context_dir = Path(context_dir).resolve()
    card = read_card(context_dir)
    tag = default_tag(context_dir, card)
    all_labels = {**image_labels(card), **(labels or {})}
    engine = engine or connect()
    _make_world_readable(context_dir, IMAGE_PATHS)
    started = time.monotonic()
    image_id, base = _build(
        engine,
        context_dir,
        dockerfile="Dockerfile",
        tag=tag,
        labels=all_labels,
        base_image=base_image,
        log_path=context_dir / RECORDS / "build.log",
        progress=None if quiet else progress,
        no_cache=no_cache,
    )
    all_tags = [tag, *(t for t in tags if t != tag)]
    for extra in all_tags[1:]:
        engine.tag_image(image_id, extra)
    image_id, size = engine.image_info(image_id)
    result = ImageResult(
        image_id=image_id,
        tags=tuple(all_tags),
        size_bytes=size,
        seconds=time.monotonic() - started,
        log_path=context_dir / RECORDS / "build.log",
    )
    record = {
        "image_id": image_id,
        "tags": list(all_tags),
        "size_bytes": size,
        "base_image": base,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(result.seconds, 3),
        "labels": all_labels,
    }
    (context_dir / RECORDS / "image.json").write_text(json.dumps(record, indent=2) + "\n")
    return result


def train_in_container(
    context_dir: Path,
    notebook_dir: Path,
    *,
    base_image: str | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    engine: DockerEngine | None = None,
) -> Path:
    """Run ``train.py`` in an image built from the same base and pins as the serving image.

    The notebook's directory is mounted read-only as the working directory, so relative
    paths such as ``data/train.csv`` resolve as in Jupyter; the build dir is mounted at
    /build and ``model/`` is written back, owned by the calling user. Returns the model dir.
    Raises TrainingError (last output lines; full output in ``.nb2prod/train.log``),
    ImageBuildError when the training image does not build, DockerUnavailableError.
    """
    context_dir = Path(context_dir).resolve()
    notebook_dir = Path(notebook_dir).resolve()
    engine = engine or connect()
    tag = f"{repository_name(context_dir.name)}-train:latest"
    emit = (lambda line: None) if quiet or progress is None else progress
    _build(
        engine,
        context_dir,
        dockerfile="Dockerfile.train",
        tag=tag,
        labels={"io.nb2prod.role": "training"},
        base_image=base_image,
        log_path=context_dir / RECORDS / "train-build.log",
        progress=None if quiet else progress,
    )
    log_path = context_dir / RECORDS / "train.log"
    tail: list[str] = []
    with log_path.open("w") as log:

        def on_output(line: str) -> None:
            log.write(line + "\n")
            tail.append(line)
            del tail[:-TAIL_LINES]
            emit(line)

        code = engine.run(
            tag,
            command=["python", "/build/train.py"],
            volumes={
                str(context_dir): {"bind": "/build", "mode": "rw"},
                str(notebook_dir): {"bind": "/notebook", "mode": "ro"},
            },
            environment={
                "NB2PROD_MODEL_DIR": "/build/model",
                "NB2PROD_NOTEBOOK_DIR": "/notebook",
                "NB2PROD_TRAINED_IN": "container",
            },
            user=f"{os.getuid()}:{os.getgid()}",
            working_dir="/notebook",
            on_output=on_output,
        )
    model_dir = context_dir / "model"
    if code != 0 or not (model_dir / "model_card.json").is_file():
        what = f"exited with code {code}" if code else "wrote no model/model_card.json"
        raise TrainingError(
            f"train.py {what} in the training container ({tag}):\n" + "\n".join(tail),
            hint=f"Full output: {log_path}. --train-on-host runs it with this Python instead.",
        )
    return model_dir


def cached_steps(log_text: str) -> list[str]:
    """The build steps the engine took from its cache (``---> Using cache``), from a build log."""
    steps, current = [], ""
    for line in log_text.splitlines():
        if _STEP.match(line):
            current = line
        elif "Using cache" in line and current:
            steps.append(current)
    return steps


def _build(
    engine: DockerEngine,
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
    """Run one build, logging every line and passing step lines on; return (image id, base)."""
    if not (context_dir / dockerfile).is_file():
        raise ImageBuildError(f"{context_dir / dockerfile} is missing: regenerate the build dir")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = base_image or _dockerfile_base(context_dir / dockerfile)
    buildargs = {"BASE_IMAGE": base} if base_image else {}
    tail: list[str] = []
    step, error, image_id = "", "", ""
    with log_path.open("w") as log:
        for line in _build_lines(
            engine.build(
                context_dir=context_dir,
                dockerfile=dockerfile,
                tag=tag,
                labels=labels,
                buildargs=buildargs,
                # never pull a base that is already here; fetch it only when it is missing
                pull=not engine.image_exists(base),
                no_cache=no_cache,
            )
        ):
            if line.startswith("ERROR: "):
                error = line.removeprefix("ERROR: ")
            elif line.startswith("ID: "):
                image_id = line.removeprefix("ID: ")
                continue
            log.write(line + "\n")
            tail.append(line)
            del tail[:-TAIL_LINES]
            if _STEP.match(line):
                step = line
                if progress is not None:
                    progress(line if len(line) <= 160 else line[:157] + "...")
            elif "Using cache" in line and progress is not None:
                progress("  (cached)")
            elif line.startswith("Successfully built ") and not image_id:
                image_id = line.split()[-1]
    if error or not image_id:
        where = f"at {step}" if step else "before its first step"
        raise ImageBuildError(
            f"docker build of {dockerfile} failed {where}: {error or 'no image was produced'}\n"
            + "\n".join(tail),
            hint=f"Full log: {log_path}",
        )
    return image_id, base


def _make_world_readable(context_dir: Path, names: Iterable[str]) -> None:
    """Let the image's non-root user read what it copies (COPY keeps modes; mkdtemp gives 0700)."""
    for name in names:
        top = context_dir / name
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            if path.is_symlink() or not path.exists():
                continue
            mode = path.stat().st_mode
            wanted = mode | (0o555 if path.is_dir() else 0o444)
            if wanted != mode:
                path.chmod(wanted & 0o7777)


def _dockerfile_base(dockerfile: Path) -> str:
    """The default of ``ARG BASE_IMAGE`` (or the first FROM) in a generated Dockerfile."""
    text = dockerfile.read_text()
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M) or re.search(r"^FROM (\S+)", text, re.M)
    return match.group(1) if match else DEFAULT_BASE_IMAGE


def _build_lines(messages: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The build's output as whole lines; the image id as ``ID: ...``, errors as ``ERROR: ...``.

    Connection errors mid-stream become an error line, so they are reported as a failed step.
    """

    def texts() -> Iterator[str]:
        try:
            for message in messages:
                if "error" in message:
                    detail = message.get("errorDetail") or {}
                    yield f"\nERROR: {detail.get('message') or message['error']}\n"
                elif isinstance(message.get("aux"), dict) and message["aux"].get("ID"):
                    yield f"\nID: {message['aux']['ID']}\n"
                else:
                    yield str(message.get("stream", ""))
        except Exception as err:  # the engine went away or refused the build (context, API)
            yield f"\nERROR: {type(err).__name__}: {err}\n"

    yield from _lines(texts())


def _lines(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """Whole lines from a stream of text chunks that split lines anywhere."""
    pending = ""
    for chunk in chunks:
        pending += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
        *complete, pending = pending.split("\n")
        for line in complete:
            if line.strip():
                yield line.rstrip("\r")
    if pending.strip():
        yield pending
