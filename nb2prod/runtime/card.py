"""The model directory's contract: a typed model card, the golden set, and their files.

``train.py`` writes ``model/`` (state, card, golden set) once, atomically; the
service, the parity check, the smoke test and the deploy stages read it back
through :func:`read_card` and :func:`read_golden`, which validate what they read.
An old or hand-edited build directory therefore fails with one message that
names the file, the field and the fix, never with a KeyError deep in a stage.

The golden set (raw training rows and the notebook's own predictions for them)
is kept beside the card, not in it: the card is served at ``/metadata`` and
shipped in the image, and training rows must be in neither. The Dockerfile's
``.dockerignore`` leaves ``model/golden.json`` out of the image.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .plan import PlanError, ServingPlan

__all__ = [
    "BUILD_RECORD",
    "CARD_FILE",
    "CARD_SCHEMA_VERSION",
    "GOLDEN_FILE",
    "STATE_FILE",
    "CardError",
    "GoldenSet",
    "ModelCard",
    "read_card",
    "read_golden",
    "write_model_dir",
]

#: Bumped whenever a field's meaning changes; a card from another version is refused.
CARD_SCHEMA_VERSION = 2
CARD_FILE = "model_card.json"
STATE_FILE = "state.pkl"
GOLDEN_FILE = "golden.json"
#: The build record render writes beside train.py: what the directory was rendered from
#: (notebook, parameters, serving plan). Its presence marks a directory nb2prod made.
BUILD_RECORD = "build.json"

_REBUILD = "Rebuild it with the nb2prod that serves it: nb2prod build NOTEBOOK -o DIR."


class CardError(ValueError):
    """Raised when a model card or golden set is missing, unreadable or not of this version."""


@dataclass(frozen=True)
class ModelCard:
    """What training found out about the model: identity, provenance, schema and metrics."""

    name: str
    model_version: str  # content-derived: the same notebook, data and pins give the same one
    nb2prod_version: str
    notebook: dict[str, str]  # {"path": relative to the repository (or the file name), "sha256"}
    trained_in: str  # "host" | "container"
    trained_at: str  # ISO 8601, UTC
    training_seconds: float
    python: str
    parameters: dict[str, Any]
    metrics: dict[str, float]  # every finite scalar an evaluate cell binds
    seeds: dict[str, Any]
    libraries: dict[str, str]  # distribution -> version, as pinned in requirements.txt
    data_fingerprint: dict[str, Any]  # sha256, rows, columns of the raw training frame
    input_schema: dict[str, Any]  # {"columns": [...], "ignored_columns": [...]}
    output: dict[str, str]  # {"kind": "label" | "number" | "vector"}
    serving: ServingPlan  # how serving calls the notebook's code, completed by training
    reference_profile: dict[str, Any] = field(default_factory=dict)  # drift reference
    # What training recorded and serving replays: cell, line, expression, runs, value (short).
    recorded: list[dict[str, Any]] = field(default_factory=list)
    # The skew guard's batch-invariance verdict: {"batch_invariant": bool, "rows_checked": n}
    # or {"batch_invariant": false, "reason": ...}. The service joins concurrent requests
    # into one batch only for a build that proved it changes no answer. Empty: not checked.
    batching: dict[str, Any] = field(default_factory=dict)
    # Input columns the prediction log never writes (`# nb2prod: sensitive=...`, --sensitive).
    sensitive_columns: list[str] = field(default_factory=list)
    schema_version: int = CARD_SCHEMA_VERSION

    @property
    def output_kind(self) -> str:
        """``label``, ``number`` or ``vector``: what one prediction is."""
        return str(self.output.get("kind", "label"))

    def to_json(self) -> dict[str, Any]:
        """The card as the JSON object written to ``model_card.json`` (no notebook code)."""
        data = {spec.name: getattr(self, spec.name) for spec in fields(self)}
        data["serving"] = self.serving.to_json(source=False)
        return json.loads(json.dumps(data))  # plain JSON types: no tuples, no dataclasses

    @classmethod
    def from_json(cls, data: Any, source: str = CARD_FILE) -> ModelCard:
        """Validate a card read from JSON; CardError naming the field and the fix otherwise."""
        if not isinstance(data, dict):
            raise CardError(f"{source} does not hold a JSON object. {_REBUILD}")
        version = data.get("schema_version")
        if version != CARD_SCHEMA_VERSION:
            made_by = data.get("nb2prod_version", "an unknown version")
            raise CardError(
                f"{source} is a model card of schema version {version} (written by nb2prod "
                f"{made_by}); this nb2prod reads version {CARD_SCHEMA_VERSION}. {_REBUILD}"
            )
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in data:
                if spec.name in _OPTIONAL_FIELDS:
                    continue
                raise CardError(f"{source} has no `{spec.name}` field. {_REBUILD}")
            values[spec.name] = data[spec.name]
        for name, kind in _FIELD_TYPES.items():
            if not isinstance(values.get(name, kind()), kind):
                raise CardError(
                    f"{source}: `{name}` should be a JSON {_JSON_NAMES[kind]}, "
                    f"not {type(values[name]).__name__}. {_REBUILD}"
                )
        if not isinstance(values["input_schema"].get("columns"), list):
            raise CardError(f"{source}: `input_schema.columns` should be a list. {_REBUILD}")
        try:
            values["serving"] = ServingPlan.from_json(values["serving"])
        except PlanError as err:
            raise CardError(f"{source}: {err}") from err
        return cls(**values)


_OPTIONAL_FIELDS = frozenset({"reference_profile", "recorded", "batching", "sensitive_columns"})
_FIELD_TYPES: dict[str, type] = {
    "name": str,
    "model_version": str,
    "notebook": dict,
    "parameters": dict,
    "metrics": dict,
    "libraries": dict,
    "input_schema": dict,
    "output": dict,
    "reference_profile": dict,
    "recorded": list,
    "batching": dict,
    "sensitive_columns": list,
}
_JSON_NAMES = {str: "string", dict: "object", list: "array"}


@dataclass(frozen=True)
class GoldenSet:
    """Raw training rows and the notebook's own predictions for them (the parity reference)."""

    rows: list[dict[str, Any]]
    predictions: list[Any]

    def to_json(self) -> dict[str, Any]:
        """The golden set as the JSON object written to ``golden.json``."""
        return {"rows": self.rows, "predictions": self.predictions}

    @classmethod
    def from_json(cls, data: Any, source: str = GOLDEN_FILE) -> GoldenSet:
        """Validate a golden set read from JSON; CardError otherwise."""
        rows = data.get("rows") if isinstance(data, dict) else None
        predictions = data.get("predictions") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not isinstance(predictions, list):
            raise CardError(f"{source} should hold `rows` and `predictions` lists. {_REBUILD}")
        if len(rows) != len(predictions) or not all(isinstance(r, dict) for r in rows):
            raise CardError(f"{source}: one prediction per row object is expected. {_REBUILD}")
        return cls(rows=rows, predictions=predictions)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CardError(f"{path} is missing: the model was not trained. {_REBUILD}") from err
    except (OSError, ValueError) as err:
        raise CardError(f"{path} cannot be read: {err}. {_REBUILD}") from err


def read_card(model_dir: Path | str) -> ModelCard:
    """The validated card in ``model_dir`` (cheap: no model state is loaded)."""
    path = Path(model_dir) / CARD_FILE
    return ModelCard.from_json(_read_json(path), str(path))


def read_golden(model_dir: Path | str) -> GoldenSet:
    """The validated golden set beside the card (in the build directory, not in the image)."""
    path = Path(model_dir) / GOLDEN_FILE
    return GoldenSet.from_json(_read_json(path), str(path))


def write_model_dir(model_dir: Path, state: bytes, card: ModelCard, golden: GoldenSet) -> None:
    """Write state, card and golden set into a staging dir, then rename it over ``model_dir``."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-", dir=model_dir.parent))
    try:
        (staging / STATE_FILE).write_bytes(state)
        (staging / CARD_FILE).write_text(json.dumps(card.to_json(), indent=2) + "\n")
        (staging / GOLDEN_FILE).write_text(json.dumps(golden.to_json(), indent=2) + "\n")
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
