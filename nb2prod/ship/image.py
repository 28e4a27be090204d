"""Stage: a rendered build directory with a trained ``model/`` -> a tagged serving image.

Docker is reached through ``nb2prod.engine`` only. Records go to ``DIR/.nb2prod/``:
``build.log`` (every line of the build) and ``image.json`` (what was built).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from ..builddir import BuildDir
from ..engine import STEP, Engine, EngineError, build_logged, connect, discard_image
from ..errors import ImageBuildError
from ..models import ImageRecord, ImageResult
from ..naming import repository_name
from ..runtime.card import CardError, ModelCard
from ..runtime.card import read_card as read_model_card

Progress = Callable[[str], None]

#: What the serving image copies from the build dir (the .dockerignore allows exactly these).
IMAGE_PATHS = ("nb2prod_runtime", "model_code.py", "serving.py", "model")


def read_card(context_dir: Path) -> ModelCard:
    """The model card ``train.py`` wrote; ImageBuildError when there is none yet."""
    path = BuildDir(context_dir).card_path
    try:
        return read_model_card(path.parent)
    except CardError as err:
        raise ImageBuildError(
            f"the image needs a trained model: {err}",
            hint="Train first (nb2prod build does), or run `python train.py` in the build dir.",
        ) from err


def default_tag(context_dir: Path, card: ModelCard) -> str:
    """``<notebook-stem>:<model-version>``, the tag every build gets."""
    name = card.name or context_dir.resolve().name
    return f"{repository_name(name)}:{card.model_version}"


def image_labels(card: ModelCard) -> dict[str, str]:
    """Labels known only after training; the Dockerfile's LABEL carries the rest."""
    return {
        "org.opencontainers.image.version": card.model_version,
        "org.opencontainers.image.created": datetime.now(timezone.utc).isoformat(
            timespec="seconds"
        ),
        "io.nb2prod.model.version": card.model_version,
        "io.nb2prod.model.trained_in": card.trained_in,
    }


def build_image(
    context_dir: Path,
    *,
    tags: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    base_image: str | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    engine: Engine | None = None,
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
    all_tags = [tag, *(t for t in tags if t != tag)]
    # What each name pointed at before: an image a name moves away from is left dangling.
    before = {info.id for name in all_tags if (info := engine.inspect_image(name)) is not None}
    started = time.monotonic()
    log_path = BuildDir(context_dir).record("build.log")
    image_id, base = build_logged(
        engine,
        context_dir,
        dockerfile="Dockerfile",
        tag=tag,
        labels=all_labels,
        base_image=base_image,
        log_path=log_path,
        progress=None if quiet else progress,
        no_cache=no_cache,
    )
    try:
        for extra in all_tags[1:]:
            engine.tag(image_id, extra)
    except EngineError as err:
        raise ImageBuildError(f"the image built but could not be tagged: {err}") from err
    for replaced in before - {image_id}:
        discard_image(engine, replaced)  # removed only if no name is left on it
    info = engine.inspect_image(image_id)
    if info is None:
        raise ImageBuildError(f"the image {image_id} is gone from the engine right after its build")
    result = ImageResult(
        image_id=info.id,
        tags=tuple(all_tags),
        size_bytes=info.size_bytes,
        seconds=time.monotonic() - started,
        log_path=log_path,
    )
    _write_record(context_dir, result, base, all_labels)
    return result


def _write_record(
    context_dir: Path, result: ImageResult, base: str, labels: Mapping[str, str]
) -> None:
    """``.nb2prod/image.json``: what was built, for push and deploy."""
    record = ImageRecord(
        image_id=result.image_id,
        tags=list(result.tags),
        size_bytes=result.size_bytes,
        base_image=base,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=round(result.seconds, 3),
        labels=dict(labels),
    )
    BuildDir(context_dir).write_image(record)


def cached_steps(log_text: str) -> list[str]:
    """The build steps the engine took from its cache (``---> Using cache``), from a build log."""
    steps, current = [], ""
    for line in log_text.splitlines():
        if STEP.match(line):
            current = line
        elif "Using cache" in line and current:
            steps.append(current)
    return steps


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
