"""One model of a build directory: every path in it, and every record a stage leaves there.

A build directory is the contract between stages and between CI jobs: render
writes the code and ``build.json``, training writes ``model/``, the image and
push stages write ``.nb2prod/image.json`` and ``push.json``, deploy writes
``.nb2prod/deploy.json``, ``service.yaml`` and ``k8s/`` (a Cloud Run Job: ``.nb2prod/job.json``
and ``job.yaml``). Stages name those files only through :class:`BuildDir`, and read its
records through it, so each file is spelled once and each question ("is the pushed image
the current one?") is answered once. Records are written atomically: a reader never sees
half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .models import ImageRecord, PushRecord
from .runtime.card import (
    BUILD_RECORD,
    CARD_FILE,
    GOLDEN_FILE,
    STATE_FILE,
    CardError,
    GoldenSet,
    ModelCard,
    read_card,
    read_golden,
)

RECORDS_DIR = ".nb2prod"


@dataclass(frozen=True)
class BuildDir:
    """A build directory on disk (it need not exist yet)."""

    root: Path

    # -- what render writes -----------------------------------------------------------
    @property
    def build_record_path(self) -> Path:
        """``build.json``: notebook, parameters, serving plan; train.py reads it."""
        return self.root / BUILD_RECORD

    @property
    def model_code(self) -> Path:
        """``model_code.py``: the notebook's serving code."""
        return self.root / "model_code.py"

    # -- what training writes ---------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        """``model/``: state, card and golden set, written at once by train.py."""
        return self.root / "model"

    @property
    def card_path(self) -> Path:
        """``model/model_card.json``."""
        return self.model_dir / CARD_FILE

    @property
    def state_path(self) -> Path:
        """``model/state.pkl``: the serving state."""
        return self.model_dir / STATE_FILE

    @property
    def golden_path(self) -> Path:
        """``model/golden.json``: kept out of the image by .dockerignore."""
        return self.model_dir / GOLDEN_FILE

    # -- what later stages write ------------------------------------------------------
    @property
    def records_dir(self) -> Path:
        """``.nb2prod/``: records and logs of the image, smoke, push and deploy stages."""
        return self.root / RECORDS_DIR

    def record(self, name: str) -> Path:
        """``.nb2prod/<name>``, e.g. ``build.log``, ``train.log``, ``smoke.json``."""
        return self.records_dir / name

    @property
    def service_yaml(self) -> Path:
        """``service.yaml``: the Knative service for ``gcloud run services replace``."""
        return self.root / "service.yaml"

    @property
    def k8s_dir(self) -> Path:
        """``k8s/``: the Kubernetes manifests."""
        return self.root / "k8s"

    @property
    def job_yaml(self) -> Path:
        """``job.yaml``: the Cloud Run Job that scores files, for ``gcloud run jobs replace``."""
        return self.root / "job.yaml"

    # -- reading and writing records --------------------------------------------------
    def card(self) -> ModelCard:
        """The validated model card; ConfigError (with the fix) when absent or invalid."""
        try:
            return read_card(self.model_dir)
        except CardError as err:
            raise ConfigError(f"{self.root} has no usable model card: {err}") from err

    def golden(self) -> GoldenSet:
        """The validated golden set; ConfigError when absent or invalid."""
        try:
            return read_golden(self.model_dir)
        except CardError as err:
            raise ConfigError(f"{self.root} has no usable golden set: {err}") from err

    def image(self) -> ImageRecord | None:
        """The image ``nb2prod build`` last built here, or None."""
        data = read_optional(self.record("image.json"))
        return None if data is None else _typed(ImageRecord, data, self.record("image.json"))

    def require_image(self) -> ImageRecord:
        """The built image; ConfigError naming the fix when there is none."""
        image = self.image()
        if image is None or not image.tags:
            raise ConfigError(
                f"{self.root} has no built image", hint="Run nb2prod build (with Docker) first."
            )
        return image

    def write_image(self, record: ImageRecord) -> None:
        """Record the image just built."""
        write_json_atomically(self.record("image.json"), asdict(record))

    def push(self) -> PushRecord | None:
        """The last push from this directory, or None."""
        data = read_optional(self.record("push.json"))
        return None if data is None else _typed(PushRecord, data, self.record("push.json"))

    def write_push(self, record: PushRecord) -> None:
        """Record an image pushed and pinned by digest."""
        write_json_atomically(self.record("push.json"), asdict(record))

    def current_push(self) -> tuple[PushRecord | None, bool]:
        """(the push record, whether the image was rebuilt after it): the one staleness rule.

        A push is current when it names the local image that was pushed and that is
        still the image the last build made (or when the image record is gone, as in a
        CI job that only has the build directory's records).
        """
        pushed, built = self.push(), self.image()
        if pushed is None:
            return None, False
        stale = bool(built and pushed.image_id and pushed.image_id != built.image_id)
        return pushed, stale

    def is_pushed(self) -> bool:
        """True when the current image has been pushed."""
        pushed, stale = self.current_push()
        return pushed is not None and not stale

    def deployment(self) -> dict[str, Any]:
        """``.nb2prod/deploy.json``: where the last deploy went and the traffic before it."""
        return read_json(self.record("deploy.json"), "nb2prod deploy")

    def write_deployment(self, state: dict[str, Any]) -> None:
        """Record a deploy (target, service, revisions, previous traffic)."""
        write_json_atomically(self.record("deploy.json"), state)

    def write_job_deployment(self, state: dict[str, Any]) -> None:
        """Record a Cloud Run Job deploy (``.nb2prod/job.json``) and its last execution."""
        write_json_atomically(self.record("job.json"), state)

    def write_smoke(self, report: dict[str, Any]) -> None:
        """Record the smoke test's checks."""
        write_json_atomically(self.record("smoke.json"), report)


def _typed(kind: Any, data: dict[str, Any], path: Path) -> Any:
    try:
        return kind(**data)
    except TypeError as err:
        raise ConfigError(
            f"{path} does not hold a {kind.__name__} record: {err}",
            hint="It was edited by hand or written by another nb2prod; rebuild the directory.",
        ) from err


def read_json(path: Path, made_by: str) -> dict[str, Any]:
    """The JSON object in ``path``; ConfigError naming what writes it when missing or bad."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path} is missing", hint=f"It is written by {made_by}.") from err
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} cannot be read: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def read_optional(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    return read_json(path, "") if path.is_file() else None


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:  # a full disk, or Ctrl-C: no temporary file left beside path
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON, written atomically."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
