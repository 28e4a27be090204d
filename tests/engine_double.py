"""The one test double of ``nb2prod.engine.Engine``: scripted outcomes, every call recorded.

For unit tests of control flow (what a stage asks Docker to do, and what it makes of
the answer). The real engine runs in tests/integration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb2prod.engine import ContainerSpec, EngineError, ImageInfo, Progress


@dataclass
class ScriptedBuild:
    """What one build prints, then the image it produces or the error it stops with."""

    lines: Sequence[str] = ()
    image_id: str = "sha256:feed"
    error: str = ""


@dataclass
class ScriptedPush:
    """What one push reports, then its digest or the error it stops with."""

    statuses: Sequence[str] = ()
    digest: str = ""
    error: str = ""


@dataclass
class FakeContainer:
    """A container whose output, exit code and liveness are scripted."""

    spec: ContainerSpec
    output: Sequence[str] = ()
    exit_code: int = 0
    running: bool = True
    #: The host port a published port maps to (0: it died before it was published).
    port: int = 0
    signals: list[str] = field(default_factory=list)
    removed: bool = False

    def host_port(self, port: int) -> int:
        return self.port if port in self.spec.publish else 0

    def is_running(self) -> bool:
        return self.running and not self.removed

    def output_lines(self) -> Iterator[str]:
        yield from self.output
        self.running = False

    def logs(self) -> str:
        return "\n".join(self.output)

    def kill(self, signal: str) -> None:
        self.signals.append(signal)

    def wait(self, timeout: float | None = None) -> int | None:
        return None if self.running else self.exit_code

    def remove(self) -> None:
        self.removed = True
        self.running = False


@dataclass
class FakeEngine:
    """An ``Engine`` that plays back scripted builds, pushes and containers in order."""

    builds: list[ScriptedBuild] = field(default_factory=list)
    pushes: list[ScriptedPush] = field(default_factory=list)
    containers: list[FakeContainer | EngineError] = field(default_factory=list)
    images: dict[str, ImageInfo] = field(
        default_factory=lambda: {"python:3.11-slim": ImageInfo("sha256:base", 100)}
    )
    #: Every call, as (operation, arguments), in the order they came.
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    started: list[FakeContainer] = field(default_factory=list)

    def calls_to(self, operation: str) -> list[dict[str, Any]]:
        """The arguments of every call to ``operation``."""
        return [arguments for name, arguments in self.calls if name == operation]

    def build(
        self, *, context_dir: Path, dockerfile: str, on_line: Progress, **options: Any
    ) -> str:
        self.calls.append(
            ("build", {"context_dir": context_dir, "dockerfile": dockerfile, **options})
        )
        script = self.builds.pop(0)
        for line in script.lines:
            on_line(line)
        if script.error:
            raise EngineError(script.error)
        self.images[options["tag"]] = self.images[script.image_id] = ImageInfo(
            script.image_id, 1234
        )
        return script.image_id

    def inspect_image(self, ref: str) -> ImageInfo | None:
        self.calls.append(("inspect_image", {"ref": ref}))
        return self.images.get(ref)

    def tag(self, image: str, ref: str) -> None:
        self.calls.append(("tag", {"image": image, "ref": ref}))
        if image not in self.images:
            raise EngineError(f"No such image: {image}")
        self.images[ref] = self.images[image]

    def push(self, ref: str, on_progress: Progress) -> str:
        self.calls.append(("push", {"ref": ref}))
        script = self.pushes.pop(0)
        for status in script.statuses:
            on_progress(status)
        if script.error:
            raise EngineError(script.error)
        return script.digest

    def labelled_containers(self, label: str) -> dict[str, dict[str, str]]:
        self.calls.append(("labelled_containers", {"label": label}))
        return {}

    def remove_container(self, container_id: str) -> None:
        self.calls.append(("remove_container", {"container_id": container_id}))

    def remove_image(self, ref: str) -> bool:
        self.calls.append(("remove_image", {"ref": ref}))
        self.images.pop(ref, None)
        return True

    def start(self, spec: ContainerSpec) -> FakeContainer:
        self.calls.append(("start", {"spec": spec}))
        scripted = self.containers.pop(0)
        if isinstance(scripted, EngineError):
            raise scripted
        scripted.spec = spec
        self.started.append(scripted)
        return scripted


def container(
    output: Sequence[str] = (), exit_code: int = 0, *, running: bool = True, port: int = 0
) -> FakeContainer:
    """A scripted container; ``start`` fills in the spec it was started with."""
    return FakeContainer(ContainerSpec(image=""), output, exit_code, running=running, port=port)
